"""Every way a session can fail, each produced by a real exchange (aiosmtpd or a scripted
server): the smtplib exception Django code expects, ``fail_silently`` turning it into a
0 return, and the session recorded with what was said up to the failure."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.mail import EmailMessage, send_mail

from django_sockmail import outcome_of
from django_sockmail.models import Message, Recipient, Session
from django_sockmail.smtp.errors import SMTPProtocolError
from tests.instances import free_port
from tests.servers import (
    DROP,
    STALL,
    Answer,
    MakeServer,
    Responder,
    Scripted,
    SMTPServer,
    backend_for,
    note_mail_from,
)
from tests.toolkit import client_commands, server_lines, transcript

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "from@example.com"


@dataclass
class Target:
    host: str
    port: int
    responder: Responder | None = None
    server: SMTPServer | None = None


def send(target: Target, recipients: list[str] | None = None, **kwargs: Any) -> int:
    return send_mail(
        "Subject",
        "Body",
        SENDER,
        recipients or ["to@example.com"],
        connection=backend_for(target, **kwargs),
    )


@pytest.fixture
def script(scripted: Scripted) -> Callable[..., Target]:
    """Start a :class:`Responder` with some replies changed: ``script(MAIL=b"553 …")``."""

    def start(**replies: Answer | list[Answer]) -> Target:
        responder = Responder(replies)
        server = scripted(responder)
        return Target(server.host, server.port, responder=responder)

    return start


def smtpd_target(server: SMTPServer) -> Target:
    return Target(server.host, server.port, server=server)


# The failure cases, each started by a function of (script, make_smtpd).

Start = Callable[[Callable[..., Target], MakeServer], Target]


@dataclass
class Case:
    start: Start
    error: type[smtplib.SMTPException]
    recipients: list[str] = field(default_factory=lambda: ["to@example.com"])
    options: dict[str, Any] = field(default_factory=dict)


def _nothing_listening(script: Callable[..., Target], make_smtpd: MakeServer) -> Target:
    return Target("127.0.0.1", free_port())


def _scripted(**replies: Answer | list[Answer]) -> Start:
    return lambda script, make_smtpd: script(**replies)


def _without_smtputf8(script: Callable[..., Target], make_smtpd: MakeServer) -> Target:
    return smtpd_target(make_smtpd(enable_SMTPUTF8=False))


CASES = {
    "connection-refused": Case(_nothing_listening, smtplib.SMTPConnectError),
    "greeting-554": Case(
        _scripted(GREETING=b"554 5.3.2 No SMTP service here\r\n"), smtplib.SMTPConnectError
    ),
    "ehlo-and-helo-refused": Case(
        _scripted(EHLO=b"502 5.5.2 No EHLO\r\n", HELO=b"501 5.5.4 No HELO either\r\n"),
        smtplib.SMTPHeloError,
    ),
    "mail-553": Case(
        _scripted(MAIL=b"553 5.7.1 Sender address rejected\r\n"), smtplib.SMTPSenderRefused
    ),
    "every-rcpt-550": Case(
        _scripted(RCPT=b"550 5.1.1 No such user\r\n"),
        smtplib.SMTPRecipientsRefused,
        recipients=["a@example.com", "b@example.com"],
    ),
    "data-554": Case(_scripted(DATA=b"554 5.5.1 No valid recipients\r\n"), smtplib.SMTPDataError),
    "end-of-data-552": Case(
        _scripted(END=b"552 5.3.4 Message too big for system\r\n"), smtplib.SMTPDataError
    ),
    "421-at-rcpt": Case(
        _scripted(RCPT=b"421 4.3.2 Service shutting down\r\n"), smtplib.SMTPServerDisconnected
    ),
    "dropped-at-data": Case(_scripted(DATA=DROP), smtplib.SMTPServerDisconnected),
    "stall": Case(_scripted(MAIL=STALL), smtplib.SMTPServerDisconnected, options={"timeout": 0.5}),
    "malformed-greeting": Case(_scripted(GREETING=b"hello\r\n"), SMTPProtocolError),
    "malformed-ehlo": Case(_scripted(EHLO=b"250-a\r\n251 b\r\n"), SMTPProtocolError),
    "no-smtputf8": Case(
        _without_smtputf8, smtplib.SMTPNotSupportedError, recipients=["josé@example.com"]
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_failure_raises_its_smtplib_error_and_is_recorded(
    case: Case, script: Callable[..., Target], make_smtpd: MakeServer
) -> None:
    target = case.start(script, make_smtpd)

    with pytest.raises(case.error) as excinfo:
        send(target, case.recipients, **case.options)

    assert isinstance(excinfo.value, smtplib.SMTPException)
    session = Session.objects.get()
    assert (session.host, session.port) == (target.host, target.port)
    assert any(d == "*" and t.startswith("connecting to") for d, t in transcript(session))
    assert session.status == "failed" or Message.objects.get().status in ("failed", "not_sent")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fail_silently_turns_each_failure_into_0(
    case: Case, script: Callable[..., Target], make_smtpd: MakeServer
) -> None:
    target = case.start(script, make_smtpd)

    assert send(target, case.recipients, fail_silently=True, **case.options) == 0

    assert Session.objects.count() == 1


# Each failure in detail.


def test_connection_refused(script: Callable[..., Target], make_smtpd: MakeServer) -> None:
    target = _nothing_listening(script, make_smtpd)

    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        send(target)

    assert isinstance(excinfo.value, smtplib.SMTPException)
    session = Session.objects.get()
    assert session.status == "failed"
    assert session.peer_address == ""
    assert f"127.0.0.1:{target.port}" in session.error
    assert transcript(session)[0] == ("*", f"connecting to 127.0.0.1 port {target.port}")
    assert client_commands(session) == []


def test_a_554_greeting_is_a_connect_error(script: Callable[..., Target]) -> None:
    target = script(GREETING=b"554 5.3.2 No SMTP service here\r\n")

    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        send(target)

    assert excinfo.value.smtp_code == 554
    assert excinfo.value.smtp_error == b"5.3.2 No SMTP service here"
    session = Session.objects.get()
    assert session.status == "failed"
    assert server_lines(session) == ["554 5.3.2 No SMTP service here"]
    assert target.responder is not None
    target.responder.wait()
    assert not any(c.startswith(("MAIL", "RCPT")) for c in client_commands(session))


def test_ehlo_and_helo_refused_is_a_helo_error(script: Callable[..., Target]) -> None:
    target = script(EHLO=b"502 5.5.2 No EHLO\r\n", HELO=b"501 5.5.4 No HELO either\r\n")

    with pytest.raises(smtplib.SMTPHeloError) as excinfo:
        send(target)

    assert excinfo.value.smtp_code == 501
    session = Session.objects.get()
    assert session.status == "failed"
    assert [c.split()[0] for c in client_commands(session)] == ["EHLO", "HELO"]
    assert server_lines(session)[-2:] == ["502 5.5.2 No EHLO", "501 5.5.4 No HELO either"]


def test_a_refused_sender(script: Callable[..., Target]) -> None:
    target = script(MAIL=b"553 5.7.1 Sender address rejected\r\n")

    with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
        send(target)

    assert excinfo.value.sender == SENDER
    assert excinfo.value.smtp_code == 553
    assert target.responder is not None
    target.responder.wait()
    session = Session.objects.get()
    commands = client_commands(session)
    mail = next(i for i, c in enumerate(commands) if c.startswith("MAIL"))
    assert commands[mail] == f"MAIL FROM:<{SENDER}>"
    assert not any(c.startswith(("RCPT", "DATA")) for c in commands)
    assert "553 5.7.1 Sender address rejected" in server_lines(session)
    message = Message.objects.get()
    assert (message.status, message.reply_code) == ("failed", 553)


def test_every_recipient_refused(smtpd: SMTPServer) -> None:
    refused = ["a@refused.test", "b@refused.test"]

    with pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
        send(smtpd_target(smtpd), refused)

    assert excinfo.value.recipients == {
        address: (550, b"5.1.1 No such user here") for address in refused
    }
    assert smtpd.messages == []
    session = Session.objects.get()
    assert not any(c.startswith("DATA") for c in client_commands(session))
    assert Message.objects.get().status == "failed"
    rows = Recipient.objects.order_by("id")
    assert [(r.address, r.accepted, r.reply_code) for r in rows] == [
        (address, False, 550) for address in refused
    ]


def test_some_recipients_refused_delivers_to_the_rest(smtpd: SMTPServer) -> None:
    message = EmailMessage("Subject", "Body", SENDER, ["ok@example.com", "nobody@refused.test"])

    assert backend_for(smtpd_target(smtpd)).send_messages([message]) == 1

    [received] = smtpd.messages
    assert received.rcpt_tos == ["ok@example.com"]
    assert outcome_of(message).status == "partial"
    assert Message.objects.get().status == "partial"
    rows = {r.address: r for r in Recipient.objects.all()}
    assert (rows["ok@example.com"].accepted, rows["ok@example.com"].reply_code) == (True, 250)
    nobody = rows["nobody@refused.test"]
    assert (nobody.accepted, nobody.reply_code, nobody.enhanced_status) == (False, 550, "5.1.1")
    assert nobody.reply_text == "5.1.1 No such user here"


def test_data_refused(script: Callable[..., Target]) -> None:
    target = script(DATA=b"554 5.5.1 No valid recipients\r\n")

    with pytest.raises(smtplib.SMTPDataError) as excinfo:
        send(target)

    assert excinfo.value.smtp_code == 554
    assert target.responder is not None
    target.responder.wait()
    assert target.responder.messages == []
    message = Message.objects.get()
    assert (message.status, message.reply_code) == ("failed", 554)
    session = Session.objects.get()
    lines = transcript(session)
    assert ("C", "DATA") in lines  # the content was refused, not never offered
    assert not any(d == "D" for d, _ in lines)


def test_end_of_data_refused(smtpd: SMTPServer) -> None:
    smtpd.handler.data_reply = "552 5.3.4 Message too big for system"

    with pytest.raises(smtplib.SMTPDataError) as excinfo:
        send(smtpd_target(smtpd))

    assert excinfo.value.smtp_code == 552
    message = Message.objects.get()
    assert (message.status, message.reply_code, message.enhanced_status) == ("failed", 552, "5.3.4")
    session = Session.objects.get()
    lines = transcript(session)
    content = next(i for i, (d, _) in enumerate(lines) if d == "D")
    assert lines[content + 1] == ("S", "552 5.3.4 Message too big for system")


def test_a_421_mid_session_is_a_disconnect(script: Callable[..., Target]) -> None:
    target = script(RCPT=b"421 4.3.2 Service shutting down\r\n")

    with pytest.raises(smtplib.SMTPServerDisconnected) as excinfo:
        send(target)

    reply = getattr(excinfo.value, "reply", None)
    assert reply is not None and reply.code == 421
    session = Session.objects.get()
    assert session.status == "failed"
    assert server_lines(session)[-1] == "421 4.3.2 Service shutting down"
    assert client_commands(session)[-1] == "RCPT TO:<to@example.com>"
    assert Message.objects.get().status == "deferred"  # 421: a 4xx, worth a retry


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "END"])
def test_a_dropped_connection_mid_transaction_is_a_disconnect(
    script: Callable[..., Target], verb: str
) -> None:
    target = script(**{verb: DROP})

    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(target)

    session = Session.objects.get()
    assert session.status == "failed"
    assert session.error.startswith("SMTPServerDisconnected")
    lines = transcript(session)
    last_said = next(line for line in reversed(lines) if line[0] in ("C", "D"))
    expected = "D" if verb == "END" else "C"
    assert last_said[0] == expected
    if verb != "END":
        assert last_said[1].startswith(verb)
    assert Message.objects.get().status != "sent"


def test_a_stalled_server_times_out(script: Callable[..., Target]) -> None:
    target = script(MAIL=STALL)
    started = time.monotonic()

    with pytest.raises(smtplib.SMTPServerDisconnected) as excinfo:
        send(target, timeout=0.5)

    assert time.monotonic() - started < 4
    assert isinstance(excinfo.value, TimeoutError)
    session = Session.objects.get()
    assert session.status == "timeout"
    assert "timed out" in session.error.lower()
    assert client_commands(session)[-1].startswith("MAIL FROM:")


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param({"GREETING": b"hello\r\n"}, id="greeting-without-code"),
        pytest.param({"EHLO": b"250-a\r\n251 b\r\n"}, id="code-changes-in-multiline"),
        pytest.param({"MAIL": b"2500 Ok\r\n"}, id="four-digit-code"),
    ],
)
def test_a_malformed_reply_is_a_protocol_error(
    script: Callable[..., Target], replies: dict[str, bytes]
) -> None:
    assert issubclass(SMTPProtocolError, smtplib.SMTPException)
    target = script(**replies)

    with pytest.raises(SMTPProtocolError):
        send(target)

    session = Session.objects.get()
    assert session.status == "failed"
    assert session.error.startswith("SMTPProtocolError")
    assert not any(c.startswith("DATA") for c in client_commands(session))


def test_a_non_ascii_local_part_needs_smtputf8(make_smtpd: MakeServer) -> None:
    server = make_smtpd(enable_SMTPUTF8=False)
    mail_from = note_mail_from(server)

    with pytest.raises(smtplib.SMTPNotSupportedError):
        send(smtpd_target(server), ["josé@example.com"])

    assert mail_from == []
    assert server.messages == []
    message = Message.objects.get()
    assert message.status == "not_sent"  # refused locally, never offered to the server
    assert "SMTPUTF8" in message.error
    assert not any(c.startswith("MAIL") for c in client_commands(Session.objects.get()))


def test_a_non_ascii_local_part_is_delivered_with_smtputf8(smtpd: SMTPServer) -> None:
    assert send(smtpd_target(smtpd), ["josé@example.com"]) == 1

    [received] = smtpd.messages
    assert received.rcpt_tos == ["josé@example.com"]
    assert "SMTPUTF8" in received.mail_options
    assert Message.objects.get().status == "sent"


def test_a_batch_stopped_by_a_refusal_says_what_was_and_was_not_sent(
    script: Callable[..., Target],
) -> None:
    target = script(DATA=[b"354 go ahead\r\n", b"554 5.7.1 Not this one\r\n", b"354 go ahead\r\n"])
    messages = [EmailMessage(f"Message {n}", "Body", SENDER, ["to@example.com"]) for n in (1, 2, 3)]

    with pytest.raises(smtplib.SMTPDataError) as excinfo:
        backend_for(target).send_messages(messages)

    error: Any = excinfo.value
    assert error.smtp_code == 554
    assert list(error.sent_messages) == messages[:1]
    assert list(error.unsent_messages) == messages[1:]
    statuses = [outcome_of(m).status for m in messages]
    assert statuses == ["sent", "failed", "not_sent"]
    assert target.responder is not None
    target.responder.wait()
    assert len(target.responder.messages) == 1
    rows = list(Message.objects.order_by("position").values_list("subject", "status"))
    assert rows[:2] == [("Message 1", "sent"), ("Message 2", "failed")]
    assert ("Message 3", "sent") not in rows


def test_a_batch_with_fail_silently_goes_on_after_a_refusal(script: Callable[..., Target]) -> None:
    target = script(DATA=[b"354 go ahead\r\n", b"554 5.7.1 Not this one\r\n", b"354 go ahead\r\n"])
    messages = [EmailMessage(f"Message {n}", "Body", SENDER, ["to@example.com"]) for n in (1, 2, 3)]

    assert backend_for(target, fail_silently=True).send_messages(messages) == 2

    statuses = [outcome_of(m).status for m in messages]
    assert statuses == ["sent", "failed", "sent"]


def test_a_batch_that_never_got_a_session_has_every_message_unsent() -> None:
    # A retry of error.unsent_messages must resend the whole batch, not nothing.
    target = Target("127.0.0.1", free_port())
    messages = [EmailMessage(f"Message {n}", "Body", SENDER, ["to@example.com"]) for n in (1, 2)]

    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        backend_for(target).send_messages(messages)

    error: Any = excinfo.value
    assert list(error.sent_messages) == []
    assert list(error.unsent_messages) == messages
    statuses = [outcome_of(m).status for m in messages]
    assert statuses == ["not_sent", "not_sent"]
