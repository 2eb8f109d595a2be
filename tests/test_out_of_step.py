"""Replies out of step with the commands, and non-verdicts after the whole content.

A server (or a proxy in front of it) that sends one reply too many shifts every later
reply onto the wrong command. The client accounts for every reply: at the end of each
pipelined window, at QUIT, and reply by reply where a reply cannot answer its command
(by its code, and by the subject of its enhanced status code). Once the replies are
out of step, every verdict since they last provably matched is in doubt: a message
whose content went out is ``unknown``, never ``sent``; one whose content never left is
``not_sent``. The error is an SMTPOutOfStepError (an SMTPProtocolError) that says
which messages were sent, unsent and unknown, and the audit log agrees.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_sockmail.models import Message, Session
from django_sockmail.smtp.errors import SMTPOutOfStepError, SMTPProtocolError
from tests import toolkit
from tests.faults import Behaviour, HostileResponder
from tests.servers import Conversation, Scripted, ScriptedServer, SMTPServer, backend_for
from tests.toolkit import session_at, statuses

pytestmark = pytest.mark.django_db

GREETING = b"220 batch.test ESMTP\r\n"
# PIPELINING and CHUNKING without enhanced status codes: no reply carries a subject,
# so a reply too many shows only when it is left over.
EHLO_CHUNKING = b"250-batch.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
EHLO_CHUNKING_ENHANCED = (
    b"250-batch.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"
)


batch = partial(toolkit.batch, first=1, subject="Message {n}", body="Body", domain="example.com")


def stored(server: Any) -> list[tuple[str, str]]:
    rows = Message.objects.filter(session=session_at(server)).order_by("position")
    return list(rows.values_list("subject", "status"))


def wire(server: Any) -> list[str]:
    return [f"{line.direction}: {line.text}" for line in session_at(server).transcript_lines()]


class BatchServer:
    """Reads ``commands`` commands after EHLO (BDAT with its bytes), then answers
    all of them in one write, ``replies`` joined: what a server that answers a whole
    pipelined group at once sends, so the client reads every reply together."""

    def __init__(self, ehlo: bytes, commands: int, replies: list[bytes]) -> None:
        self.ehlo = ehlo
        self.commands = commands
        self.replies = replies
        self.received: list[bytes] = []

    def __call__(self, c: Conversation) -> None:
        c.send(GREETING)
        c.expect(b"EHLO", self.ehlo)
        for _ in range(self.commands):
            line = c.readline()
            self.received.append(line)
            if line.startswith(b"BDAT"):
                c.read_exact(int(line.split()[1]))
        c.send(b"".join(self.replies))
        while True:  # whatever comes after: QUIT is answered, the rest read
            line = c.readline()
            if line == b"QUIT":
                c.send(b"221 Bye\r\n")
                return


def bdat_batch_replies(surplus_after_mail: bytes) -> list[bytes]:
    """The replies to four BDAT transactions (MAIL, RCPT, BDAT; RSET before each
    after the first), message 1's content refused, with a reply too many behind
    message 1's MAIL reply."""
    replies = [b"250 Ok\r\n", surplus_after_mail, b"250 Ok\r\n", b"554 Refused\r\n"]
    for n in (2, 3, 4):
        replies += [b"250 Ok\r\n", b"250 Ok\r\n", b"250 Ok\r\n", f"250 Ok Q{n}\r\n".encode()]
    return replies


@pytest.fixture
def server(scripted: Scripted) -> Iterator[Any]:
    servers: list[ScriptedServer] = []

    def start(script: Any) -> ScriptedServer:
        servers.append(scripted(script))
        return servers[-1]

    yield start


def check_all_unknown(messages: list[EmailMessage], error: SMTPOutOfStepError) -> None:
    assert statuses(messages) == ["unknown"] * len(messages)
    assert list(error.sent_messages) == []
    assert list(error.unsent_messages) == []
    assert list(error.unknown_messages) == messages


def test_a_reply_too_many_with_chunking_leaves_every_verdict_unknown(server: Any) -> None:
    # The case: a 250 too many behind message 1's MAIL reply, message 1's
    # content refused. Matched in order, message 1 would be "sent"; the shift shows
    # only at the end: QUIT (written behind the batch) is answered by a BDAT's 250.
    commands = 4 * 3 + 3 + 1  # MAIL, RCPT, BDAT each; an RSET before 2-4; QUIT
    replies = [*bdat_batch_replies(b"250 Ok\r\n"), b"221 Bye\r\n"]
    smtp = server(BatchServer(EHLO_CHUNKING, commands, replies))
    messages = batch(4)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    assert isinstance(info.value, SMTPProtocolError) and isinstance(
        info.value, smtplib.SMTPException
    )
    assert str(info.value) == "The server answered QUIT with 250 Ok Q4: out of step"
    check_all_unknown(messages, info.value)
    assert stored(smtp) == [(f"Message {n}", "unknown") for n in (1, 2, 3, 4)]
    session = Session.objects.get(host=smtp.host)
    assert session.status == "failed" and session.error.startswith("SMTPOutOfStepError")


def test_a_reply_too_many_on_a_kept_connection_is_left_over(server: Any) -> None:
    # Without QUIT behind the batch: every command has a reply, and one more is there.
    commands = 4 * 3 + 3
    smtp = server(BatchServer(EHLO_CHUNKING, commands, bdat_batch_replies(b"250 Ok\r\n")))
    messages = batch(4)

    with pytest.raises(SMTPOutOfStepError) as info, backend_for(smtp) as backend:
        backend.send_messages(messages)

    assert str(info.value) == "The server sent a reply to no command: 250 Ok Q4"
    check_all_unknown(messages, info.value)
    assert stored(smtp) == [(f"Message {n}", "unknown") for n in (1, 2, 3, 4)]


def test_an_enhanced_code_that_cannot_answer_its_command_shows_the_shift_at_once(
    server: Any,
) -> None:
    # A sender's "2.1.0" taken for the RCPT's reply: out of step at that very reply.
    commands = 4 * 3 + 3 + 1
    surplus = b"250 2.1.0 Ok\r\n"
    replies = [r.replace(b"250 Ok", b"250 2.1.0 Ok", 1) for r in bdat_batch_replies(surplus)]
    smtp = server(BatchServer(EHLO_CHUNKING_ENHANCED, commands, [*replies, b"221 Bye\r\n"]))
    messages = batch(4)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    assert str(info.value) == "The server answered RCPT with 250 2.1.0 Ok: out of step"
    # Every content went out with its BDAT: none can be called not sent.
    check_all_unknown(messages, info.value)


def test_a_destination_code_answering_the_end_of_data_is_out_of_step(
    scripted: Scripted, smtpd: SMTPServer
) -> None:
    # Pipelined DATA: message 1's verdict is a RCPT's reply ("2.1.5"): a reply too
    # many came before it. Message 2's commands were out; its content never was.
    responder = HostileResponder(
        {"END": [b"250 2.1.5 Ok\r\n", b"250 2.0.0 Ok: queued as Q2\r\n"]}, pipelining=True
    )
    smtp = scripted(responder)
    messages = batch(3)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    assert str(info.value) == "The server answered end of data with 250 2.1.5 Ok: out of step"
    assert statuses(messages) == ["unknown", "not_sent", "not_sent"]
    assert list(info.value.unknown_messages) == messages[:1]
    assert list(info.value.unsent_messages) == messages[1:]
    assert stored(smtp) == [
        ("Message 1", "unknown"),
        ("Message 2", "not_sent"),
        ("Message 3", "not_sent"),
    ]
    # The retry sends exactly the two never sent.
    assert backend_for(smtpd).send_messages(list(info.value.unsent_messages)) == 2


def test_quit_answered_by_another_commands_reply_puts_the_last_verdict_in_doubt(
    scripted: Scripted,
) -> None:
    # send_mail(): QUIT goes behind the content; the server answers the content twice.
    responder = HostileResponder(
        {"END": b"250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok: queued as Q1\r\n"},
        pipelining=True,
    )
    smtp = scripted(responder)
    messages = batch(1)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    assert str(info.value) == (
        "The server answered QUIT with 250 2.0.0 Ok: queued as Q1: out of step"
    )
    assert statuses(messages) == ["unknown"]
    assert stored(smtp) == [("Message 1", "unknown")]


def test_replies_in_step_stay_sent(server: Any) -> None:
    # The same server without the reply too many: every message has its verdict.
    commands = 4 * 3 + 3 + 1
    replies = [*bdat_batch_replies(b""), b"221 Bye\r\n"]
    smtp = server(BatchServer(EHLO_CHUNKING, commands, replies))
    messages = batch(4)

    with pytest.raises(smtplib.SMTPDataError):  # message 1's content refused
        backend_for(smtp).send_messages(messages)

    assert statuses(messages) == ["failed", "sent", "sent", "sent"]


# 2. A non-verdict after the whole content: the content went out whole, so the
# message may have been queued. Never "not_sent" (a retry would send it twice) nor
# "failed".

NON_VERDICTS = [b"354 Go ahead\r\n", b"334 VXNlcm5hbWU6\r\n"]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
@pytest.mark.parametrize("non_verdict", NON_VERDICTS, ids=["354", "334"])
def test_a_non_verdict_after_the_data_is_unknown(
    scripted: Scripted, pipelining: bool, non_verdict: bytes
) -> None:
    smtp = scripted(HostileResponder({"END": non_verdict}, pipelining=pipelining))
    messages = batch(2)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    code = non_verdict[:3].decode()
    assert str(info.value).startswith("The server answered ")
    assert f"with {code} " in str(info.value)
    assert statuses(messages) == ["unknown", "not_sent"]
    assert list(info.value.unknown_messages) == messages[:1]
    assert list(info.value.unsent_messages) == messages[1:]
    assert stored(smtp)[0] == ("Message 1", "unknown")


@pytest.mark.parametrize("non_verdict", NON_VERDICTS, ids=["354", "334"])
def test_a_non_verdict_to_bdat_last_is_unknown(server: Any, non_verdict: bytes) -> None:
    commands = 3 + 1  # MAIL, RCPT, BDAT; QUIT
    replies = [b"250 Ok\r\n", b"250 Ok\r\n", non_verdict, b"221 Bye\r\n"]
    smtp = server(BatchServer(EHLO_CHUNKING, commands, replies))
    messages = batch(1)

    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(smtp).send_messages(messages)

    assert f"with {non_verdict[:3].decode()} " in str(info.value)
    assert statuses(messages) == ["unknown"]
    assert stored(smtp) == [("Message 1", "unknown")]


def test_with_chunking_verdicts_are_believed_a_window_at_a_time(scripted: Scripted) -> None:
    # BDAT transactions go out a window at a time: the next window only once every
    # reply to this one is in and nothing more came, so that a reply too many is
    # always found before a verdict of its window is believed. Between two points where
    # every command had its reply, at most PIPELINE_WINDOW transactions are written.
    from django_sockmail.smtp.client import PIPELINE_WINDOW

    class Slowly(Behaviour):  # each verdict a little after the last, as real servers
        def act(self, conversation: Conversation) -> bytes | None:
            time.sleep(0.002)
            conversation.send(b"250 2.0.0 Ok\r\n")
            return b"250 2.0.0 Ok\r\n"

    ehlo = b"250-batch.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    smtp = scripted(HostileResponder({"EHLO": ehlo, "END": Slowly("slowly")}, pipelining=True))
    messages = batch(2 * PIPELINE_WINDOW + 10)

    assert backend_for(smtp).send_messages(messages) == len(messages)

    outstanding, written, most = 0, 0, 0
    for line in Session.objects.get().transcript_lines():
        if line.direction == "C":
            outstanding += 1
            written += line.text.startswith("BDAT")
        elif line.direction == "S" and line.text[3:4] != "-":
            outstanding -= 1
            if outstanding == 0:
                most, written = max(most, written), 0
    assert most == PIPELINE_WINDOW
