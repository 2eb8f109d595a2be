"""The settings, each defined once: the keys of ``settings.SOCKMAIL`` and the options of
Django's mail configuration that the backend reads, in two tables that ``conf`` reads at
run time (live, so ``override_settings`` works), the system checks validate through, and
``docs/settings.md`` is made from (``python -m django_sockmail.settings_reference``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeGuard, TypeVar, overload

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import LazyObject, empty
from django.utils.module_loading import import_string

from .smtp.client import Security, default_port
from .smtp.protocol import MECHANISMS
from .transcript import CONTENT_HEADERS, CONTENT_MODES

T = TypeVar("T")

TIMEOUT_STEPS = ("connect", "greeting", "command", "data", "deadline")
_LAST_PORT = 65535


# -- one SOCKMAIL key ----------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One key of ``settings.SOCKMAIL``. On the :class:`Settings` class it reads itself:
    ``conf.KEY`` is the value given (or the default) as ``validator`` returns it."""

    key: str
    type: str  # what ``conf.KEY`` returns, as the docs show it
    default: Any  # as one would write it in SOCKMAIL
    # The value to use for the value given; ValueError (with why, or empty) when the key
    # does not take it.
    validator: Callable[[Any], T]
    takes: str  # the values the key takes, in words: "True or False"
    doc: str

    @property
    def name(self) -> str:
        return f"SOCKMAIL[{self.key!r}]"

    def validate(self, value: Any) -> T:
        """The value to use; :class:`InvalidSetting` when this key does not take it."""
        try:
            return self.validator(value)
        except ValueError as error:
            raise InvalidSetting(self, value, str(error)) from None

    @overload
    def __get__(self, instance: None, owner: object) -> Setting[T]: ...
    @overload
    def __get__(self, instance: Settings, owner: object) -> T: ...
    def __get__(self, instance: Settings | None, owner: object) -> Setting[T] | T:
        if instance is None:
            return self
        return self.validate(sockmail().get(self.key, self.default))


class InvalidSetting(ImproperlyConfigured):
    """A SOCKMAIL value its key does not take. The message names the key and the value,
    so that it fails closed where no system check runs (gunicorn, uwsgi, Celery)."""

    def __init__(self, setting: Setting[Any], value: object, reason: str = "") -> None:
        self.setting, self.value, self.reason = setting, value, reason
        if reason:
            super().__init__(f"{setting.name} {reason}")
        else:
            super().__init__(f"{setting.name} must be {setting.takes}; got {value!r}")


def sockmail() -> Mapping[str, Any]:
    """``settings.SOCKMAIL``, read live; ``{}`` when it is not set."""
    value = getattr(settings, "SOCKMAIL", {})
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"SOCKMAIL must be a dict, not {type(value).__name__}")
    return value


# -- what each key takes --------------------------------------------------------------


def _switch(value: object) -> bool:
    # Not bool(): "False" read from an environment variable is a non-empty string.
    if not isinstance(value, bool):
        raise ValueError
    return value


def _text_or_none(value: object) -> str | None:
    return str(value) if value else None


def _auth_mechanism(value: object) -> str:
    if not value:
        return ""
    if not isinstance(value, str) or value.upper() not in MECHANISMS:
        raise ValueError
    return value


def _token_source(value: object) -> Callable[[str], str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except Exception as error:  # ImportError, or whatever the module raises
            raise ValueError(f"cannot be imported ({error})") from None
    if not callable(value):
        raise ValueError("is not callable")
    token_source: Callable[[str], str] = value
    return token_source


def _positive_or_none(value: object) -> TypeGuard[float | None]:
    """None, or a finite number of seconds above 0 (not a bool, not a string)."""
    if value is None:
        return True
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


def _timeouts(value: object) -> dict[str, float | None]:
    value = value or {}
    if (
        not isinstance(value, dict)
        or set(value) - set(TIMEOUT_STEPS)
        or any(not _positive_or_none(v) for v in value.values())
    ):
        raise ValueError
    return {step: None if v is None else float(v) for step, v in value.items()}


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError
    return value


def _size(value: object) -> int:
    # A negative size would slice off the end of the message and keep the rest.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError
    try:
        size = int(value)
    except (ValueError, OverflowError):
        raise ValueError from None
    if size < 0:
        raise ValueError
    return size


def _content_mode(value: object) -> str:
    if value not in CONTENT_MODES:
        raise ValueError
    return str(value)


def _retention(value: Any) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError
    try:
        age = value if isinstance(value, timedelta) else timedelta(days=float(value))
    except (TypeError, ValueError, OverflowError):
        raise ValueError from None
    if age <= timedelta(0):
        raise ValueError  # sockmail_purge would delete every session
    return age


# -- the SOCKMAIL keys ----------------------------------------------------------------


class Settings:
    """The keys of ``settings.SOCKMAIL``, in the order the docs give them; ``conf.KEY``
    reads one, live, and raises :class:`InvalidSetting` for a value it does not take."""

    RECORD_SESSIONS = Setting(
        "RECORD_SESSIONS",
        "bool",
        True,
        _switch,
        takes="True or False",
        doc="Write every session's transcript to the database.",
    )
    LOCAL_HOSTNAME = Setting(
        "LOCAL_HOSTNAME",
        "str | None",
        None,
        _text_or_none,
        takes="a host name, or None",
        doc="The name to give in EHLO (None: this machine's FQDN, like smtplib).",
    )
    SSL_CAFILE = Setting(
        "SSL_CAFILE",
        "str | None",
        None,
        _text_or_none,
        takes="a file path, or None",
        doc="A CA bundle (PEM file path) to trust instead of the system's.",
    )
    DANGEROUSLY_SKIP_TLS_VERIFICATION = Setting(
        "DANGEROUSLY_SKIP_TLS_VERIFICATION",
        "bool",
        False,
        _switch,
        takes="True or False",
        doc="Accept any certificate from any host. For test servers only: it makes TLS "
        "worthless against anyone on the path. Every session logs a warning.",
    )
    OPPORTUNISTIC_TLS = Setting(
        "OPPORTUNISTIC_TLS",
        "bool",
        False,
        _switch,
        takes="True or False",
        doc="Without EMAIL_USE_TLS/SSL: use STARTTLS when the server offers it, and carry "
        "on in cleartext when it does not. (EMAIL_USE_TLS never falls back.)",
    )
    ALLOW_CLEARTEXT_AUTH = Setting(
        "ALLOW_CLEARTEXT_AUTH",
        "bool",
        False,
        _switch,
        takes="True or False",
        doc="Send credentials over an unencrypted connection to a server that is not on "
        "loopback (False: such a session fails before AUTH).",
    )
    AUTH_MECHANISM = Setting(
        "AUTH_MECHANISM",
        "str",
        "",
        _auth_mechanism,
        takes=f"one of {', '.join(MECHANISMS)}, or empty",
        doc="Pin the AUTH mechanism (empty: the strongest the server offers).",
    )
    OAUTH2_TOKEN = Setting(
        "OAUTH2_TOKEN",
        "Callable[[str], str] | None",
        None,
        _token_source,
        takes="a callable, or its dotted path",
        doc="A callable (or its dotted path) taking the username and returning a fresh "
        "OAuth 2.0 access token, for XOAUTH2. Called for every session.",
    )
    PIPELINING = Setting(
        "PIPELINING",
        "bool",
        True,
        _switch,
        takes="True or False",
        doc="Group commands (RFC 2920) when the server offers PIPELINING (turn off for a "
        "server that offers it but gets it wrong).",
    )
    CHUNKING = Setting(
        "CHUNKING",
        "bool",
        True,
        _switch,
        takes="True or False",
        doc="Send content with BDAT (RFC 3030) when the server offers CHUNKING (turn off "
        "for a server that offers it but gets it wrong).",
    )
    TIMEOUTS = Setting(
        "TIMEOUTS",
        "dict[str, float | None]",
        {},
        _timeouts,
        takes=f"a dict with keys among {', '.join(TIMEOUT_STEPS)} and positive numbers of "
        "seconds (or None) as values",
        doc='Seconds each step of a session may take, by step: "connect", "greeting", '
        '"command" (each reply), "data" (sending content and its verdict) and '
        '"deadline" (a whole open or send_messages call). A step not given takes the '
        "backend's timeout (EMAIL_TIMEOUT, or the mailer's \"timeout\" option); the "
        "deadline is off unless given.",
    )
    WRITE_EVERY = Setting(
        "WRITE_EVERY",
        "int",
        1000,
        _count,
        takes="a whole number of messages, 0 or more",
        doc="Write an open session's records every this many messages, so that a long "
        "session's memory stays flat and its record reaches the database as it goes; "
        "0 writes each session only when it closes.",
    )
    STORE_CONTENT = Setting(
        "STORE_CONTENT",
        "str",
        CONTENT_HEADERS,
        _content_mode,
        takes=f"one of {', '.join(CONTENT_MODES)}",
        doc='How much message content to keep: "full", "headers" or "envelope".',
    )
    CONTENT_MAX_BYTES = Setting(
        "CONTENT_MAX_BYTES",
        "int",
        256 * 1024,
        _size,
        takes="a whole number >= 0",
        doc='With STORE_CONTENT "full", keep at most this many bytes of each message.',
    )
    DATABASE = Setting(
        "DATABASE",
        "str | None",
        None,
        _text_or_none,
        takes="a database alias, or None",
        doc="The database alias the audit log is written through (None: the router's "
        "choice). Give it an alias of its own, pointing at the same database, so the "
        "records survive a rollback of the caller's transaction.",
    )
    RETENTION = Setting(
        "RETENTION",
        "timedelta | None",
        None,
        _retention,
        takes="a number of days > 0 or a timedelta > 0",
        doc="How long sockmail_purge keeps sessions when given no --older-than: a number "
        "of days, or a timedelta (None: keep everything).",
    )

    def check_switches(self) -> None:
        """Raise :class:`InvalidSetting` for the first switch (:data:`SWITCHES`) that is
        not True or False: the backend calls this when it is built, since gunicorn,
        uwsgi and Celery workers never run the system checks."""
        for key in SWITCHES:
            getattr(self, key)


# Every key, by name, in the table's order.
SETTINGS: dict[str, Setting[Any]] = {
    value.key: value for value in vars(Settings).values() if isinstance(value, Setting)
}
# The keys that are switches: True or False, nothing else.
SWITCHES = tuple(key for key, setting in SETTINGS.items() if setting.validator is _switch)

conf = Settings()


# -- Django's mail settings, as the backend reads them -------------------------------


APP_NAME = "django_sockmail"
# Django 6.1 configures mail through MAILERS (with the EMAIL_* settings deprecated);
# earlier versions ignore a MAILERS setting.
DJANGO_HAS_MAILERS = django.VERSION >= (6, 1)


@dataclass(frozen=True)
class MailOption:
    """One option of Django's mail configuration that the backend reads: a key of a
    MAILERS entry's OPTIONS (Django 6.1), EmailBackend's argument of the same name, and
    the EMAIL_* setting that gives it when neither does."""

    option: str
    setting: str
    type: str
    doc: str
    # Django's backend takes the setting for an empty argument too, not only for None.
    empty_is_missing: bool = False
    # For the options the socket would misread: the value to use, or ImproperlyConfigured
    # naming the setting; and what it takes, in words.
    validator: Callable[[object, str], Any] | None = None
    takes: str = ""


def port_number(value: object, name: str) -> int:
    """The TCP port a setting gives: an int from 1 to 65535, or such a number written
    in decimal digits (as an environment variable gives it, which Django's own backend
    accepts too). Anything else raises ImproperlyConfigured naming the setting: a port
    past 65535 would reach the port it wraps around to, and be recorded as another."""
    number = int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= _LAST_PORT:
        raise ImproperlyConfigured(
            f"{name} must be a port number from 1 to {_LAST_PORT}; got {value!r}"
        )
    return number


def timeout_seconds(value: object, name: str) -> float | None:
    """A timeout a setting gives: None (wait as long as it takes) or a number of
    seconds above 0. Anything else (a string such as "5", a bool, 0) raises
    ImproperlyConfigured naming the setting, where it would otherwise fail at the first
    connection, or never time out."""
    if not _positive_or_none(value):
        raise ImproperlyConfigured(
            f"{name} must be a number of seconds above 0, or None; got {value!r}"
        )
    return value


MAIL_OPTIONS = {
    option.option: option
    for option in (
        MailOption(
            "host",
            "EMAIL_HOST",
            "str",
            "The SMTP server's name or address (a MAILERS entry must give it).",
            empty_is_missing=True,
        ),
        MailOption(
            "port",
            "EMAIL_PORT",
            "int",
            "Its port. A MAILERS entry without one gets the port its security implies: "
            "465 with use_ssl, 587 with use_tls, else 25.",
            empty_is_missing=True,
            validator=port_number,
            takes="a whole number from 1 to 65535",
        ),
        MailOption("username", "EMAIL_HOST_USER", "str", "The user to log in as (AUTH)."),
        MailOption("password", "EMAIL_HOST_PASSWORD", "str", "Its password."),
        MailOption(
            "use_tls",
            "EMAIL_USE_TLS",
            "bool",
            "STARTTLS, required: a server that does not offer it ends the session.",
        ),
        MailOption("use_ssl", "EMAIL_USE_SSL", "bool", "TLS from the first byte (implicit TLS)."),
        MailOption(
            "timeout",
            "EMAIL_TIMEOUT",
            "float | None",
            'Seconds each step may take, unless SOCKMAIL["TIMEOUTS"] gives the step.',
            validator=timeout_seconds,
            takes="a number of seconds, or None",
        ),
        MailOption(
            "ssl_keyfile", "EMAIL_SSL_KEYFILE", "str | None", "The client certificate's key."
        ),
        MailOption(
            "ssl_certfile", "EMAIL_SSL_CERTFILE", "str | None", "A client certificate (PEM)."
        ),
    )
}


def security_of(use_tls: object, use_ssl: object) -> Security:
    """The security the use_tls / use_ssl options ask for (SSL wins)."""
    return "ssl" if use_ssl else "starttls" if use_tls else "none"


def user_settings() -> Any:
    """The settings object behind ``django.conf.settings``, where the backend and the
    checks read EMAIL_* and MAILERS. Django 6.1 warns on every read of an EMAIL_*
    setting through the lazy proxy (RemovedInDjango70Warning), and raises
    AttributeError for one when MAILERS is defined; this object does neither, as
    Django's own code reads them."""
    lazy: LazyObject[Any] = settings
    if lazy._wrapped is empty:
        lazy._setup()
    return lazy._wrapped


def email_settings(has_mailers: bool = DJANGO_HAS_MAILERS) -> Any:
    """Where to read the EMAIL_* settings from, as Django's own SMTP backend reads them:
    the settings object behind the proxy, which does not warn (Django warns the user
    itself, for each EMAIL_* setting at start-up or on sending without MAILERS); with
    MAILERS defined on Django 6.1, the proxy, which refuses them (AttributeError) for
    Django's backend too."""
    email = user_settings()
    if has_mailers and hasattr(email, "MAILERS"):
        return settings
    return email


def completed_options(
    alias: str | None, given: Mapping[str, Any], has_mailers: bool = DJANGO_HAS_MAILERS
) -> dict[str, Any]:
    """Every :data:`MAIL_OPTIONS` value the backend connects with, not yet validated:
    ``given`` (EmailBackend's arguments, or a MAILERS entry's OPTIONS) completed as
    Django's own SMTP backend completes it. Without an alias, by the EMAIL_* settings;
    with one, a port missing is the one the entry's security implies."""
    if alias is None:
        email = email_settings(has_mailers)
        return {
            name: getattr(email, option.setting) if _missing(option, given) else given[name]
            for name, option in MAIL_OPTIONS.items()
        }
    options = {name: given.get(name) for name in MAIL_OPTIONS}
    security = security_of(options["use_tls"], options["use_ssl"])
    options["port"] = options["port"] or default_port(security)
    return options


def _missing(option: MailOption, given: Mapping[str, Any]) -> bool:
    value = given.get(option.option)
    return not value if option.empty_is_missing else value is None


def configured_mailers(
    has_mailers: bool = DJANGO_HAS_MAILERS,
) -> list[tuple[str | None, object, dict[str, Any]]]:
    """Each configuration Django builds mail backends from, as (alias, BACKEND, the
    options completed): on Django 6.1 with MAILERS set, each well-formed entry (Django
    reports the others itself); else the EMAIL_* settings, under no alias."""
    configured = user_settings()
    if not (has_mailers and hasattr(configured, "MAILERS")):
        backend = getattr(configured, "EMAIL_BACKEND", None)
        return [(None, backend, completed_options(None, {}, has_mailers))]
    mailers = configured.MAILERS
    found: list[tuple[str | None, object, dict[str, Any]]] = []
    for alias, config in mailers.items() if isinstance(mailers, Mapping) else ():
        if not isinstance(config, Mapping):
            continue
        options = config.get("OPTIONS") or {}
        if isinstance(options, Mapping):
            found.append((str(alias), config.get("BACKEND"), completed_options(alias, options)))
    return found


@dataclass(frozen=True)
class MailConfig:
    """What an EmailBackend connects with, each option validated."""

    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    timeout: float | None
    ssl_keyfile: str | None
    ssl_certfile: str | None


def mail_config(alias: str | None, given: Mapping[str, Any]) -> MailConfig:
    """What EmailBackend connects with: its arguments ``given`` (on Django 6.1 a MAILERS
    entry's OPTIONS, with its ``alias``), completed by :func:`completed_options`. A port
    or timeout the socket would misread raises ImproperlyConfigured naming the setting
    or argument it came from; for a MAILERS entry, every error is Django's
    InvalidMailer naming the alias."""
    if alias is None:
        return _from_email_settings(given)
    return _from_mailer_options(alias, given)


def _from_email_settings(given: Mapping[str, Any]) -> MailConfig:
    options = completed_options(None, given)
    for name, option in MAIL_OPTIONS.items():
        if option.validator is not None:
            given_as = (
                option.setting if _missing(option, given) else f"EmailBackend's {name} argument"
            )
            options[name] = option.validator(options[name], given_as)
    if options["use_ssl"] and options["use_tls"]:
        raise ValueError(
            "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
            "one of those settings to True."
        )
    return MailConfig(**options)


def _from_mailer_options(alias: str, given: Mapping[str, Any]) -> MailConfig:
    options = completed_options(alias, given)
    options["use_tls"], options["use_ssl"] = bool(options["use_tls"]), bool(options["use_ssl"])
    if not options["host"]:
        raise _invalid_mailer("OPTIONS must define 'host'.", alias)
    if options["use_ssl"] and options["use_tls"]:
        raise _invalid_mailer(
            "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
            "Set at most one of them to True.",
            alias,
        )
    try:
        for name, option in MAIL_OPTIONS.items():
            if option.validator is not None:
                options[name] = option.validator(options[name], f"OPTIONS[{name!r}]")
    except ImproperlyConfigured as exc:
        raise _invalid_mailer(str(exc), alias) from None
    options["username"] = options["username"] or ""
    options["password"] = options["password"] or ""
    return MailConfig(**options)


def _invalid_mailer(message: str, alias: str) -> Exception:
    from django.core.mail import InvalidMailer  # type: ignore[attr-defined,unused-ignore]

    error: Exception = InvalidMailer(message, alias=alias)
    return error


# -- whether the audit log can be kept ----------------------------------------------


def _app_is_installed() -> bool:
    if apps.apps_ready:
        return apps.is_installed(APP_NAME)
    # Before the registry is ready (a backend built while settings load), go by the list.
    return any(
        entry == APP_NAME or str(entry).startswith(f"{APP_NAME}.apps.")
        for entry in getattr(settings, "INSTALLED_APPS", ())
    )


def app_installed_error() -> checks.Error | None:
    """sockmail.E002 when sessions are to be recorded but the app that owns the audit
    log's tables is not installed; None when all is well.

    ``ready()`` never runs for an app that is not installed, so the registered check
    cannot report this: the backend calls :func:`require_app_installed` when it is
    built, whoever configured it."""
    given = getattr(settings, "SOCKMAIL", {})
    recording = given.get("RECORD_SESSIONS", True) if isinstance(given, Mapping) else True
    if _app_is_installed() or not bool(recording):
        return None
    return checks.Error(
        f"The django_sockmail email backend records every SMTP session, but "
        f"{APP_NAME!r} is not in INSTALLED_APPS, so the audit log's tables do not exist.",
        hint=(
            f"Add {APP_NAME!r} to INSTALLED_APPS and run migrate, or set "
            "SOCKMAIL['RECORD_SESSIONS'] = False to send without an audit log."
        ),
        id="sockmail.E002",
    )


def require_app_installed() -> None:
    """Raise ImproperlyConfigured with sockmail.E002's text when it applies."""
    error = app_installed_error()
    if error is not None:
        raise ImproperlyConfigured(f"({error.id}) {error.msg} HINT: {error.hint}")
