"""The system checks: each id is reported for the setting it names, and only for our
backend's configuration; the test settings are clean."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import django
import pytest
from django.conf import LazySettings
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_sockmail import checks
from django_sockmail.backend import EmailBackend
from django_sockmail.conf import app_installed_error, conf, require_app_installed

OURS = "django_sockmail.backend.EmailBackend"
DJANGOS = "django.core.mail.backends.smtp.EmailBackend"
APPS_WITHOUT_SOCKMAIL = ["django.contrib.auth", "django.contrib.contenttypes"]


class SubclassedBackend(EmailBackend):
    """A project's own subclass: its configuration is checked like ours."""


def token_source(username: str) -> str:
    return "token"


def ids(tags: tuple[str, ...] = ("sockmail",)) -> list[str]:
    return [message.id for message in run_checks(tags=list(tags)) if message.id]


def mailers(**options: Any) -> dict[str, Any]:
    return {"transactional": {"BACKEND": OURS, "OPTIONS": {"host": "smtp.example.org", **options}}}


@pytest.fixture(autouse=True)
def our_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    """tests/settings.py's EMAIL_BACKEND, which the test environment swaps for locmem:
    on Django 5.2, and for the tests of the EMAIL_* settings on 6.1 (marked
    ``email_settings``); the other tests on 6.1 check MAILERS, or override it."""
    if django.VERSION >= (6, 1) and not request.node.get_closest_marker("email_settings"):
        yield
        return
    with override_settings(EMAIL_BACKEND=OURS):
        yield


@pytest.fixture
def django_with_mailers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check as on Django 6.1, where MAILERS replaces the EMAIL_* settings."""
    monkeypatch.setattr(checks, "DJANGO_HAS_MAILERS", True)


def test_the_test_settings_give_no_sockmail_messages() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a deprecation warning for reading EMAIL_*
        assert ids(("sockmail", "security")) == []


@pytest.mark.email_settings
def test_the_email_settings_are_not_read_through_the_settings_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On Django 6.1 each such read warns (RemovedInDjango70Warning), and raises when
    # MAILERS is defined; Django's own code reads the settings object behind the proxy.
    proxy_getattr = LazySettings.__getattr__

    def strict_getattr(self: LazySettings, name: str) -> Any:
        assert not name.startswith("EMAIL_"), f"{name} read through django.conf.settings"
        return proxy_getattr(self, name)

    with override_settings(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True), monkeypatch.context() as patch:
        patch.setattr(LazySettings, "__getattr__", strict_getattr)
        assert ids(("sockmail", "security")) == ["sockmail.E001"]
        require_app_installed()


def test_the_checks_are_registered_under_sockmail_and_security() -> None:
    with override_settings(SOCKMAIL={"DANGEROUSLY_SKIP_TLS_VERIFICATION": True}):
        assert ids(("security",)) == ["sockmail.W002"]
        assert ids(("sockmail",)) == ["sockmail.W002"]


# -- E001, W001, W005 ----------------------------------------------------------------


@pytest.mark.email_settings
@override_settings(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
def test_e001_tls_and_ssl_both_on() -> None:
    [error] = run_checks(tags=["sockmail"])
    assert error.id == "sockmail.E001"
    assert "EMAIL_USE_TLS and EMAIL_USE_SSL" in error.msg and error.hint


@pytest.mark.email_settings
@override_settings(EMAIL_BACKEND=DJANGOS, EMAIL_USE_TLS=True, EMAIL_USE_SSL=True, EMAIL_PORT=465)
def test_another_backends_settings_are_not_ours_to_check() -> None:
    assert ids() == []


@pytest.mark.email_settings
@override_settings(
    EMAIL_BACKEND="tests.test_checks.SubclassedBackend", EMAIL_USE_TLS=True, EMAIL_USE_SSL=True
)
def test_a_subclass_of_our_backend_is_checked() -> None:
    assert ids() == ["sockmail.E001"]


@pytest.mark.email_settings
@override_settings(EMAIL_BACKEND="no.such.Backend", EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
def test_a_backend_that_does_not_import_is_not_ours() -> None:
    assert ids() == []


def test_e001_in_a_mailers_entry(django_with_mailers: None) -> None:
    with override_settings(MAILERS=mailers(use_tls=True, use_ssl=True)):
        [error] = run_checks(tags=["sockmail"])
    assert error.id == "sockmail.E001"
    assert "MAILERS['transactional']['OPTIONS']['use_tls']" in error.msg


def test_mailers_entries_of_other_backends_and_the_email_settings_are_not_read(
    django_with_mailers: None,
) -> None:
    both = {"host": "h", "use_tls": True, "use_ssl": True}
    entries = {"default": {"BACKEND": DJANGOS, "OPTIONS": both}}
    # With MAILERS defined, Django 6.1 ignores (and hides) the EMAIL_* settings.
    with override_settings(MAILERS=entries, EMAIL_USE_TLS=True, EMAIL_USE_SSL=True):
        assert ids() == []


def test_before_django_6_1_mailers_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "DJANGO_HAS_MAILERS", False)
    with override_settings(MAILERS=mailers(use_tls=True, use_ssl=True)):
        assert ids() == []


@pytest.mark.email_settings
@pytest.mark.parametrize("use_tls", [False, True])
@override_settings(EMAIL_PORT=465)
def test_w001_port_465_without_ssl(use_tls: bool) -> None:
    with override_settings(EMAIL_USE_TLS=use_tls):
        assert ids() == ["sockmail.W001"]
    with override_settings(EMAIL_USE_SSL=True):
        assert ids() == []


def test_w001_in_a_mailers_entry_with_the_port_as_a_string(django_with_mailers: None) -> None:
    with override_settings(MAILERS=mailers(port="465", use_tls=True)):
        assert ids() == ["sockmail.W001"]
    with override_settings(MAILERS=mailers(use_ssl=True)):  # the backend picks 465
        assert ids() == []


@pytest.mark.email_settings
@pytest.mark.parametrize("port", [25, 587])
def test_w005_ssl_on_a_starttls_port(port: int) -> None:
    with override_settings(EMAIL_PORT=port, EMAIL_USE_SSL=True):
        assert ids() == ["sockmail.W005"]


# -- W002, W003 ----------------------------------------------------------------------


@override_settings(SOCKMAIL={"DANGEROUSLY_SKIP_TLS_VERIFICATION": True})
def test_w002_certificate_verification_off() -> None:
    [warning] = run_checks(tags=["security"])
    assert warning.id == "sockmail.W002" and "SSL_CAFILE" in str(warning.hint)


@pytest.mark.email_settings
@override_settings(EMAIL_HOST="smtp.example.org", SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": True})
def test_w003_cleartext_auth_to_a_remote_host() -> None:
    [warning] = run_checks(tags=["security"])
    assert warning.id == "sockmail.W003" and "'smtp.example.org'" in warning.msg
    with override_settings(SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": True, "OPPORTUNISTIC_TLS": True}):
        assert ids() == ["sockmail.W003"]  # STARTTLS if offered can be stripped
    with override_settings(EMAIL_USE_TLS=True):
        assert ids() == []
    with override_settings(EMAIL_USE_SSL=True, EMAIL_PORT=465):
        assert ids() == []


@pytest.mark.email_settings
@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "mail.localhost", "127.0.0.1", "127.1.2.3", "::1"]
)
def test_w003_not_for_loopback(host: str) -> None:
    with override_settings(EMAIL_HOST=host, SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": True}):
        assert ids() == []


def test_w003_in_a_mailers_entry(django_with_mailers: None) -> None:
    with override_settings(MAILERS=mailers(), SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": True}):
        [warning] = run_checks(tags=["sockmail"])
    assert warning.id == "sockmail.W003"
    assert "MAILERS['transactional']['OPTIONS']['host']" in warning.msg


# -- E002 ----------------------------------------------------------------------------


@pytest.mark.email_settings
@override_settings(INSTALLED_APPS=APPS_WITHOUT_SOCKMAIL)
def test_e002_backend_without_the_app() -> None:
    [error] = checks.check_app_installed()
    assert error.id == "sockmail.E002" and "INSTALLED_APPS" in error.msg
    with pytest.raises(ImproperlyConfigured, match=r"sockmail\.E002"):
        require_app_installed()


@pytest.mark.email_settings
@override_settings(INSTALLED_APPS=APPS_WITHOUT_SOCKMAIL)
def test_e002_building_the_backend_without_the_app_is_an_error() -> None:
    from django.core.mail import get_connection

    with pytest.raises(ImproperlyConfigured, match=r"sockmail\.E002"):
        get_connection("django_sockmail.backend.EmailBackend")
    with override_settings(SOCKMAIL={"RECORD_SESSIONS": False}):
        get_connection("django_sockmail.backend.EmailBackend")  # no audit log: no tables


@override_settings(INSTALLED_APPS=APPS_WITHOUT_SOCKMAIL, SOCKMAIL={"RECORD_SESSIONS": False})
def test_e002_not_without_recording() -> None:
    assert checks.check_app_installed() == []
    assert app_installed_error() is None
    require_app_installed()


@pytest.mark.email_settings
@override_settings(INSTALLED_APPS=APPS_WITHOUT_SOCKMAIL, EMAIL_BACKEND=DJANGOS)
def test_e002_not_when_our_backend_is_not_configured() -> None:
    assert checks.check_app_installed() == []


def test_e002_not_with_the_app_installed() -> None:
    assert checks.check_app_installed() == []
    require_app_installed()


# -- the SOCKMAIL dict: W004, E003 to E009 -------------------------------------------


@override_settings(SOCKMAIL={"DATABSE": "audit"})
def test_w004_unknown_key_with_a_suggestion() -> None:
    [warning] = run_checks(tags=["sockmail"])
    assert warning.id == "sockmail.W004"
    assert "'DATABSE'" in warning.msg and "Did you mean 'DATABASE'?" in str(warning.hint)


@override_settings(SOCKMAIL={"STORE_CONTENT": "all"})
def test_e003_store_content_not_a_mode() -> None:
    [error] = run_checks(tags=["sockmail"])
    assert error.id == "sockmail.E003" and "'headers'" in str(error.hint)


def test_e004_database_not_in_databases() -> None:
    with override_settings(SOCKMAIL={"DATABASE": "audit_log"}):
        assert ids() == ["sockmail.E004"]
    with override_settings(SOCKMAIL={"DATABASE": "audit"}):  # tests/settings.py has it
        assert ids() == []


def test_e005_unknown_auth_mechanism() -> None:
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "DIGEST-MD5"}):
        assert ids() == ["sockmail.E005"]
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "cram-md5"}):
        assert ids() == []


@pytest.mark.parametrize("value", ["no_such_module.token", "tests.test_checks.OURS", 42])
def test_e006_oauth2_token_not_a_callable(value: object) -> None:
    with override_settings(SOCKMAIL={"OAUTH2_TOKEN": value}):
        assert ids() == ["sockmail.E006"]


@pytest.mark.parametrize("value", ["tests.test_checks.token_source", token_source])
def test_oauth2_token_as_a_callable_or_its_path(value: object) -> None:
    with override_settings(SOCKMAIL={"OAUTH2_TOKEN": value, "AUTH_MECHANISM": "XOAUTH2"}):
        assert ids() == []


def test_e007_xoauth2_without_a_token_and_a_token_with_a_password_mechanism() -> None:
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "XOAUTH2"}):
        assert ids() == ["sockmail.E007"]
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "PLAIN", "OAUTH2_TOKEN": token_source}):
        assert ids() == ["sockmail.E007"]


@override_settings(SOCKMAIL=[("RECORD_SESSIONS", False)])
def test_e008_sockmail_not_a_dict() -> None:
    assert ids() == ["sockmail.E008"]


@pytest.mark.parametrize(
    "sockmail",
    [
        {"RECORD_SESSIONS": "False"},  # a non-empty string is true
        {"PIPELINING": None},
        {"CONTENT_MAX_BYTES": -1},
        {"CONTENT_MAX_BYTES": "a lot"},
        {"RETENTION": 0},
        {"RETENTION": "30d"},
        {"TIMEOUTS": {"conect": 5}},
        {"TIMEOUTS": {"connect": 0}},
        {"TIMEOUTS": 30},
        {"WRITE_EVERY": -1},
    ],
)
def test_e009_a_value_its_key_does_not_take(sockmail: dict[str, Any]) -> None:
    with override_settings(SOCKMAIL=sockmail):
        assert ids() == ["sockmail.E009"]


@override_settings(
    SOCKMAIL={
        "RECORD_SESSIONS": True,
        "PIPELINING": False,
        "CHUNKING": False,
        "CONTENT_MAX_BYTES": 0,
        "RETENTION": timedelta(hours=12),
        "TIMEOUTS": {"connect": 5, "deadline": None, "data": 60.5},
        "STORE_CONTENT": "full",
        "DATABASE": None,
    }
)
def test_valid_values_give_no_messages() -> None:
    assert ids() == []


# -- switches fail closed ---------------------------------------------------------------


SWITCHES = (
    "RECORD_SESSIONS",
    "DANGEROUSLY_SKIP_TLS_VERIFICATION",
    "OPPORTUNISTIC_TLS",
    "ALLOW_CLEARTEXT_AUTH",
    "PIPELINING",
    "CHUNKING",
)


def test_the_switches_are_conf_s_booleans() -> None:
    from django_sockmail import conf as conf_module

    assert conf_module.SWITCHES == SWITCHES


@pytest.mark.email_settings
@pytest.mark.parametrize("key", SWITCHES)
@pytest.mark.parametrize("value", ["False", "0", "", 0, 1, None])
def test_a_switch_that_is_not_a_bool_fails_closed_everywhere(key: str, value: object) -> None:
    # An environment variable gives "False", which bool() reads as true: for
    # DANGEROUSLY_SKIP_TLS_VERIFICATION or ALLOW_CLEARTEXT_AUTH, the opposite of what
    # was meant. Gunicorn, uwsgi and Celery workers never run the checks, so the
    # backend refuses to be built, and the setting refuses to be read.
    with override_settings(SOCKMAIL={key: value}):
        assert ids(("sockmail", "security")) == ["sockmail.E009"]
        [error] = run_checks(tags=["sockmail"])
        assert repr(key) in error.msg and repr(value) in error.msg
        with pytest.raises(ImproperlyConfigured, match=rf"SOCKMAIL\['{key}'\]"):
            EmailBackend(host="127.0.0.1", port=25)
        with pytest.raises(ImproperlyConfigured, match=rf"SOCKMAIL\['{key}'\]"):
            getattr(conf, key)


@pytest.mark.email_settings
@override_settings(EMAIL_HOST="smtp.example.org")
def test_a_security_switch_that_is_not_a_bool_is_an_error_not_a_warning() -> None:
    # W002 and W003 would say "is True" of "False": E009 says what is wrong instead.
    for key in ("DANGEROUSLY_SKIP_TLS_VERIFICATION", "ALLOW_CLEARTEXT_AUTH"):
        with override_settings(SOCKMAIL={key: "False"}):
            assert ids(("sockmail", "security")) == ["sockmail.E009"]
        with override_settings(SOCKMAIL={key: True}):
            assert ids(("security",)) in (["sockmail.W002"], ["sockmail.W003"])


@pytest.mark.email_settings
@pytest.mark.parametrize("key", SWITCHES)
@pytest.mark.parametrize("value", [True, False])
def test_a_switch_that_is_a_bool_builds(key: str, value: bool) -> None:
    with override_settings(SOCKMAIL={key: value}):
        assert "sockmail.E009" not in ids()
        EmailBackend(host="127.0.0.1", port=25)
        assert getattr(conf, key) is value


# -- E010: the port and the timeout -------------------------------------------------------


@pytest.mark.email_settings
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EMAIL_PORT", "abc"),
        ("EMAIL_PORT", 65536 + 25),  # the socket would reach port 25, recorded as 65561
        ("EMAIL_PORT", -25),
        ("EMAIL_PORT", 0),
        ("EMAIL_PORT", 25.0),
        ("EMAIL_PORT", True),
        ("EMAIL_PORT", " 25"),
        ("EMAIL_TIMEOUT", "5"),
        ("EMAIL_TIMEOUT", 0),
        ("EMAIL_TIMEOUT", -1),
        ("EMAIL_TIMEOUT", True),
        ("EMAIL_TIMEOUT", float("nan")),
        ("EMAIL_TIMEOUT", float("inf")),
    ],
)
def test_e010_a_port_or_timeout_the_backend_refuses(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        [error] = run_checks(tags=["sockmail"])
        assert error.id == "sockmail.E010"
        assert setting in error.msg and repr(value) in error.msg and setting in str(error.hint)
        with pytest.raises(ImproperlyConfigured, match=setting):
            EmailBackend()


@pytest.mark.email_settings
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EMAIL_PORT", 1),
        ("EMAIL_PORT", 65535),
        ("EMAIL_PORT", "587"),  # from an environment variable: Django's backend takes it
        ("EMAIL_TIMEOUT", None),
        ("EMAIL_TIMEOUT", 5),
        ("EMAIL_TIMEOUT", 0.5),
    ],
)
def test_a_port_or_timeout_the_backend_takes(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        assert ids() == []
        backend = EmailBackend()
    if setting == "EMAIL_PORT":
        assert backend.port == int(str(value))  # an int, as the socket and the log take it
    else:
        assert backend.timeout == value


@pytest.mark.parametrize(("option", "value"), [("port", "abc"), ("port", 70000), ("timeout", "5")])
def test_e010_in_a_mailers_entry(django_with_mailers: None, option: str, value: object) -> None:
    with override_settings(MAILERS=mailers(**{option: value})):
        [error] = run_checks(tags=["sockmail"])
    assert error.id == "sockmail.E010"
    assert f"MAILERS['transactional']['OPTIONS'][{option!r}]" in error.msg


@pytest.mark.email_settings
def test_e010_not_for_another_backends_settings() -> None:
    with override_settings(EMAIL_BACKEND=DJANGOS, EMAIL_PORT="abc", EMAIL_TIMEOUT="5"):
        assert ids() == []
