"""Timeouts for each step of a session and a deadline for a whole call: a server that
stalls anywhere ends the call with a timeout error (an smtplib class, and TimeoutError)
within the time configured for that step, and the session is recorded."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_sockmail.models import Session
from tests.servers import STALL, Conversation, Peer, Responder, Scripted, backend_for
from tests.toolkit import message

pytestmark = pytest.mark.django_db(transaction=True)


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


@pytest.mark.email_settings
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


def trickling(reply: bytes, every: float) -> Any:
    """Answers like a permissive server, but MAIL's reply a byte at a time, one every
    ``every`` seconds (as a tarpit does)."""

    def script(c: Conversation) -> None:
        c.send(b"220 tarpit.test\r\n")
        c.expect(b"EHLO", b"250 tarpit.test\r\n")
        c.readline()  # MAIL
        for byte in reply:
            c.send(bytes([byte]))
            time.sleep(every)
        c.readline()

    return script


def test_a_reply_trickled_a_byte_at_a_time_is_cut_at_the_steps_limit(
    scripted: Scripted,
) -> None:
    # Each byte comes well within the limit; the whole reply would take 3 s.
    server = scripted(trickling(b"250 2.1.0 Sender accepted\r\n", every=0.1))
    error, elapsed = send_timing_out(server, timeout=1)
    assert str(error) == "Timed out after 1 s waiting for the reply to MAIL"
    assert 1 <= elapsed < 2


def test_the_deadline_bounds_the_whole_call_open_included(scripted: Scripted) -> None:
    # Opening takes 0.9 s and sending 1.2 s, each within a deadline of 1.5 s: the call
    # as a whole may not take 2.1 s.
    server = scripted(
        slow_server({b"EHLO": 0.9, b"MAIL": 0.3, b"RCPT": 0.3, b"DATA": 0.3, b".": 0.3})
    )
    started = time.monotonic()
    with (
        override_settings(SOCKMAIL={"TIMEOUTS": {"command": 2, "data": 2, "deadline": 1.5}}),
        pytest.raises(smtplib.SMTPServerDisconnected) as info,
    ):
        backend_for(server).send_messages([message()])
    assert isinstance(info.value, TimeoutError)
    assert "(the deadline of 1.5 s)" in str(info.value)
    assert 1.5 <= time.monotonic() - started < 2


def test_quit_on_a_connection_idle_past_the_deadline_still_reads_its_reply(
    scripted: Scripted,
) -> None:
    server = scripted(slow_server({}))
    backend = backend_for(server)
    with override_settings(SOCKMAIL={"TIMEOUTS": {"deadline": 0.3}}):
        backend.open()
        backend.send_messages([message()])
        time.sleep(0.4)  # the connection is kept open, idle, past the call's deadline
        backend.close()
    lines = [(line.direction, line.text) for line in Session.objects.get().transcript_lines()]
    assert lines[-3:] == [("C", "QUIT"), ("S", "221 bye"), ("*", "connection closed")]
    assert Session.objects.get().status == "ok"


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A resolver that never answers for names under .hung.test (it gives up after 5 s,
    as the test's own bound); every other name resolves as usual."""
    import socket

    resolve = socket.getaddrinfo
    released = threading.Event()

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".hung.test"):
            released.wait(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    released.set()


@pytest.mark.usefixtures("hung_resolver")
@pytest.mark.parametrize(
    ("limits", "said"),
    [({}, "Timed out after 0.5 s resolving"), ({"deadline": 0.5}, "Timed out after 0.5 s")],
    ids=["connect-step", "deadline"],
)
def test_a_hung_resolver_is_bounded_by_the_connect_limit(
    limits: dict[str, float], said: str
) -> None:
    started = time.monotonic()
    backend = backend_for(Peer("mail.hung.test", 25), timeout=None if limits else 0.5)
    with (
        override_settings(SOCKMAIL={"TIMEOUTS": limits}),
        pytest.raises(smtplib.SMTPServerDisconnected) as info,
    ):
        backend.send_messages([message()])
    assert isinstance(info.value, TimeoutError)
    assert str(info.value).startswith(said)
    assert 0.5 <= time.monotonic() - started < 1.5
    assert Session.objects.get().status == "timeout"
