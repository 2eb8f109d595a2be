"""Servers that refuse commands written behind the end of the data before its verdict.

RFC 2920 lets a client write the next transaction behind the content of the one
before; Haraka 3.3.4 (against SMTP smuggling) answers each such command 503 and runs
none of them. The client takes those 503s for what they are: the messages they
stopped were never offered, so they are offered again, each after the verdict on
the one before; a QUIT refused so is said again; and the server is remembered for
the life of the process, so later sessions to it write nothing behind the data.
Behind ``BDAT … LAST`` nothing changes: RFC 3030 lets BDAT transactions be pipelined.
tests/test_haraka.py shows the same against a real Haraka.
"""

from __future__ import annotations

import email
import smtplib
from functools import partial
from typing import Any

import pytest
from django.test import override_settings

from django_sockmail.models import Session
from tests import toolkit
from tests.faults import (
    EHLO_PIPELINING,
    HostileResponder,
    RefusesBehindData,
    written_behind_data,
)
from tests.servers import Scripted, backend_for
from tests.toolkit import statuses

pytestmark = pytest.mark.django_db

EHLO_CHUNKING = b"250-refuses.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"


batch = partial(toolkit.batch, first=1, subject="Message {n}", body="Body", domain="example.com")


def subjects(responder: RefusesBehindData) -> list[str]:
    return [str(email.message_from_bytes(m)["Subject"]) for m in responder.messages]


def test_a_batch_completes_and_the_server_is_remembered(scripted: Scripted) -> None:
    responder = RefusesBehindData(pipelining=True)
    server = scripted(responder)
    first, second = batch(5, subject="Message a{n}"), batch(3, subject="Message b{n}")

    assert backend_for(server).send_messages(first) == 5
    assert statuses(first) == ["sent"] * 5
    # Only the first transaction behind the data was refused: its three commands.
    assert responder.refused == [
        b"MAIL FROM:<from@example.com>",
        b"RCPT TO:<to2@example.com>",
        b"DATA",
    ]
    assert subjects(responder) == [m.subject for m in first]  # each once, in order

    assert backend_for(server).send_messages(second) == 3
    assert len(responder.refused) == 3  # no refusal in the second session
    assert subjects(responder) == [m.subject for m in first + second]
    sessions = Session.objects.order_by("id")
    assert written_behind_data(sessions[1]) == []
    # The envelope is still pipelined: MAIL, RCPT and DATA before any reply.
    wire = [f"{line.direction}: {line.text}" for line in sessions[1].transcript_lines()]
    mail = next(i for i, said in enumerate(wire) if said.startswith("C: MAIL"))
    assert [said[:7] for said in wire[mail : mail + 3]] == ["C: MAIL", "C: RCPT", "C: DATA"]


def test_a_quit_refused_behind_the_data_is_said_again_and_not_next_time(
    scripted: Scripted,
) -> None:
    responder = RefusesBehindData(pipelining=True)
    server = scripted(responder)

    for message in batch(3):
        assert backend_for(server).send_messages([message]) == 1

    assert responder.refused == [b"QUIT"]  # the first call's only
    for session in Session.objects.order_by("id"):
        lines = [(line.direction, line.text) for line in session.transcript_lines()]
        assert ("S", "221 2.0.0 Bye") in lines
    assert [written_behind_data(s) for s in Session.objects.order_by("id")] == [["QUIT"], [], []]


def test_a_refused_transaction_is_not_offered_again_once_the_caller_stopped(
    scripted: Scripted,
) -> None:
    # Message 1's content is refused (the batch stops there, as Django's backend
    # does); message 2's commands, written behind it, were refused for coming early:
    # never offered, so never sent, and not offered again.
    responder = RefusesBehindData({"END": b"554 5.7.1 No thanks\r\n"}, pipelining=True)
    server = scripted(responder)
    messages = batch(3)

    with pytest.raises(smtplib.SMTPDataError) as info:
        backend_for(server).send_messages(messages)

    assert statuses(messages) == ["failed", "not_sent", "not_sent"]
    assert list(info.value.unsent_messages) == messages  # type: ignore[attr-defined]
    assert responder.messages == [responder.messages[0]]  # only message 1's content


def test_a_503_after_a_refused_mail_is_about_that_mail_not_early_commands(
    scripted: Scripted,
) -> None:
    # Message 2's MAIL, written behind message 1's data, is refused for its sender;
    # its RCPT and DATA then get 503 (no MAIL): a refusal of message 2, not of
    # commands that came early. It is not offered again.
    responder = HostileResponder(
        {
            "MAIL": [b"250 2.1.0 Ok\r\n", b"550 5.1.8 Sender refused\r\n"],
            "RCPT": [b"250 2.1.5 Ok\r\n", b"503 5.5.1 Need MAIL\r\n"],
            "DATA": [b"354 Go\r\n", b"503 5.5.1 Need RCPT\r\n"],
        },
        pipelining=True,
    )
    server = scripted(responder)
    messages = batch(3)

    with pytest.raises(smtplib.SMTPSenderRefused):
        backend_for(server).send_messages(messages)

    assert statuses(messages) == ["sent", "failed", "not_sent"]
    mails = [line for line in server.lines if line.startswith(b"MAIL")]
    assert len(mails) == 2  # message 2 was not offered again


def test_behind_bdat_last_the_next_transaction_stays_pipelined(scripted: Any) -> None:
    # The server refused commands behind DATA once (CHUNKING turned off); with
    # CHUNKING the next session still writes its transactions back to back.
    responder = RefusesBehindData({"EHLO": EHLO_CHUNKING}, pipelining=True)
    server = scripted(responder)
    with override_settings(SOCKMAIL={"CHUNKING": False}):
        assert backend_for(server).send_messages(batch(2, subject="Message data{n}")) == 2
    assert responder.refused  # learnt

    assert backend_for(server).send_messages(batch(3, subject="Message bdat{n}")) == 3

    session = Session.objects.order_by("id").last()
    assert session is not None
    wire = [f"{line.direction}: {line.text.split(' ')[0]}" for line in session.transcript_lines()]
    first_verdict = wire.index("S: 250", wire.index("C: BDAT"))
    assert wire.count("C: BDAT") == 3
    assert wire[:first_verdict].count("C: BDAT") == 3  # all three before any verdict
    assert len(responder.refused) == 3  # nothing more refused


def test_a_server_that_takes_commands_behind_the_data_gets_them(scripted: Scripted) -> None:
    # The other side: a server that never refused is written to behind the data.
    server = scripted(HostileResponder({"EHLO": EHLO_PIPELINING}, pipelining=True))
    assert backend_for(server).send_messages(batch(2)) == 2
    behind = written_behind_data(Session.objects.get())
    assert [said.split(" ")[0] for said in behind] == ["MAIL", "RCPT", "DATA", "QUIT"]
