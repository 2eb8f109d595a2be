"""django_sockmail's own settings, read live from ``settings.SOCKMAIL`` (a dict) so
``override_settings`` works in tests. Each property documents one key."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeGuard

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import LazyObject, empty
from django.utils.module_loading import import_string

from .transcript import CONTENT_HEADERS, CONTENT_MODES

TIMEOUT_STEPS = ("connect", "greeting", "command", "data", "deadline")
_LAST_PORT = 65535


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


class Settings:
    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, "SOCKMAIL", {}).get(name, default)

    def _switch(self, name: str, default: bool) -> bool:
        """A key that is True or False. Any other value fails closed, before it
        could count as true: "False" read from an environment variable is a
        non-empty string."""
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ImproperlyConfigured(f"SOCKMAIL[{name!r}] must be True or False; got {value!r}")
        return value

    def check_switches(self) -> None:
        """Raise ImproperlyConfigured for the first switch (:data:`SWITCHES`) that is
        not True or False: the backend calls this when it is built, since gunicorn,
        uwsgi and Celery workers never run the system checks."""
        for name in SWITCHES:
            getattr(self, name)

    @property
    def RECORD_SESSIONS(self) -> bool:
        """Write every session's transcript to the database (default True)."""
        return self._switch("RECORD_SESSIONS", True)

    @property
    def LOCAL_HOSTNAME(self) -> str | None:
        """The name to give in EHLO (default: this machine's FQDN, like smtplib)."""
        value = self._get("LOCAL_HOSTNAME", None)
        return str(value) if value else None

    @property
    def SSL_CAFILE(self) -> str | None:
        """A CA bundle to trust instead of the system's (PEM file path)."""
        value = self._get("SSL_CAFILE", None)
        return str(value) if value else None

    @property
    def DANGEROUSLY_SKIP_TLS_VERIFICATION(self) -> bool:
        """Accept any certificate from any host. For test servers only: it makes TLS
        worthless against anyone on the path. Every session logs a warning."""
        return self._switch("DANGEROUSLY_SKIP_TLS_VERIFICATION", False)

    @property
    def OPPORTUNISTIC_TLS(self) -> bool:
        """Without EMAIL_USE_TLS/SSL: use STARTTLS when the server offers it, and carry
        on in cleartext when it does not. (EMAIL_USE_TLS never falls back.)"""
        return self._switch("OPPORTUNISTIC_TLS", False)

    @property
    def ALLOW_CLEARTEXT_AUTH(self) -> bool:
        """Send credentials over an unencrypted connection to a server that is not on
        loopback (default False: such a session fails before AUTH)."""
        return self._switch("ALLOW_CLEARTEXT_AUTH", False)

    @property
    def AUTH_MECHANISM(self) -> str:
        """Pin the AUTH mechanism ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"); default:
        the strongest the server offers."""
        return str(self._get("AUTH_MECHANISM", "") or "")

    @property
    def OAUTH2_TOKEN(self) -> Callable[[str], str] | None:
        """A callable (or its dotted path) taking the username and returning a fresh
        OAuth 2.0 access token, for XOAUTH2. Called for every session."""
        value = self._get("OAUTH2_TOKEN", None)
        if isinstance(value, str):
            value = import_string(value)
        if value is not None and not callable(value):
            raise ImproperlyConfigured("SOCKMAIL['OAUTH2_TOKEN'] must be a callable")
        token_source: Callable[[str], str] | None = value
        return token_source

    @property
    def PIPELINING(self) -> bool:
        """Group commands (RFC 2920) when the server offers PIPELINING (default True;
        turn off for a server that offers it but gets it wrong)."""
        return self._switch("PIPELINING", True)

    @property
    def CHUNKING(self) -> bool:
        """Send content with BDAT (RFC 3030) when the server offers CHUNKING (default
        True; turn off for a server that offers it but gets it wrong)."""
        return self._switch("CHUNKING", True)

    @property
    def TIMEOUTS(self) -> dict[str, float | None]:
        """Seconds each step of a session may take, by step: "connect", "greeting",
        "command" (each reply), "data" (sending content and its verdict) and
        "deadline" (a whole open or send_messages call). A step not given takes the
        backend's timeout (EMAIL_TIMEOUT, or the mailer's "timeout" option); the
        deadline is off unless given."""
        value = self._get("TIMEOUTS", {}) or {}
        if (
            not isinstance(value, dict)
            or set(value) - set(TIMEOUT_STEPS)
            or any(not _positive_or_none(v) for v in value.values())
        ):
            raise ImproperlyConfigured(
                f"SOCKMAIL['TIMEOUTS'] must be a dict with keys among "
                f"{', '.join(TIMEOUT_STEPS)} and positive numbers of seconds (or None) "
                f"as values; got {value!r}"
            )
        return {step: None if v is None else float(v) for step, v in value.items()}

    @property
    def WRITE_EVERY(self) -> int:
        """Write an open session's records every this many messages (default 1000), so
        that a long session's memory stays flat and its record reaches the database
        as it goes; 0 writes each session only when it closes."""
        value = self._get("WRITE_EVERY", 1000)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ImproperlyConfigured(
                f"SOCKMAIL['WRITE_EVERY'] must be a whole number of messages, 0 or more; "
                f"got {value!r}"
            )
        return value

    @property
    def STORE_CONTENT(self) -> str:
        """How much message content to keep: "full", "headers" (default) or "envelope"."""
        value = self._get("STORE_CONTENT", CONTENT_HEADERS)
        if value not in CONTENT_MODES:
            raise ImproperlyConfigured(
                f"SOCKMAIL['STORE_CONTENT'] must be one of {', '.join(CONTENT_MODES)}; "
                f"got {value!r}"
            )
        return str(value)

    @property
    def CONTENT_MAX_BYTES(self) -> int:
        """With STORE_CONTENT "full", keep at most this many bytes of each message."""
        return int(self._get("CONTENT_MAX_BYTES", 256 * 1024))

    @property
    def DATABASE(self) -> str | None:
        """The database alias the audit log is written through (default: the router's
        choice). Give it an alias of its own, pointing at the same database, so the
        records survive a rollback of the caller's transaction."""
        value = self._get("DATABASE", None)
        return str(value) if value else None

    @property
    def RETENTION(self) -> timedelta | None:
        """How long sockmail_purge keeps sessions when given no --older-than:
        a number of days, or a timedelta (default: None, keep everything)."""
        value = self._get("RETENTION", None)
        if value is None or isinstance(value, timedelta):
            return value
        return timedelta(days=float(value))


# The keys that are switches: True or False, nothing else.
SWITCHES = tuple(
    name
    for name, value in vars(Settings).items()
    if isinstance(value, property) and value.fget.__annotations__.get("return") in ("bool", bool)
)

conf = Settings()


# -- Django's own mail settings, and whether the audit log can be kept ---------------

APP_NAME = "django_sockmail"
# Django 6.1 configures mail through MAILERS (with the EMAIL_* settings deprecated);
# earlier versions ignore a MAILERS setting.
DJANGO_HAS_MAILERS = django.VERSION >= (6, 1)


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
    sockmail = getattr(settings, "SOCKMAIL", {})
    recording = sockmail.get("RECORD_SESSIONS", True) if isinstance(sockmail, Mapping) else True
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
