"""The statuses a message and a session end with: the client's vocabulary, which the
outcomes, the transcript and the audit log's choices all take from here.

Each status is a ``str``: it equals its value (``MessageStatus.SENT == "sent"``), and
``str()``, f-strings and JSON give the value, the string the database keeps.
"""

from __future__ import annotations

from enum import Enum, EnumMeta
from typing import TypeVar

_S = TypeVar("_S", bound="_Status")


class _StatusType(EnumMeta):
    """Gives a vocabulary what Django's ``TextChoices`` give, without Django: a model
    field's ``choices`` and its parts, read from the class."""

    @property
    def _statuses(cls) -> list[_Status]:
        return list(cls)

    @property
    def choices(cls) -> list[tuple[str, str]]:
        """``(value, label)`` of each status, for a model field's ``choices``."""
        return [(status.value, status.label) for status in cls._statuses]

    @property
    def values(cls) -> list[str]:
        return [status.value for status in cls._statuses]

    @property
    def labels(cls) -> list[str]:
        return [status.label for status in cls._statuses]

    @property
    def names(cls) -> list[str]:
        return [status.name for status in cls._statuses]

    @property
    def do_not_call_in_templates(cls) -> bool:
        """Django's templates read a vocabulary's statuses rather than call the class."""
        return True


# (str, Enum) rather than StrEnum: its own __new__ takes a label beside the value, and
# __str__ gives the value as StrEnum's would.
class _Status(str, Enum, metaclass=_StatusType):  # noqa: UP042
    """A status: its value (what is stored and compared) and a label for people."""

    _value_: str
    label: str

    # Makes each status from its ``value, label``. A call with the value alone,
    # ``MessageStatus("sent")``, finds the status (Enum never calls this for it): the
    # label's default lets that call type-check.
    def __new__(cls: type[_S], value: str, label: str = "") -> _S:
        status = str.__new__(cls, value)
        status._value_ = value
        status.label = label or value
        return status

    @property
    def value(self) -> str:  # for type checkers, which cannot read it through __new__
        return self._value_

    def __str__(self) -> str:  # and so f-strings: the value, as a plain str gives
        return self._value_


class MessageStatus(_Status):
    """What became of a message offered in a session (``MessageOutcome.status``)."""

    SENT = "sent", "sent"  # every recipient accepted, content accepted
    PARTIAL = "partial", "partly sent"  # content accepted for some recipients, others refused
    # The server refused it for now (a 4xx reply): worth a retry later.
    DEFERRED = "deferred", "deferred (4xx: retry later)"
    FAILED = "failed", "failed (5xx)"  # the server refused it for good (a 5xx reply)
    NOT_SENT = "not_sent", "not sent"  # never offered to the server (the session ended first)
    # The whole content went out but the session broke before the server's verdict: it
    # may have been queued. Retrying it may deliver it twice (RFC 1047).
    UNKNOWN = "unknown", "unknown"


class SessionStatus(_Status):
    """How a session ended (``Transcript.status``)."""

    OK = "ok", "OK"
    FAILED = "failed", "failed"  # an error ended it
    TIMED_OUT = "timeout", "timed out"  # failed because the server did not answer in time

    @classmethod
    def after(cls, error: BaseException) -> SessionStatus:
        """The status of a session that ``error`` ended."""
        return cls.TIMED_OUT if isinstance(error, TimeoutError) else cls.FAILED
