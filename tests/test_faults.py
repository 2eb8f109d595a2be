"""Faults on demand: Postfix's smtp-sink refusing, dropping and stalling at each step,
and hostile servers of our own (tests/faults.py) for what no real server does.

Every fault must end in a clear smtplib-class error, a recorded session with the
conversation up to the fault, and nothing sent twice: each message's status, the
error's ``sent_messages`` / ``unsent_messages`` / ``unknown_messages``, and a retry of
exactly ``unsent_messages`` against a good server that delivers each message once.

The tests say what goes over the wire. What smtp-sink does, checked by hand:

- ``-f`` / ``-r`` (reject a command 5xx / 4xx) imply ``-p``: no PIPELINING is offered,
  so the client goes one command at a time. The replies are ``500 5.3.0 Error: command
  failed`` and ``450 4.3.0 Error: command failed``.
- ``-q`` (disconnect after a command) and ``-w`` (slow DATA) keep PIPELINING: the
  client writes MAIL, RCPT and DATA at once. With ``-w`` smtp-sink holds back the
  replies to MAIL and RCPT too, until it answers DATA. ``-p`` makes them one at a time.
- ``-Q`` (421 after a command) keeps PIPELINING as well.
"""

from __future__ import annotations

import email
import os
import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_sockmail import outcome_of
from django_sockmail.models import Message, Session
from django_sockmail.smtp.errors import (
    SMTPDataError,
    SMTPError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from django_sockmail.smtp.replies import MAX_LINE_LENGTH
from tests import toolkit
from tests.faults import (
    SMTP_SINK,
    Closing,
    Endless,
    HostileResponder,
    Say,
    SMTPSink,
    StopReading,
)
from tests.servers import Address, Answer, Scripted, ScriptedServer, SMTPServer, backend_for
from tests.toolkit import session_at, statuses

pytestmark = pytest.mark.django_db

SENDER = "from@example.com"
TIMEOUT = 0.4  # for the faults that must end in a timeout: short, so the suite stays fast
GRACE = 1.0  # how much longer than TIMEOUT waiting may take, on a slow machine
Messages = list[EmailMessage]


# The batch, its outcome, and the retry.


# Three messages, "Message 1" to "Message 3", from SENDER, each to its own recipient.
batch = partial(toolkit.batch, 3, first=1, subject="Message {n}", body="Body", domain="example.com")


def send(server: Address, messages: Messages, timeout: float = 2) -> SMTPError:
    """Send the batch, which must fail with one of our (smtplib-class) errors."""
    with pytest.raises(SMTPError) as excinfo:
        backend_for(server, timeout=timeout).send_messages(messages)
    assert isinstance(excinfo.value, smtplib.SMTPException)
    return excinfo.value


def check_batch(
    messages: Messages, error: SMTPError, expected: list[str], good: SMTPServer
) -> None:
    """Each message's status, the error's account of the batch, and the retry: sending
    exactly ``error.unsent_messages`` to ``good`` delivers every message that is not
    "unknown" once, counting those the faulty server accepted."""
    assert statuses(messages) == expected

    def having(*wanted: str) -> Messages:
        return [m for m, status in zip(messages, expected, strict=True) if status in wanted]

    assert list(error.sent_messages) == having("sent", "partial")
    assert list(error.unknown_messages) == having("unknown")
    assert list(error.unsent_messages) == having("failed", "deferred", "not_sent")

    retry = list(error.unsent_messages)
    assert backend_for(good).send_messages(retry) == len(retry)
    received = [email.message_from_bytes(r.content)["Subject"] for r in good.messages]
    delivered = [m.subject for m in error.sent_messages] + received
    unknown = list(error.unknown_messages)
    assert sorted(delivered) == [m.subject for m in messages if m not in unknown]


# The record.


def _line(direction: str, text: str) -> str:
    if direction == "D":  # the content: say whose (the header block names it)
        subject = re.search(r"^Subject: (.*)$", text, re.MULTILINE)
        return f"D: {subject.group(1) if subject else text}"
    return f"{direction}: {text}"


def wire(session: Session) -> list[str]:
    """What was said, in order, from the first MAIL on: "C: …", "S: …", and "D: <subject>"
    for a message's content."""
    lines = [
        _line(line.direction, line.text)
        for line in session.transcript_lines()
        if line.direction in "CSD"
    ]
    first_mail = next((i for i, line in enumerate(lines) if line.startswith("C: MAIL")), None)
    return lines[first_mail:] if first_mail is not None else lines


def check_failed_session(session: Session, error: SMTPError) -> None:
    """The session is recorded as failed (timed out, for a timeout), with the error, as
    the last thing that happened."""
    assert session.status == ("timeout" if isinstance(error, TimeoutError) else "failed")
    assert session.error == f"{type(error).__name__}: {error}"
    lines = session.transcript_lines()
    assert len(lines) == session.line_count
    last = [(line.direction, line.text) for line in lines[-2:]]
    assert last == [("*", f"error: {session.error}"), ("*", "connection closed")]


def waited(session: Session) -> float:
    """Seconds from the last thing said to the error, as the transcript timed them: how
    long the client waited before it gave up (the database's time not counted)."""
    lines = [(line.direction, line.text, line.offset_ms) for line in session.transcript_lines()]
    error = next(ms for d, text, ms in reversed(lines) if d == "*" and text.startswith("error:"))
    said = next(ms for d, _, ms in reversed(lines) if d in "CSD")
    return (error - said) / 1000


Row = tuple[str, str, int | None, str]
RecipientRow = tuple[str, bool, int | None]


NEVER_OFFERED = "never offered: "


def stored(session: Session) -> list[Row]:
    """Each Message row of the session for a message the server was offered: subject,
    status, reply code, enhanced status. The rest of the batch follows them, each not
    sent and saying why: every message handed to the backend has its row, in order."""
    rows = Message.objects.filter(session=session).order_by("position")
    found = list(rows.values_list("subject", "status", "reply_code", "enhanced_status", "error"))
    assert [row[0] for row in found] == [f"Message {n}" for n in (1, 2, 3)]
    offered = [row for row in found if not row[4].startswith(NEVER_OFFERED)]
    assert all(row[1] == "not_sent" for row in found[len(offered) :])
    return [row[:4] for row in offered]


def stored_recipients(session: Session) -> list[RecipientRow]:
    """The recipients of the messages the server was offered (see :func:`stored`)."""
    rows = (
        Message.objects.filter(session=session)
        .exclude(error__startswith=NEVER_OFFERED)
        .order_by("position", "recipients__id")
    )
    return [
        (address, accepted, code)
        for address, accepted, code in rows.values_list(
            "recipients__address", "recipients__accepted", "recipients__reply_code"
        )
    ]


# Wire fragments.


def mail(n: int = 1) -> list[str]:
    """A message's envelope as the client sends it, pipelined (no replies between)."""
    return [f"C: MAIL FROM:<{SENDER}>", f"C: RCPT TO:<to{n}@example.com>", "C: DATA"]


GO_AHEAD = "S: 354 End data with <CR><LF>.<CR><LF>"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    # A fixed EHLO name: the transcript says exactly what was sent.
    settings.SOCKMAIL = {"LOCAL_HOSTNAME": "client.test"}


@pytest.fixture(scope="module")
def good_server() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def good(good_server: SMTPServer) -> SMTPServer:
    """A good server (aiosmtpd) for the retry, with nothing received yet."""
    good_server.messages.clear()
    return good_server


# 1. smtp-sink


@pytest.fixture
def sink() -> Iterator[Callable[..., SMTPSink]]:
    """Start smtp-sink with flags: ``sink("-f", "MAIL")``; each is stopped after the test."""
    if not os.access(SMTP_SINK, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but {SMTP_SINK} is missing (scripts/postfix.sh installs it)")
        pytest.skip(f"{SMTP_SINK} is missing: source scripts/postfix.sh; ensure_smtp_sink")
    sinks: list[SMTPSink] = []

    def start(*flags: str, dump: bool = False) -> SMTPSink:
        started = SMTPSink(*flags, dump=dump)
        sinks.append(started)
        return started.start()

    yield start
    for started in sinks:
        started.stop()


def offers_pipelining(session: Session) -> bool:
    return any(
        line.direction == "S" and line.text == "250-PIPELINING"
        for line in session.transcript_lines()
    )


REFUSALS = {  # -f / -r: code, enhanced status, status
    "-f": (500, "5.3.0", "failed"),
    "-r": (450, "4.3.0", "deferred"),
}
REFUSED_AT: dict[str, tuple[type[SMTPError], list[str], str]] = {
    # the command: the error, the wire (REFUSAL standing for the reply), the record's error
    "MAIL": (
        SMTPSenderRefused,
        [f"C: MAIL FROM:<{SENDER}>", "REFUSAL", "C: RSET", "S: 250 2.1.0 Ok"],
        "sender refused: {reply}",
    ),
    "RCPT": (
        SMTPRecipientsRefused,
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "REFUSAL",
            "C: RSET",
            "S: 250 2.1.0 Ok",
        ],
        "every recipient refused",
    ),
    "DATA": (
        SMTPDataError,
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
            "REFUSAL",
            "C: RSET",
            "S: 250 2.1.0 Ok",
        ],
        "DATA refused: {reply}",
    ),
    ".": (  # the end of the data: the transaction is over, no RSET
        SMTPDataError,
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
            GO_AHEAD,
            "D: Message 1",
            "REFUSAL",
        ],
        "message refused: {reply}",
    ),
}


@pytest.mark.parametrize("command", REFUSED_AT)
@pytest.mark.parametrize("flag", REFUSALS)
def test_smtp_sink_refusing_a_command(
    sink: Callable[..., SMTPSink], good: SMTPServer, flag: str, command: str
) -> None:
    code, enhanced, status = REFUSALS[flag]
    error_type, expected_wire, record_error = REFUSED_AT[command]
    reply = f"{code} {enhanced} Error: command failed"
    server = sink(flag, command)
    messages = batch()

    error = send(server, messages)

    # The first message is refused, and the batch stops there, like Django's backend.
    assert type(error) is error_type
    assert isinstance(error, smtplib.SMTPException)
    assert error.is_transient is (code < 500)
    assert error.reply is not None and (error.reply.code, error.reply.text) == (
        code,
        f"{enhanced} Error: command failed",
    )
    if isinstance(error, SMTPRecipientsRefused):
        assert error.recipients == {"to1@example.com": (code, reply[4:].encode())}
    else:
        assert isinstance(error, (SMTPSenderRefused, SMTPDataError))
        assert (error.smtp_code, error.smtp_error) == (code, reply[4:].encode())
    session = session_at(server)
    assert not offers_pipelining(session)  # -f and -r imply -p
    expected_wire = [f"S: {reply}" if line == "REFUSAL" else line for line in expected_wire]
    assert wire(session) == [*expected_wire, "C: QUIT", "S: 221 Bye"]
    # A refusal is the message's failure, not the session's: it ended with QUIT.
    assert (session.status, session.error) == ("ok", "")
    message = Message.objects.get(session=session, position=1)
    assert message.error == record_error.format(reply=reply)
    # The message keeps the reply that stopped it (with every recipient refused,
    # the recipient's refusal).
    assert stored(session) == [("Message 1", status, code, enhanced)]
    assert stored_recipients(session) == [
        (
            "to1@example.com",
            command in ("DATA", "."),
            {"MAIL": None, "RCPT": code}.get(command, 250),
        )
    ]
    check_batch(messages, error, [status, "not_sent", "not_sent"], good)


DROPPED_AT = {  # -q: what the client saw, pipelined / one command at a time
    "MAIL": ([*mail()], [f"C: MAIL FROM:<{SENDER}>"]),
    "RCPT": (
        [*mail(), "S: 250 2.1.0 Ok"],
        [f"C: MAIL FROM:<{SENDER}>", "S: 250 2.1.0 Ok", "C: RCPT TO:<to1@example.com>"],
    ),
    "DATA": (
        [*mail(), "S: 250 2.1.0 Ok", "S: 250 2.1.5 Ok"],
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
        ],
    ),
    ".": (
        # The content went out with the next envelope behind it (no RSET: the end of
        # the data ended the transaction).
        [
            *mail(),
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            GO_AHEAD,
            "D: Message 1",
            *mail(2),
        ],
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
            GO_AHEAD,
            "D: Message 1",
        ],
    ),
}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("command", DROPPED_AT)
def test_smtp_sink_disconnecting_after_a_command(
    sink: Callable[..., SMTPSink], good: SMTPServer, command: str, pipelining: bool
) -> None:
    server = sink("-q", command, *([] if pipelining else ["-p"]), dump=True)
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPServerDisconnected
    assert isinstance(error, smtplib.SMTPServerDisconnected)
    assert not isinstance(error, TimeoutError)
    assert error.reply is None and not error.is_transient
    session = session_at(server)
    assert offers_pipelining(session) is pipelining
    assert wire(session) == DROPPED_AT[command][0 if pipelining else 1]
    check_failed_session(session, error)
    # Only after the end of the data had smtp-sink the whole message: then, and only
    # then, it may have kept it, and the message is "unknown" (not offered for a retry).
    dumped = re.findall(r"^Subject: (.*)$", server.dumped(), re.MULTILINE)
    rows: list[Row]
    recipients: list[RecipientRow]
    if command == ".":
        assert dumped == ["Message 1"]
        expected = ["unknown", "not_sent", "not_sent"]
        rows = [("Message 1", "unknown", None, "")]
        recipients = [("to1@example.com", True, 250)]
        if pipelining:  # the second envelope went out too, unanswered
            rows.append(("Message 2", "not_sent", None, ""))
            recipients.append(("to2@example.com", False, None))
    else:
        assert dumped == []
        expected = ["not_sent", "not_sent", "not_sent"]
        rows = [("Message 1", "not_sent", None, "")]
        recipients = [("to1@example.com", command == "DATA", 250 if command == "DATA" else None)]
    assert stored(session) == rows
    assert stored_recipients(session) == recipients
    check_batch(messages, error, expected, good)


CLOSED_AT = {  # -Q: a 421, then the connection closes
    "RCPT": (
        [*mail(), "S: 250 2.1.0 Ok", "S: 421 4.0.0 Server closing connection"],
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 421 4.0.0 Server closing connection",
        ],
    ),
    ".": (
        [
            *mail(),
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            GO_AHEAD,
            "D: Message 1",
            *mail(2),
            "S: 421 4.0.0 Server closing connection",
        ],
        [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
            GO_AHEAD,
            "D: Message 1",
            "S: 421 4.0.0 Server closing connection",
        ],
    ),
}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("command", CLOSED_AT)
def test_smtp_sink_closing_with_421_after_a_command(
    sink: Callable[..., SMTPSink], good: SMTPServer, command: str, pipelining: bool
) -> None:
    server = sink("-Q", command, *([] if pipelining else ["-p"]))
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPServerDisconnected
    assert error.reply is not None and error.reply.code == 421 and error.is_transient
    session = session_at(server)
    assert wire(session) == CLOSED_AT[command][0 if pipelining else 1]
    check_failed_session(session, error)
    rows: list[Row]
    recipients: list[RecipientRow]
    # The 421 answers the command: the message is deferred, never "unknown" (the
    # server said it did not take it, RFC 5321 §3.8).
    if command == ".":
        rows = [("Message 1", "deferred", 421, "4.0.0")]
        recipients = [("to1@example.com", True, 250)]
        if pipelining:
            rows.append(("Message 2", "not_sent", None, ""))
            recipients.append(("to2@example.com", False, None))
    else:
        rows = [("Message 1", "deferred", 421, "4.0.0")]  # the recipient's 421
        recipients = [("to1@example.com", False, 421)]
    assert stored_recipients(session) == recipients
    assert stored(session) == rows
    check_batch(messages, error, ["deferred", "not_sent", "not_sent"], good)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_smtp_sink_slow_data_times_out(
    sink: Callable[..., SMTPSink], good: SMTPServer, pipelining: bool
) -> None:
    # smtp-sink waits 3 s before answering DATA; the client waits TIMEOUT for a reply.
    server = sink("-w", "3", *([] if pipelining else ["-p"]))
    messages = batch()

    error = send(server, messages, timeout=TIMEOUT)

    assert type(error) is SMTPTimeoutError
    assert isinstance(error, smtplib.SMTPServerDisconnected) and isinstance(error, TimeoutError)
    session = session_at(server)
    check_failed_session(session, error)
    assert "timed out" in session.error.lower()
    assert TIMEOUT <= waited(session) < TIMEOUT + GRACE
    if pipelining:  # smtp-sink holds back the replies to MAIL and RCPT too
        assert wire(session) == mail()
    else:
        assert wire(session) == [
            f"C: MAIL FROM:<{SENDER}>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<to1@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
        ]
    assert stored(session) == [("Message 1", "not_sent", None, "")]
    check_batch(messages, error, ["not_sent", "not_sent", "not_sent"], good)


# 2. Hostile servers of our own. Each answers every command as it reads it; with
# "pipelined" its EHLO offers PIPELINING, so the client writes envelopes in one go.

PIPELINING = pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
FIRST_SENT = "S: 250 2.0.0 Ok: queued as SCRIPTED1"
# No RSET between the messages: the end of Message 1's data ended its transaction.
MESSAGE_1 = {  # Message 1 delivered, and Message 2's envelope on its way
    False: [
        f"C: MAIL FROM:<{SENDER}>", "S: 250 2.1.0 Ok", "C: RCPT TO:<to1@example.com>",
        "S: 250 2.1.5 Ok", "C: DATA", GO_AHEAD, "D: Message 1", FIRST_SENT,
        f"C: MAIL FROM:<{SENDER}>",
    ],
    True: [
        *mail(), "S: 250 2.1.0 Ok", "S: 250 2.1.5 Ok", GO_AHEAD, "D: Message 1",
        *mail(2), FIRST_SENT,
    ],
}  # fmt: skip
MESSAGE_2_CONTENT = {  # ... and Message 2's content written
    False: [
        *MESSAGE_1[False], "S: 250 2.1.0 Ok", "C: RCPT TO:<to2@example.com>", "S: 250 2.1.5 Ok",
        "C: DATA", GO_AHEAD, "D: Message 2",
    ],
    True: [
        *MESSAGE_1[True], "S: 250 2.1.0 Ok", "S: 250 2.1.5 Ok", GO_AHEAD, "D: Message 2",
        *mail(3),
    ],
}  # fmt: skip


def hostile(
    scripted: Scripted, pipelining: bool, **replies: Answer | list[Answer]
) -> ScriptedServer:
    return scripted(HostileResponder(replies, pipelining=pipelining))


GARBAGE = {
    "text": b"hello\r\n",
    "binary": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe\r\n",
    "two-digit-code": b"25 2.1.0 Ok\r\n",
    "four-digit-code": b"2500 Ok\r\n",
    "code-600": b"600 2.1.0 Ok\r\n",
}


@PIPELINING
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_instead_of_a_reply(
    scripted: Scripted, good: SMTPServer, garbage: bytes, pipelining: bool
) -> None:
    # The reply to the first MAIL: it arrives alone.
    server = hostile(scripted, pipelining, MAIL=garbage)
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPProtocolError
    assert str(error).startswith(("malformed reply code: ", "malformed reply line: "))
    session = session_at(server)
    assert wire(session) == (mail() if pipelining else [f"C: MAIL FROM:<{SENDER}>"])
    check_failed_session(session, error)
    assert stored(session) == [("Message 1", "not_sent", None, "")]
    check_batch(messages, error, ["not_sent", "not_sent", "not_sent"], good)


@pytest.mark.parametrize(
    "pipelining",
    [False, True],
    ids=["one-by-one", "pipelined"],
)
def test_garbage_right_behind_a_good_reply(
    scripted: Scripted, good: SMTPServer, pipelining: bool
) -> None:
    # Message 1's verdict is good, and garbage follows in the same write; then silence.
    verdict = f"{FIRST_SENT[3:]}\r\nhello\r\n".encode()
    server = hostile(scripted, pipelining, END=Say(verdict, then="stall"))
    messages = batch()

    error = send(server, messages, timeout=TIMEOUT)

    # At once: a client that waited for more would give up with SMTPTimeoutError.
    assert type(error) is SMTPProtocolError
    assert str(error) == "malformed reply code: b'hello'"
    session = session_at(server)
    # One by one the client sees it before it sends MAIL; pipelined, MAIL went out.
    assert wire(session) == MESSAGE_1[pipelining][: None if pipelining else -1]
    check_failed_session(session, error)
    check_batch(messages, error, ["sent", "not_sent", "not_sent"], good)


HALF_REPLIES = {
    "cut-in-a-line": b"250 2.1.0 O",
    "multi-line-unfinished": b"250-2.1.0 Ok\r\n250-and more to come\r\n",
}


@PIPELINING
@pytest.mark.parametrize("half", HALF_REPLIES.values(), ids=HALF_REPLIES.keys())
def test_a_half_reply_then_silence_times_out(
    scripted: Scripted, good: SMTPServer, half: bytes, pipelining: bool
) -> None:
    server = hostile(scripted, pipelining, MAIL=[b"250 2.1.0 Ok\r\n", Say(half, then="stall")])
    messages = batch()

    error = send(server, messages, timeout=TIMEOUT)

    assert type(error) is SMTPTimeoutError
    assert isinstance(error, smtplib.SMTPServerDisconnected) and isinstance(error, TimeoutError)
    session = session_at(server)
    assert TIMEOUT <= waited(session) < TIMEOUT + GRACE
    # Half a reply is no reply: nothing of it is in the transcript.
    assert wire(session) == MESSAGE_1[pipelining]
    check_failed_session(session, error)
    assert stored(session)[1:] == [("Message 2", "not_sent", None, "")]
    check_batch(messages, error, ["sent", "not_sent", "not_sent"], good)


@PIPELINING
def test_a_half_reply_then_close(scripted: Scripted, good: SMTPServer, pipelining: bool) -> None:
    # Message 2's content went out whole; its verdict is cut off: the server may have
    # queued it, so it is "unknown", and the retry leaves it out.
    server = hostile(
        scripted,
        pipelining,
        END=[b"250 2.0.0 Ok: queued as Q1\r\n", Say(b"250 2.0.0 Ok: qu", "close")],
    )
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPServerDisconnected
    assert not isinstance(error, TimeoutError)
    session = session_at(server)
    expected_wire = [said.replace("SCRIPTED1", "Q1") for said in MESSAGE_2_CONTENT[pipelining]]
    assert wire(session) == expected_wire
    check_failed_session(session, error)
    assert stored(session)[:2] == [
        ("Message 1", "sent", 250, "2.0.0"),
        ("Message 2", "unknown", None, ""),
    ]
    check_batch(messages, error, ["sent", "unknown", "not_sent"], good)


ENDLESS = {
    # More than MAX_LINES lines come before MAX_REPLY_SIZE bytes...
    "short-lines": b"250-" + b"x" * 60 + b"\r\n",
    # ... or the other way round, in lines just under MAX_LINE_LENGTH.
    "long-lines": b"250-" + b"x" * (MAX_LINE_LENGTH - 8) + b"\r\n",
}


@PIPELINING
@pytest.mark.parametrize("line", ENDLESS.values(), ids=ENDLESS.keys())
def test_an_endless_multi_line_reply_stops_at_the_limits(
    scripted: Scripted, good: SMTPServer, line: bytes, pipelining: bool
) -> None:
    endless = Endless(line * 64)
    server = hostile(scripted, pipelining, MAIL=[b"250 2.1.0 Ok\r\n", endless])
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPProtocolError
    assert str(error) == "reply too large"
    # The client stopped at its limits, long before the server would have run out.
    assert endless.sent < endless.limit
    session = session_at(server)
    assert wire(session) == MESSAGE_1[pipelining]  # none of its lines
    check_failed_session(session, error)
    check_batch(messages, error, ["sent", "not_sent", "not_sent"], good)


OVERLONG: dict[str, Callable[[], Answer]] = {
    "ended": lambda: b"250 " + b"x" * MAX_LINE_LENGTH + b"\r\n",
    "never-ended": lambda: Endless(b"250 " + b"x" * 65532),
}


@PIPELINING
@pytest.mark.parametrize("make_line", OVERLONG.values(), ids=OVERLONG.keys())
def test_an_over_long_line_as_the_verdict(
    scripted: Scripted, good: SMTPServer, make_line: Callable[[], Answer], pipelining: bool
) -> None:
    # Message 2's content went out whole, and its verdict is not a reply: "unknown".
    line = make_line()
    server = hostile(scripted, pipelining, END=[b"250 2.0.0 Ok: queued as Q1\r\n", line])
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPProtocolError
    assert str(error) == "reply line too long"
    if isinstance(line, Endless):
        assert line.sent < line.limit
    session = session_at(server)
    expected_wire = [said.replace("SCRIPTED1", "Q1") for said in MESSAGE_2_CONTENT[pipelining]]
    assert wire(session) == expected_wire
    check_failed_session(session, error)
    check_batch(messages, error, ["sent", "unknown", "not_sent"], good)


@PIPELINING
def test_a_server_that_stops_reading_the_content(
    scripted: Scripted, good: SMTPServer, pipelining: bool
) -> None:
    stop = StopReading(take=65536)
    server = hostile(scripted, pipelining, DATA=[b"354 End data with <CR><LF>.<CR><LF>\r\n", stop])
    # Small buffers on the server's side: the client's writes fill them quickly.
    server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    messages = batch()
    # Message 2 of about 5.5 MB: more than the kernel buffers on both sides hold (here up
    # to 4 MiB to send).
    messages[1].body = ("0123456789abcdef" * 4 + "\n") * 85_000

    try:
        error = send(server, messages, timeout=TIMEOUT)
    finally:
        stop.released.set()

    assert type(error) is SMTPTimeoutError
    assert isinstance(error, TimeoutError)
    assert "sending" in str(error)  # stuck writing, not waiting for a reply
    outcome = outcome_of(messages[1])
    assert len(stop.taken) == 65536 < outcome.size
    session = session_at(server)
    # Message 2's content was queued (so it is in the transcript) but never all
    # written: the server cannot have taken it. Not "unknown": it goes in the retry.
    expected_wire = MESSAGE_2_CONTENT[pipelining]
    if pipelining:  # Message 3 waits for room behind Message 2's content
        expected_wire = expected_wire[: -len(mail(3))]
    assert wire(session) == expected_wire
    check_failed_session(session, error)
    # Writing until the buffers were full, then TIMEOUT without progress.
    assert TIMEOUT <= waited(session) < TIMEOUT + GRACE
    assert stored(session)[1] == ("Message 2", "not_sent", None, "")
    assert stored_recipients(session)[1] == ("to2@example.com", True, 250)
    check_batch(messages, error, ["sent", "not_sent", "not_sent"], good)
    [retried, _] = good.messages
    assert retried.content.count(b"\n") > 85_000  # the whole of it, this time


def test_a_reply_before_any_command(scripted: Scripted, good: SMTPServer) -> None:
    # A second reply right behind the greeting: out of step before EHLO.
    server = hostile(
        scripted, False, GREETING=b"220 hostile.test ESMTP\r\n250 2.0.0 Ok, before you ask\r\n"
    )
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPOutOfStepError
    assert str(error) == "The server sent a reply to no command"
    session = session_at(server)
    assert wire(session) == ["S: 220 hostile.test ESMTP", "S: 250 2.0.0 Ok, before you ask"]
    check_failed_session(session, error)
    assert stored(session) == []
    check_batch(messages, error, ["not_sent", "not_sent", "not_sent"], good)


@pytest.mark.parametrize(
    "pipelining",
    [False, True],
    ids=["one-by-one", "pipelined"],
)
def test_a_reply_to_no_command_mid_batch(
    scripted: Scripted, good: SMTPServer, pipelining: bool
) -> None:
    # Message 1's verdict comes with a second reply behind it, in one write.
    verdict = b"250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok, and again\r\n"
    server = hostile(scripted, pipelining, END=[verdict, b"250 2.0.0 Ok: queued as Q2\r\n"])
    messages = batch()

    error = send(server, messages)

    # Either of the two replies may have been Message 1's verdict: it is unknown.
    assert type(error) is SMTPOutOfStepError
    if pipelining:
        # Message 2's commands were out already: the surplus reply was taken for its
        # MAIL's, and the shift shows at once at RCPT, answered "2.1.0" (a sender's).
        assert str(error) == "The server answered RCPT with 250 2.1.0 Ok: out of step"
    else:  # seen at once, before Message 2's MAIL goes out
        assert str(error) == "The server sent a reply to no command: 250 2.0.0 Ok, and again"
    check_batch(messages, error, ["unknown", "not_sent", "not_sent"], good)
    session = session_at(server)
    check_failed_session(session, error)
    assert stored(session)[0] == ("Message 1", "unknown", None, "")
    if not pipelining:
        first = [said.replace("SCRIPTED1", "Q1") for said in MESSAGE_1[False][:8]]
        assert wire(session) == [*first, "S: 250 2.0.0 Ok, and again"]


CLOSING_421 = b"421 4.3.2 Service shutting down\r\n"


@PIPELINING
def test_a_421_answering_the_content_mid_batch(
    scripted: Scripted, good: SMTPServer, pipelining: bool
) -> None:
    server = hostile(
        scripted, pipelining, END=[b"250 2.0.0 Ok: queued as Q1\r\n", Closing(CLOSING_421)]
    )
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPServerDisconnected
    assert error.reply is not None and error.reply.code == 421 and error.is_transient
    session = session_at(server)
    expected_wire = [said.replace("SCRIPTED1", "Q1") for said in MESSAGE_2_CONTENT[pipelining]]
    assert wire(session) == [*expected_wire, "S: 421 4.3.2 Service shutting down"]
    check_failed_session(session, error)
    # The 421 is Message 2's verdict: not taken, for now. Not "unknown".
    assert stored(session)[:2] == [
        ("Message 1", "sent", 250, "2.0.0"),
        ("Message 2", "deferred", 421, "4.3.2"),
    ]
    check_batch(messages, error, ["sent", "deferred", "not_sent"], good)


@PIPELINING
def test_a_421_answering_a_recipient_mid_batch(
    scripted: Scripted, good: SMTPServer, pipelining: bool
) -> None:
    server = hostile(scripted, pipelining, RCPT=[b"250 2.1.5 Ok\r\n", Closing(CLOSING_421)])
    messages = batch()

    error = send(server, messages)

    assert type(error) is SMTPServerDisconnected
    assert error.reply is not None and error.reply.code == 421 and error.is_transient
    session = session_at(server)
    check_failed_session(session, error)
    expected_wire = {
        False: [*MESSAGE_1[False], "S: 250 2.1.0 Ok", "C: RCPT TO:<to2@example.com>"],
        True: [*MESSAGE_1[True], "S: 250 2.1.0 Ok"],
    }[pipelining]
    assert wire(session) == [*expected_wire, "S: 421 4.3.2 Service shutting down"]
    assert stored_recipients(session) == [
        ("to1@example.com", True, 250),
        ("to2@example.com", False, 421),
    ]
    assert stored(session) == [
        ("Message 1", "sent", 250, "2.0.0"),
        ("Message 2", "deferred", 421, "4.3.2"),  # its only recipient's refusal
    ]
    check_batch(messages, error, ["sent", "deferred", "not_sent"], good)
