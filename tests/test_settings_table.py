"""The settings defined once (conf.py's tables): what the system checks refuse, ``conf``
refuses to read, with the same words; docs/settings.md says what the tables say."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_sockmail.conf import SETTINGS, conf
from django_sockmail.settings_reference import COMMAND, markdown

ROOT = Path(__file__).resolve().parent.parent

# A value each key does not take, and the id the checks report it under.
REFUSED = {
    "RECORD_SESSIONS": ("False", "sockmail.E009"),
    "DANGEROUSLY_SKIP_TLS_VERIFICATION": (1, "sockmail.E009"),
    "OPPORTUNISTIC_TLS": ("yes", "sockmail.E009"),
    "ALLOW_CLEARTEXT_AUTH": (None, "sockmail.E009"),
    "AUTH_MECHANISM": ("DIGEST-MD5", "sockmail.E005"),
    "OAUTH2_TOKEN": ("no_such_module.token", "sockmail.E006"),
    "PIPELINING": ("True", "sockmail.E009"),
    "CHUNKING": (0, "sockmail.E009"),
    "TIMEOUTS": ({"connect": -1}, "sockmail.E009"),
    "WRITE_EVERY": (-1, "sockmail.E009"),
    "STORE_CONTENT": ("all", "sockmail.E003"),
    "CONTENT_MAX_BYTES": (-1, "sockmail.E009"),
    "RETENTION": (0, "sockmail.E009"),
}
# Keys that take anything: a text is kept as text, an empty one is the default.
TAKE_ANYTHING = {"LOCAL_HOSTNAME", "SSL_CAFILE", "DATABASE"}


def test_every_key_is_in_the_table_of_refused_values_or_takes_anything() -> None:
    assert set(SETTINGS) == set(REFUSED) | TAKE_ANYTHING


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_what_the_checks_refuse_conf_refuses_to_read(key: str) -> None:
    value, check_id = REFUSED[key]
    with override_settings(SOCKMAIL={key: value}):
        [message] = run_checks(tags=["sockmail"])
        with pytest.raises(ImproperlyConfigured) as refused:
            getattr(conf, key)
    assert message.id == check_id
    assert f"SOCKMAIL[{key!r}]" in str(refused.value)
    if check_id in ("sockmail.E006", "sockmail.E009"):  # in the same words
        assert message.msg.rstrip(".") == str(refused.value)


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_each_default_is_a_value_its_key_takes(key: str) -> None:
    setting = SETTINGS[key]
    with override_settings(SOCKMAIL={key: setting.default}):
        assert run_checks(tags=["sockmail"]) == []
        assert getattr(conf, key) == setting.validate(setting.default)
    with override_settings(SOCKMAIL={}):
        assert getattr(conf, key) == setting.validate(setting.default)


def test_a_sockmail_setting_that_is_not_a_dict_is_refused_by_name() -> None:
    with (
        override_settings(SOCKMAIL=[("RECORD_SESSIONS", False)]),
        pytest.raises(ImproperlyConfigured, match="SOCKMAIL must be a dict"),
    ):
        conf.RECORD_SESSIONS  # noqa: B018


def test_the_settings_reference_says_what_the_tables_say() -> None:
    written = (ROOT / "docs" / "settings.md").read_text()
    assert written == markdown(), f"docs/settings.md is out of date: run {COMMAND}"
    for key in SETTINGS:
        assert f"### `{key}`" in written
