"""System checks (``manage.py check``) for mail settings that contradict each other or
weaken the session, so they fail at start-up instead of at the first message.

Registered by :meth:`django_sockmail.apps.SockmailConfig.ready` under the tag
``sockmail`` (and ``security`` for sockmail.W002 and sockmail.W003):

=============== ==============================================================
sockmail.E001   TLS and SSL both on (EMAIL_USE_TLS and EMAIL_USE_SSL, or a
                MAILERS entry's ``use_tls`` and ``use_ssl`` OPTIONS)
sockmail.E002   our backend, with recording on, but the app is not installed
sockmail.E003   SOCKMAIL["STORE_CONTENT"] is not a content mode
sockmail.E004   SOCKMAIL["DATABASE"] is not an alias in DATABASES
sockmail.E005   SOCKMAIL["AUTH_MECHANISM"] is not a mechanism we speak
sockmail.E006   SOCKMAIL["OAUTH2_TOKEN"] cannot be imported or is not callable
sockmail.E007   AUTH_MECHANISM and OAUTH2_TOKEN disagree
sockmail.E008   SOCKMAIL is not a dict
sockmail.E009   a SOCKMAIL value its key does not take (a switch that is not
                True or False, a negative size, a bad RETENTION, TIMEOUTS or WRITE_EVERY)
sockmail.E010   EMAIL_PORT or EMAIL_TIMEOUT (or a MAILERS entry's ``port`` or
                ``timeout`` OPTIONS) is not a port from 1 to 65535, or not a number of
                seconds above 0 (or None)
sockmail.W001   port 465 (implicit TLS) without SSL
sockmail.W002   certificate verification disabled
sockmail.W003   cleartext AUTH allowed to a server not on loopback, without TLS
sockmail.W004   an unknown SOCKMAIL key
sockmail.W005   SSL (implicit TLS) on port 25 or 587, where servers expect STARTTLS
=============== ==============================================================

Only our backend's configuration is looked at: the EMAIL_* settings when
EMAIL_BACKEND is :class:`django_sockmail.backend.EmailBackend` (or a subclass), and on
Django 6.1 each MAILERS entry whose BACKEND is.

Each SOCKMAIL value is checked by its key's validator in conf's table (E003, E005,
E006, E009): the one ``conf`` reads it through, so a value reported here is refused
there too, as ImproperlyConfigured. The errors that would make a session go wrong
(E001, E002, E009's switches, E010) are raised by the backend when it is built:
gunicorn, uwsgi and Celery workers never run the checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .backend import EmailBackend
from .conf import (
    DJANGO_HAS_MAILERS,
    MAIL_OPTIONS,
    SETTINGS,
    InvalidSetting,
    Setting,
    app_installed_error,
    configured_mailers,
    port_number,
)
from .smtp.client import default_port, is_loopback
from .smtp.protocol import MECHANISMS
from .transcript import CONTENT_MODES

TAG = "sockmail"
BACKEND = "django_sockmail.backend.EmailBackend"

_IMPLICIT_TLS_PORT = default_port("ssl")  # RFC 8314
_STARTTLS_PORTS = (25, 587)  # relay and submission: the server speaks first, in cleartext


def register_checks() -> None:
    """Register every check; called once from ``SockmailConfig.ready()``."""
    checks.register(check_app_installed, TAG)
    checks.register(check_tls_settings, TAG)
    checks.register(check_connection_settings, TAG)
    checks.register(check_tls_verification, TAG, checks.Tags.security)
    checks.register(check_cleartext_auth, TAG, checks.Tags.security)
    checks.register(check_sockmail_setting, TAG)


# -- reading the settings ------------------------------------------------------------


def _sockmail() -> Mapping[str, Any]:
    """SOCKMAIL, or nothing when it is not a mapping (sockmail.E008 says so)."""
    value = getattr(settings, "SOCKMAIL", {})
    return value if isinstance(value, Mapping) else {}


def _is_ours(path: object) -> bool:
    """Whether a BACKEND / EMAIL_BACKEND dotted path names our backend or a subclass."""
    if path == BACKEND:
        return True
    if not isinstance(path, str) or not path:
        return False
    try:
        backend = import_string(path)
    except Exception:  # any backend that does not import is not ours (and not ours to report)
        return False
    return isinstance(backend, type) and issubclass(backend, EmailBackend)


def _valid_port(value: object) -> int | None:
    """``value`` as the backend reads a port, None when it refuses it (E010)."""
    try:
        return port_number(value, "port")
    except ImproperlyConfigured:
        return None


@dataclass(frozen=True)
class Mailer:
    """One configuration of our backend: the EMAIL_* settings, or a MAILERS entry."""

    alias: str | None  # None: the EMAIL_* settings
    options: Mapping[str, Any]  # as conf.completed_options() gives them

    @property
    def host(self) -> str:
        return str(self.options["host"] or "")

    @property
    def port(self) -> int | None:
        """None when it is not a port (sockmail.E010 says so)."""
        return _valid_port(self.options["port"])

    @property
    def use_tls(self) -> bool:
        return bool(self.options["use_tls"])

    @property
    def use_ssl(self) -> bool:
        return bool(self.options["use_ssl"])

    def name(self, option: str) -> str:
        """How the settings spell ``option`` ("use_tls", "port", ...) here."""
        if self.alias is None:
            return MAIL_OPTIONS[option].setting
        return f"MAILERS[{self.alias!r}]['OPTIONS'][{option!r}]"


def our_mailers() -> list[Mailer]:
    """Each configuration our backend is used with, as the backend will read it."""
    return [
        Mailer(alias, options)
        for alias, backend, options in configured_mailers(DJANGO_HAS_MAILERS)
        if _is_ours(backend)
    ]


def _is_loopback_host(host: str) -> bool:
    """Whether the host is this machine: a loopback address, or localhost (RFC 6761)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


# -- sockmail.E002: the app (conf.app_installed_error) ------------------------------


def check_app_installed(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """sockmail.E002, when our backend is configured."""
    if not our_mailers():
        return []
    error = app_installed_error()
    return [] if error is None else [error]


# -- sockmail.E001, W001, W005: TLS against SSL and the port -------------------------


def check_tls_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for mailer in our_mailers():
        use_tls, use_ssl, port = mailer.name("use_tls"), mailer.name("use_ssl"), mailer.name("port")
        if mailer.use_tls and mailer.use_ssl:
            messages.append(
                checks.Error(
                    f"{use_tls} and {use_ssl} are both on. They are mutually exclusive: "
                    "use_tls is STARTTLS (a cleartext connection upgraded to TLS), "
                    "use_ssl is TLS from the first byte (implicit TLS).",
                    hint=(
                        f"Turn one off: {use_ssl} for port 465, {use_tls} for port 587 "
                        "(ask your provider which one its server offers)."
                    ),
                    id="sockmail.E001",
                )
            )
        elif mailer.port == _IMPLICIT_TLS_PORT and not mailer.use_ssl:
            how = "STARTTLS" if mailer.use_tls else "cleartext SMTP"
            messages.append(
                checks.Warning(
                    f"{port} is 465, the implicit TLS port, but {use_ssl} is off: the "
                    f"backend would speak {how} to a server that waits for a TLS "
                    "handshake, and the session would hang until the timeout or fail.",
                    hint=(
                        f"Set {use_ssl} = True"
                        + (f" and {use_tls} = False" if mailer.use_tls else "")
                        + f", or use port 587 with {use_tls} = True."
                    ),
                    id="sockmail.W001",
                )
            )
        elif mailer.port in _STARTTLS_PORTS and mailer.use_ssl:
            messages.append(
                checks.Warning(
                    f"{use_ssl} is on with {port} {mailer.port}, where servers greet in "
                    "cleartext and offer STARTTLS: the TLS handshake would fail.",
                    hint=(
                        f"Use port 465 with {use_ssl} = True, or keep port "
                        f"{mailer.port} and set {use_tls} = True and {use_ssl} = False."
                    ),
                    id="sockmail.W005",
                )
            )
    return messages


# -- sockmail.E010: the port and the timeout ----------------------------------------


def check_connection_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """sockmail.E010: a port or a timeout the backend refuses when it is built."""
    messages: list[checks.CheckMessage] = []
    for mailer in our_mailers():
        for name, option in MAIL_OPTIONS.items():
            if option.validator is None:
                continue
            try:
                option.validator(mailer.options[name], mailer.name(name))
            except ImproperlyConfigured as error:
                messages.append(
                    checks.Error(
                        f"{error}: the backend refuses to be built with it.",
                        hint=f"Set {mailer.name(name)} to {option.takes}.",
                        id="sockmail.E010",
                    )
                )
    return messages


# -- sockmail.W002, W003: security ---------------------------------------------------


def check_tls_verification(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    key = SETTINGS["DANGEROUSLY_SKIP_TLS_VERIFICATION"].name
    # A value that is not a bool is sockmail.E009 (and refused by the backend).
    if _sockmail().get("DANGEROUSLY_SKIP_TLS_VERIFICATION", False) is not True:
        return []
    return [
        checks.Warning(
            f"{key} is True: the server's certificate and host name are not verified, "
            "so anyone on the network path can read the mail and the credentials.",
            hint=(
                f"Remove {key} outside tests. For a server with a private CA, set "
                "SOCKMAIL['SSL_CAFILE'] to its CA bundle instead."
            ),
            id="sockmail.W002",
        )
    ]


def check_cleartext_auth(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    key = SETTINGS["ALLOW_CLEARTEXT_AUTH"].name
    if _sockmail().get("ALLOW_CLEARTEXT_AUTH", False) is not True:  # else E009
        return []
    messages: list[checks.CheckMessage] = []
    for mailer in our_mailers():
        if mailer.use_tls or mailer.use_ssl or _is_loopback_host(mailer.host):
            continue
        messages.append(
            checks.Warning(
                f"{key} is True and {mailer.name('host')} {mailer.host!r} is not on "
                f"loopback, with neither {mailer.name('use_tls')} nor "
                f"{mailer.name('use_ssl')} on: the username and password would cross the "
                "network readable by anyone on the path.",
                hint=(
                    f"Set {mailer.name('use_tls')} = True (or {mailer.name('use_ssl')}), "
                    f"or remove {key}. SOCKMAIL['OPPORTUNISTIC_TLS'] does not help: an "
                    "attacker can strip STARTTLS from the server's EHLO reply."
                ),
                id="sockmail.W003",
            )
        )
    return messages


# -- sockmail.E003 to E009, W004: the SOCKMAIL dict ----------------------------------


def check_sockmail_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    value = getattr(settings, "SOCKMAIL", {})
    if not isinstance(value, Mapping):
        return [
            checks.Error(
                f"SOCKMAIL must be a dict, not {type(value).__name__}.",
                hint="Write SOCKMAIL = {'KEY': value, ...}; see the README for the keys.",
                id="sockmail.E008",
            )
        ]
    return [
        *_unknown_keys(value),
        *_values(value),
        *_database(value),
        *_auth_pairing(value),
    ]


def _unknown_keys(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for key in sockmail:
        if key in SETTINGS:
            continue
        close = difflib.get_close_matches(str(key).upper(), SETTINGS, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        messages.append(
            checks.Warning(
                f"SOCKMAIL has an unknown key {key!r}; it is ignored.",
                hint=f"{hint}The keys are: {', '.join(SETTINGS)}.",
                id="sockmail.W004",
            )
        )
    return messages


def _values(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    """Each value given, through its key's validator (conf.Settings): what conf would
    refuse to read, reported with the key's own id, sockmail.E009 unless it has one."""
    messages: list[checks.CheckMessage] = []
    for key, value in sockmail.items():
        setting = SETTINGS.get(key)
        if setting is None:
            continue  # sockmail.W004
        try:
            setting.validate(value)
        except InvalidSetting as error:
            messages.append(_REFUSED.get(key, _wrong_value)(error))
    return messages


def _valid(setting: Setting[Any], sockmail: Mapping[Any, Any]) -> Any:
    """The value ``conf`` reads for ``setting``, or its default when it would refuse it
    (reported by _values)."""
    try:
        return setting.validate(sockmail.get(setting.key, setting.default))
    except InvalidSetting:
        return setting.validate(setting.default)


def _wrong_value(error: InvalidSetting) -> checks.CheckMessage:
    """sockmail.E009: a value its key does not take (a switch that is not True or False:
    a string such as "False", from an environment variable, would count as true)."""
    name = error.setting.name
    return checks.Error(
        str(error),
        hint=f"Set {name} to {error.setting.takes}, or remove it for the default.",
        id="sockmail.E009",
    )


def _not_a_content_mode(error: InvalidSetting) -> checks.CheckMessage:
    modes = ", ".join(repr(mode) for mode in CONTENT_MODES)
    return checks.Error(
        f"SOCKMAIL['STORE_CONTENT'] is {error.value!r}, which is not a content mode; "
        "every session would fail to record.",
        hint=f"Use one of {modes} (or remove it for 'headers').",
        id="sockmail.E003",
    )


def _not_a_mechanism(error: InvalidSetting) -> checks.CheckMessage:
    return checks.Error(
        f"SOCKMAIL['AUTH_MECHANISM'] is {error.value!r}, which is not an AUTH "
        "mechanism django_sockmail speaks; every login would fail.",
        hint=(
            f"Use one of {', '.join(MECHANISMS)}, or remove it to use the "
            "strongest the server offers."
        ),
        id="sockmail.E005",
    )


def _not_a_token_source(error: InvalidSetting) -> checks.CheckMessage:
    return checks.Error(
        f"{error}.",  # "cannot be imported (...)", "is not callable"
        hint=(
            "Set it to a function taking the username and returning an "
            "access token, or to its dotted path ('myproject.mail.token')."
        ),
        id="sockmail.E006",
    )


# The keys whose refused values have an id of their own.
_REFUSED: dict[str, Callable[[InvalidSetting], checks.CheckMessage]] = {
    "STORE_CONTENT": _not_a_content_mode,
    "AUTH_MECHANISM": _not_a_mechanism,
    "OAUTH2_TOKEN": _not_a_token_source,
}


def _database(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    alias = sockmail.get("DATABASE")
    databases = getattr(settings, "DATABASES", {})
    if not alias or alias in databases:
        return []
    return [
        checks.Error(
            f"SOCKMAIL['DATABASE'] is {alias!r}, which is not an alias in DATABASES; "
            "no session could be recorded.",
            hint=(
                f"Add DATABASES[{alias!r}] (e.g. a second connection to the default "
                "database, see the README), or use one of: " + ", ".join(map(repr, databases)) + "."
            ),
            id="sockmail.E004",
        )
    ]


def _auth_pairing(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    """sockmail.E007: AUTH_MECHANISM and OAUTH2_TOKEN disagree."""
    mechanism = _valid(SETTINGS["AUTH_MECHANISM"], sockmail).upper()
    has_token = sockmail.get("OAUTH2_TOKEN") is not None
    if mechanism == "XOAUTH2" and not has_token:
        return [
            checks.Error(
                "SOCKMAIL['AUTH_MECHANISM'] is 'XOAUTH2' but SOCKMAIL['OAUTH2_TOKEN'] is "
                "not set: XOAUTH2 logs in with an access token, and there would be none.",
                hint="Set SOCKMAIL['OAUTH2_TOKEN'], or pin a password mechanism.",
                id="sockmail.E007",
            )
        ]
    if mechanism and mechanism != "XOAUTH2" and has_token:
        return [
            checks.Error(
                f"SOCKMAIL['OAUTH2_TOKEN'] is set but SOCKMAIL['AUTH_MECHANISM'] pins "
                f"{mechanism!r}: the token would be fetched for every session and "
                "never used, and the login would go by password.",
                hint="Set AUTH_MECHANISM to 'XOAUTH2' (or remove it), or remove OAUTH2_TOKEN.",
                id="sockmail.E007",
            )
        ]
    return []
