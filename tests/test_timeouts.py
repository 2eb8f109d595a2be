"""Timeouts for each step of a session and a deadline for a whole call: a server that
stalls anywhere ends the call with a timeout error (an smtplib class, and TimeoutError)
within the time configured for that step, and the session is recorded."""

from __future__ import annotations

import smtplib
import time
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from django_sockmail.models import Session
from tests.servers import STALL, Conversation, Responder, Scripted, backend_for

pytestmark = pytest.mark.django_db(transaction=True)


def message(n: int = 0) -> EmailMessage:
    return EmailMessage("s", "b", "from@example.org", [f"to{n}@example.org"])


def send_timing_out(server: Any, **kwargs: Any) -> tuple[smtplib.SMTPServerDisconnected, float]:
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, **kwargs).send_messages([message()])
    assert isinstance(info.value, TimeoutError)
    return info.value, time.monotonic() - started


@pytest.mark.parametrize(
    ("stalls_at", "step"),
    [
        ("GREETING", "the greeting"),
        ("EHLO", "the reply to EHLO"),
        ("MAIL", "the reply to MAIL"),
        ("RCPT", "the reply to RCPT"),
        ("DATA", "the reply to DATA"),
        ("END", "the reply to the message content"),
    ],
)
def test_a_stall_at_each_step_times_out_naming_it(
    scripted: Scripted, stalls_at: str, step: str
) -> None:
    server = scripted(Responder({stalls_at: STALL}))
    error, elapsed = send_timing_out(server, timeout=0.3)
    assert str(error) == f"Timed out after 0.3 s waiting for {step}"
    assert elapsed < 3  # the tests' own limit for a hung client is far above
    session = Session.objects.get()
    assert session.status == "timeout"
    assert session.error == f"SMTPTimeoutError: {error}"


def slow_server(delays: dict[bytes, float]) -> Any:
    """Answers like a permissive server, after ``delays[verb]`` seconds for a verb
    (``b"."`` is the end of the data)."""

    def script(c: Conversation) -> None:
        c.send(b"220 slow.test\r\n")
        while True:
            line = c.readline()
            verb = line.split(b" ")[0].upper()
            if verb == b"DATA":
                time.sleep(delays.get(verb, 0))
                c.send(b"354 go\r\n")
                c.read_data()
                verb = b"."
            time.sleep(delays.get(verb, 0))
            c.send(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
            if verb == b"QUIT":
                return

    return script


def test_the_data_step_has_its_own_limit(scripted: Scripted) -> None:
    # RFC 5321 §4.5.3.2: servers may take long over a message's content (filters,
    # scanning); commands should be quick. Each step keeps its own limit.
    slow_verdict = scripted(slow_server({b".": 0.6}))
    with override_settings(SOCKMAIL={"TIMEOUTS": {"command": 0.3, "data": 3}}):
        assert backend_for(slow_verdict).send_messages([message()]) == 1
        slow_mail = scripted(slow_server({b"MAIL": 0.6}))
        error, _ = send_timing_out(slow_mail)
    assert str(error) == "Timed out after 0.3 s waiting for the reply to MAIL"


def test_the_deadline_bounds_a_whole_call_of_quick_steps(scripted: Scripted) -> None:
    # Each reply comes within its step's limit, but the call as a whole takes too long.
    server = scripted(slow_server({b"MAIL": 0.15, b"RCPT": 0.15, b"DATA": 0.15, b".": 0.15}))
    messages = [message(n) for n in range(10)]
    started = time.monotonic()
    limits = {"command": 2, "data": 2, "deadline": 1}
    with (
        override_settings(SOCKMAIL={"TIMEOUTS": limits}),
        pytest.raises(smtplib.SMTPServerDisconnected) as info,
    ):
        backend_for(server).send_messages(messages)
    assert time.monotonic() - started < 2
    assert isinstance(info.value, TimeoutError)
    assert "(the deadline of 1 s)" in str(info.value)
    sent = info.value.sent_messages  # type: ignore[attr-defined]
    assert 0 < len(sent) < 10 and sent == messages[: len(sent)]


def test_without_timeouts_the_emails_timeout_applies_to_each_step(scripted: Scripted) -> None:
    server = scripted(slow_server({b"RCPT": 0.6}))
    with override_settings(EMAIL_TIMEOUT=0.3):
        error, _ = send_timing_out(server, timeout=None)
    assert str(error) == "Timed out after 0.3 s waiting for the reply to RCPT"


def test_unknown_timeout_steps_are_refused() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_sockmail.conf import conf

    with (
        override_settings(SOCKMAIL={"TIMEOUTS": {"comand": 1}}),
        pytest.raises(ImproperlyConfigured, match="comand"),
    ):
        conf.TIMEOUTS  # noqa: B018
