"""A connection the caller keeps open and the server closes (an idle timeout, with a
421 or without a word) is opened again once, transparently, on the next send; a
message the server already took is never sent again."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from functools import partial

import pytest

from django_sockmail import outcome_of
from django_sockmail.models import Session
from tests import toolkit
from tests.servers import Conversation, Scripted, backend_for

pytestmark = pytest.mark.django_db(transaction=True)

EHLO = b"250-idle.test\r\n250 8BITMIME\r\n"


message = partial(toolkit.message, subject="m{n}")


class Sessions:
    """A scripted server whose n-th connection runs ``scripts[n]``; ``delivered``
    lists (connection, recipient) for every message it took."""

    def __init__(self, *scripts: Callable[[Conversation, Sessions], None]) -> None:
        self.scripts = list(scripts)
        self.delivered: list[tuple[int, bytes]] = []
        self.idle = threading.Event()  # set by the test: the client is idle now
        self.closed = threading.Event()  # set by a script that closed its connection

    def __call__(self, c: Conversation) -> None:
        self.scripts.pop(0)(c, self)

    def greet(self, c: Conversation) -> None:
        c.send(b"220 idle.test\r\n")
        c.expect(b"EHLO", EHLO)

    def take(self, c: Conversation, number: int) -> None:
        # Never an RSET first: a transaction before this one ended with its data.
        c.expect(b"MAIL", b"250 ok\r\n")
        rcpt = c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()
        c.send(b"250 2.0.0 queued\r\n")
        self.delivered.append((number, rcpt.split(b":", 1)[1]))


def closes_when_idle(goodbye: bytes) -> Callable[[Conversation, Sessions], None]:
    def script(c: Conversation, s: Sessions) -> None:
        s.greet(c)
        s.take(c, 1)
        assert s.idle.wait(5)
        if goodbye:
            c.send(goodbye)
        c.sock.close()
        s.closed.set()

    return script


def second_session(c: Conversation, s: Sessions) -> None:
    s.greet(c)
    c.expect(b"MAIL", b"250 ok\r\n")
    rcpt = c.expect(b"RCPT", b"250 ok\r\n")
    c.expect(b"DATA", b"354 go\r\n")
    c.read_data()
    c.send(b"250 2.0.0 queued\r\n")
    s.delivered.append((2, rcpt.split(b":", 1)[1]))
    c.expect(b"QUIT", b"221 bye\r\n")


@pytest.mark.parametrize("goodbye", [b"421 4.4.2 idle.test Error: timeout exceeded\r\n", b""])
def test_a_kept_connection_closed_while_idle_is_opened_again(
    scripted: Scripted, goodbye: bytes
) -> None:
    sessions = Sessions(closes_when_idle(goodbye), second_session)
    server = scripted(sessions)
    backend = backend_for(server)
    backend.open()
    assert backend.send_messages([message(1)]) == 1
    sessions.idle.set()
    assert sessions.closed.wait(5)

    assert backend.send_messages([message(2)]) == 1  # no error: a new connection
    backend.close()

    assert sessions.delivered == [(1, b"<to1@example.org>"), (2, b"<to2@example.org>")]
    first, second = Session.objects.order_by("id")
    assert (first.status, first.sent_count, second.status, second.sent_count) == ("ok", 1, "ok", 1)
    last_words = [(line.direction, line.text) for line in first.transcript_lines()][-2:]
    if goodbye:
        assert last_words[0] == ("S", goodbye.decode().strip())
    assert last_words[-1] == ("*", "connection closed")


def test_a_421_to_the_first_command_after_idling_is_retried_on_a_new_connection(
    scripted: Scripted,
) -> None:
    # The server closes its side just as the client writes: the check before the
    # send saw nothing, and the 421 answers the MAIL that begins the next call's
    # transaction (no RSET before it: the last one ended with its data). Nothing was
    # taken: once more.
    def first(c: Conversation, s: Sessions) -> None:
        s.greet(c)
        s.take(c, 1)
        c.expect(b"MAIL", b"421 4.4.2 idle.test Error: timeout exceeded\r\n")

    sessions = Sessions(first, second_session)
    server = scripted(sessions)
    backend = backend_for(server)
    backend.open()
    assert backend.send_messages([message(1)]) == 1
    second = message(2)
    assert backend.send_messages([second]) == 1
    backend.close()
    # The first connection's last words from the client: the MAIL the 421 answered.
    assert server.conversations[0].received[-1] == b"MAIL FROM:<from@example.org>"
    assert [n for n, _ in sessions.delivered] == [1, 2]
    assert outcome_of(second).status == "sent"
    assert Session.objects.count() == 2


def test_a_message_the_server_took_is_never_sent_again(scripted: Scripted) -> None:
    # The 421 comes after the server took the first message of the call: a retry of
    # the whole call would send that one twice, so there is none.
    def first(c: Conversation, s: Sessions) -> None:
        s.greet(c)
        s.take(c, 1)
        c.expect(b"MAIL", b"421 4.3.2 shutting down\r\n")

    sessions = Sessions(first)
    backend = backend_for(scripted(sessions))
    backend.open()
    took, refused = message(1), message(2)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend.send_messages([took, refused])
    assert info.value.sent_messages == [took]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == [refused]  # type: ignore[attr-defined]
    assert outcome_of(refused).status == "deferred"
    assert sessions.delivered == [(1, b"<to1@example.org>")]
    assert Session.objects.get().status == "failed"


def test_content_without_a_verdict_is_not_sent_again(scripted: Scripted) -> None:
    def first(c: Conversation, s: Sessions) -> None:
        s.greet(c)
        s.take(c, 1)
        c.expect(b"MAIL", b"250 ok\r\n")
        c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()  # and gone, without a verdict: it may be queued

    backend = backend_for(scripted(Sessions(first)))
    backend.open()
    assert backend.send_messages([message(1)]) == 1
    maybe = message(2)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend.send_messages([maybe])
    assert info.value.unknown_messages == [maybe]  # type: ignore[attr-defined]
    assert Session.objects.count() == 1  # no second connection, no second attempt


def test_a_connection_the_call_opens_itself_is_not_retried(scripted: Scripted) -> None:
    def only(c: Conversation, s: Sessions) -> None:
        s.greet(c)
        c.expect(b"MAIL", b"421 4.3.2 shutting down\r\n")

    backend = backend_for(scripted(Sessions(only)))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        backend.send_messages([message(1)])
    assert Session.objects.count() == 1
