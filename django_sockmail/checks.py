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

The errors that would make a session go wrong (E001, E002, E009's switches, E010) are
raised by the backend too, as ImproperlyConfigured when it is built: gunicorn, uwsgi
and Celery workers never run the checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .backend import EmailBackend
from .conf import (
    DJANGO_HAS_MAILERS,
    SWITCHES,
    Settings,
    app_installed_error,
    conf,
    port_number,
    timeout_seconds,
    user_settings,
)
from .smtp.client import Security, default_port, is_loopback
from .smtp.protocol import MECHANISMS
from .transcript import CONTENT_HEADERS, CONTENT_MODES

TAG = "sockmail"
BACKEND = "django_sockmail.backend.EmailBackend"

# The keys conf.Settings documents.
KNOWN_KEYS = tuple(name for name, value in vars(Settings).items() if isinstance(value, property))

# The option names of a MAILERS entry, as the EMAIL_* settings spell them.
_EMAIL_SETTING = {
    "host": "EMAIL_HOST",
    "port": "EMAIL_PORT",
    "timeout": "EMAIL_TIMEOUT",
    "use_tls": "EMAIL_USE_TLS",
    "use_ssl": "EMAIL_USE_SSL",
}
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


def _as_int(value: object) -> int | None:
    """``value`` as int() reads it, None when it cannot (or is a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return int(value)
    except (ValueError, OverflowError):
        return None


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
    host: str
    port: int | None  # None when it is not a port (sockmail.E010 says so)
    use_tls: bool
    use_ssl: bool
    # The port and timeout as given, for sockmail.E010.
    given_port: object = None
    timeout: object = None

    def name(self, option: str) -> str:
        """How the settings spell ``option`` ("use_tls", "port", ...) here."""
        if self.alias is None:
            return _EMAIL_SETTING[option]
        return f"MAILERS[{self.alias!r}]['OPTIONS'][{option!r}]"


def our_mailers() -> list[Mailer]:
    """Each configuration our backend is used with, as the backend will read it."""
    configured = user_settings()
    if DJANGO_HAS_MAILERS and hasattr(configured, "MAILERS"):
        return _mailers_entries(configured.MAILERS)
    if not _is_ours(getattr(configured, "EMAIL_BACKEND", None)):
        return []
    port = getattr(configured, "EMAIL_PORT", None)
    return [
        Mailer(
            alias=None,
            host=str(getattr(configured, "EMAIL_HOST", "") or ""),
            port=_valid_port(port),
            use_tls=bool(getattr(configured, "EMAIL_USE_TLS", False)),
            use_ssl=bool(getattr(configured, "EMAIL_USE_SSL", False)),
            given_port=port,
            timeout=getattr(configured, "EMAIL_TIMEOUT", None),
        )
    ]


def _mailers_entries(mailers: object) -> list[Mailer]:
    found: list[Mailer] = []
    if not isinstance(mailers, Mapping):
        return found  # Django reports a malformed MAILERS itself
    for alias, config in mailers.items():
        if not isinstance(config, Mapping) or not _is_ours(config.get("BACKEND")):
            continue
        options = config.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            continue
        use_tls, use_ssl = bool(options.get("use_tls")), bool(options.get("use_ssl"))
        # The backend's default port for the security asked for.
        security: Security = "ssl" if use_ssl else "starttls" if use_tls else "none"
        given_port = options.get("port") or default_port(security)
        host = str(options.get("host") or "")
        timeout = options.get("timeout")
        found.append(
            Mailer(str(alias), host, _valid_port(given_port), use_tls, use_ssl, given_port, timeout)
        )
    return found


def _is_loopback_host(host: str) -> bool:
    """Whether the host is this machine: a loopback address, or localhost (RFC 6761)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _settings_key(key: str) -> str:
    return f"SOCKMAIL[{key!r}]"


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
        for option, value, validate, wanted in (
            ("port", mailer.given_port, port_number, "a whole number from 1 to 65535"),
            ("timeout", mailer.timeout, timeout_seconds, "a number of seconds, or None"),
        ):
            try:
                validate(value, mailer.name(option))
            except ImproperlyConfigured as error:
                messages.append(
                    checks.Error(
                        f"{error}: the backend refuses to be built with it.",
                        hint=f"Set {mailer.name(option)} to {wanted}.",
                        id="sockmail.E010",
                    )
                )
    return messages


# -- sockmail.W002, W003: security ---------------------------------------------------


def check_tls_verification(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    key = _settings_key("DANGEROUSLY_SKIP_TLS_VERIFICATION")
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
    key = _settings_key("ALLOW_CLEARTEXT_AUTH")
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
        *_value_types(value),
        *_store_content(value),
        *_database(value),
        *_auth(value),
    ]


def _unknown_keys(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for key in sockmail:
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(str(key).upper(), KNOWN_KEYS, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        messages.append(
            checks.Warning(
                f"SOCKMAIL has an unknown key {key!r}; it is ignored.",
                hint=f"{hint}The keys are: {', '.join(KNOWN_KEYS)}.",
                id="sockmail.W004",
            )
        )
    return messages


def _wrong_type(key: str, expected: str, value: object) -> checks.Error:
    return checks.Error(
        f"{_settings_key(key)} must be {expected}, not {value!r}.",
        hint=f"Set {_settings_key(key)} to {expected}, or remove it for the default.",
        id="sockmail.E009",
    )


def _value_types(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if "CONTENT_MAX_BYTES" in sockmail:
        value = sockmail["CONTENT_MAX_BYTES"]
        if isinstance(value, bool) or _as_int(value) is None or int(value) < 0:
            # A negative size would slice off the end of the message and keep the rest.
            messages.append(_wrong_type("CONTENT_MAX_BYTES", "a whole number >= 0", value))
    if sockmail.get("RETENTION") is not None:
        value = sockmail["RETENTION"]
        try:
            age = value if isinstance(value, timedelta) else timedelta(days=float(value))
        except (TypeError, ValueError, OverflowError):
            age = None
        if isinstance(value, bool) or age is None or age <= timedelta(0):
            expected = "a number of days > 0 or a timedelta > 0"
            messages.append(_wrong_type("RETENTION", expected, value))
    for key in VALIDATED_ON_READING:
        if key in sockmail:
            try:
                getattr(conf, key)
            except ImproperlyConfigured as exc:  # what conf refuses, the check reports
                messages.append(
                    checks.Error(
                        str(exc),
                        hint=f"Fix {_settings_key(key)}, or remove it for the default.",
                        id="sockmail.E009",
                    )
                )
    return messages


# The keys whose values conf.py checks as it reads them: a switch that is not True or
# False (a string such as "False", from an environment variable, would count as true).
VALIDATED_ON_READING = (*SWITCHES, "TIMEOUTS", "WRITE_EVERY")


def _store_content(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    value = sockmail.get("STORE_CONTENT", CONTENT_HEADERS)
    if value in CONTENT_MODES:
        return []
    modes = ", ".join(repr(mode) for mode in CONTENT_MODES)
    return [
        checks.Error(
            f"SOCKMAIL['STORE_CONTENT'] is {value!r}, which is not a content mode; "
            "every session would fail to record.",
            hint=f"Use one of {modes} (or remove it for 'headers').",
            id="sockmail.E003",
        )
    ]


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


def _auth(sockmail: Mapping[Any, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    mechanism = sockmail.get("AUTH_MECHANISM") or ""
    if not isinstance(mechanism, str) or mechanism.upper() not in ("", *MECHANISMS):
        messages.append(
            checks.Error(
                f"SOCKMAIL['AUTH_MECHANISM'] is {mechanism!r}, which is not an AUTH "
                "mechanism django_sockmail speaks; every login would fail.",
                hint=(
                    f"Use one of {', '.join(MECHANISMS)}, or remove it to use the "
                    "strongest the server offers."
                ),
                id="sockmail.E005",
            )
        )
        mechanism = ""
    token_source = sockmail.get("OAUTH2_TOKEN")
    if token_source is not None:
        problem = ""
        if isinstance(token_source, str):
            try:
                token_source = import_string(token_source)
            except Exception as error:  # ImportError, or whatever the module raises
                problem = f"cannot be imported ({error})"
        if not problem and not callable(token_source):
            problem = "is not callable"
        if problem:
            messages.append(
                checks.Error(
                    f"SOCKMAIL['OAUTH2_TOKEN'] {problem}.",
                    hint=(
                        "Set it to a function taking the username and returning an "
                        "access token, or to its dotted path ('myproject.mail.token')."
                    ),
                    id="sockmail.E006",
                )
            )
    if mechanism.upper() == "XOAUTH2" and token_source is None:
        messages.append(
            checks.Error(
                "SOCKMAIL['AUTH_MECHANISM'] is 'XOAUTH2' but SOCKMAIL['OAUTH2_TOKEN'] is "
                "not set: XOAUTH2 logs in with an access token, and there would be none.",
                hint="Set SOCKMAIL['OAUTH2_TOKEN'], or pin a password mechanism.",
                id="sockmail.E007",
            )
        )
    elif mechanism and mechanism.upper() != "XOAUTH2" and token_source is not None:
        messages.append(
            checks.Error(
                f"SOCKMAIL['OAUTH2_TOKEN'] is set but SOCKMAIL['AUTH_MECHANISM'] pins "
                f"{mechanism.upper()!r}: the token would be fetched for every session and "
                "never used, and the login would go by password.",
                hint="Set AUTH_MECHANISM to 'XOAUTH2' (or remove it), or remove OAUTH2_TOKEN.",
                id="sockmail.E007",
            )
        )
    return messages
