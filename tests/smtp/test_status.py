"""The statuses a message and a session end with: enums that are still the plain
strings callers compare, store and serialise."""

from __future__ import annotations

import json

import pytest

from django_sockmail.smtp import results
from django_sockmail.smtp.errors import SMTPServerDisconnected, SMTPTimeoutError
from django_sockmail.smtp.reply import Reply
from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome
from django_sockmail.smtp.status import MessageStatus, SessionStatus

STATUSES = [*MessageStatus, *SessionStatus]


@pytest.mark.parametrize("status", STATUSES, ids=[f"{type(s).__name__}.{s.name}" for s in STATUSES])
def test_a_status_is_its_value_wherever_it_goes(status: MessageStatus | SessionStatus) -> None:
    value = status.value
    assert type(value) is str
    assert status == value and hash(status) == hash(value)
    assert str(status) == f"{status}" == "%s" % status == value  # noqa: UP031
    assert json.dumps({"status": status}) == json.dumps({"status": value})
    assert type(status)(value) is status


def test_the_values_are_the_strings_the_audit_log_keeps() -> None:
    assert MessageStatus.values == ["sent", "partial", "deferred", "failed", "not_sent", "unknown"]
    assert SessionStatus.values == ["ok", "failed", "timeout"]
    assert SessionStatus.choices == [("ok", "OK"), ("failed", "failed"), ("timeout", "timed out")]


def test_the_package_s_first_names_for_them_are_the_same_statuses() -> None:
    assert (results.SENT, results.PARTIAL, results.DEFERRED) == (
        MessageStatus.SENT,
        MessageStatus.PARTIAL,
        MessageStatus.DEFERRED,
    )
    assert results.FAILED is MessageStatus.FAILED and results.NOT_SENT is MessageStatus.NOT_SENT
    assert results.UNKNOWN is MessageStatus.UNKNOWN


def outcome(*replies: Reply | None) -> MessageOutcome:
    mail, rcpt, final = replies
    return MessageOutcome(
        "a@example.org", [RecipientOutcome("b@example.org", rcpt)], mail, final_reply=final
    )


OK = Reply(250, ("OK",))


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ((OK, OK, OK), MessageStatus.SENT),
        ((OK, Reply(450, ("busy",)), None), MessageStatus.DEFERRED),
        ((Reply(550, ("no",)), None, None), MessageStatus.FAILED),
        ((None, None, None), MessageStatus.NOT_SENT),
    ],
)
def test_an_outcome_is_settled_with_a_message_status(
    replies: tuple[Reply | None, ...], expected: MessageStatus
) -> None:
    settled = outcome(*replies)
    settled.settle()
    assert settled.status is expected


def test_an_outcome_whose_verdict_never_came_is_unknown() -> None:
    unfinished = outcome(OK, OK, None)
    unfinished.settle_unfinished(content_went_out=True)
    assert unfinished.status is MessageStatus.UNKNOWN
    assert MessageOutcome("a@example.org", []).status is MessageStatus.NOT_SENT


def test_a_session_ended_by_a_timeout_timed_out_and_by_other_errors_failed() -> None:
    assert SessionStatus.after(SMTPTimeoutError("no answer")) is SessionStatus.TIMED_OUT
    assert SessionStatus.after(TimeoutError()) is SessionStatus.TIMED_OUT
    assert SessionStatus.after(SMTPServerDisconnected("gone")) is SessionStatus.FAILED
