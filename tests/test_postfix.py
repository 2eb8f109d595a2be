"""Interop with a real Postfix (a private instance, tests/postfix.py): what the backend
sends is what Postfix delivers, byte for byte, over every way of talking to it.

Each test sends through ``django_sockmail.backend.EmailBackend`` and reads the mail
back from the instance's Maildir: a delivered message must be exactly the bytes sent
with only Postfix's own header fields (Received:, Return-Path:, X-Original-To:,
Delivered-To:) in front.
"""

from __future__ import annotations

import email.generator
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from django.core.mail import EmailMessage
from django.test import override_settings

from django_sockmail import DSN, outcome_of
from django_sockmail.models import Message, Session
from django_sockmail.rendering import render
from django_sockmail.smtp.data import normalize_line_endings
from tests.instances import where_available
from tests.postfix import PREPENDED_HEADERS, Delivered, PostfixInstance, unavailable
from tests.servers import backend_for
from tests.toolkit import client_commands, server_lines

# Skipped on a machine without Postfix, or without root to start it, but not under CI.
pytestmark = [where_available("Postfix", unavailable()), pytest.mark.django_db(transaction=True)]

DOMAIN = "sockmail.test"  # what the instance delivers; anything else it refuses
SENDER = "sender@example.org"  # outside it, so no bounce or DSN comes back to the Maildir
DATE = "Fri, 27 Nov 2026 12:00:00 +0000"
CLIENT = {"LOCAL_HOSTNAME": "client.sockmail.test"}

# Bodies that have tripped SMTP implementations: dot lines (stuffing with DATA, none
# with BDAT), 8-bit UTF-8 (BODY=8BITMIME), a line just under 998 octets, a line over it
# (Django then encodes the part as quoted-printable), bare CR and LF, no final newline.
BODIES = (
    "Plain text.\nA second line.\n",
    ".A line starting with a dot\n..two dots\n.\nafter a lone dot\n.",
    "Grüße aus Köln: äöü ß €, 漢字, emoji 📬\n8-bit throughout.\n",
    "long: " + "x" * 990 + "\nshort after it\n",
    "longer than a line may be: " + "y" * 2000 + "\n",
    "bare\rCR and bare\nLF and CRLF\r\n.\rdot after CR\n",
    "no newline at the end",
)
ATTACHMENT = bytes(range(256)) * 8  # binary: base64


@pytest.fixture(scope="session")
def postfix(server_cert: trustme.LeafCert) -> Iterator[PostfixInstance]:
    """One private Postfix for the whole run, offering STARTTLS and implicit TLS with
    the test CA's certificate; stopped (and its directory removed) however the tests
    end."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"CI=true, but {reason}")
    with PostfixInstance(
        tls_chain_pem=server_cert.private_key_and_cert_chain_pem.bytes()
    ) as instance:
        yield instance


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def fixed_mime_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same MIME boundary every time a message is rendered, so the test can render
    the exact bytes the backend sends (Django draws a random one on every render)."""
    monkeypatch.setattr(
        email.generator.Generator,
        "_make_boundary",
        classmethod(lambda cls, text=None: "=====sockmail-test-boundary====="),
    )


def make_messages(tag: str, n: int) -> list[EmailMessage]:
    messages = []
    for i in range(n):
        message = EmailMessage(
            f"{tag} {i}: Grüße" if i % 3 == 0 else f"{tag} {i}",
            BODIES[i % len(BODIES)] + f"\n-- \nmessage {i}",
            SENDER,
            [f"{tag}-{i}@{DOMAIN}"],
            headers={"Message-ID": f"<{tag}-{i}@client.{DOMAIN}>", "Date": DATE},
        )
        if i % 5 == 4:
            message.attach("data.bin", ATTACHMENT, "application/octet-stream")
            message.attach("notes.txt", "Zeile 1\n.Zeile 2\n", "text/plain")
        messages.append(message)
    return messages


def wire_bytes(message: EmailMessage) -> bytes:
    """The content the backend sends: Django's rendering, CRLF throughout."""
    return normalize_line_endings(render(message)[1])


def message_id(message: EmailMessage) -> str:
    return str(message.extra_headers["Message-ID"])


def assert_delivered_exactly(delivered: Delivered, message: EmailMessage) -> None:
    """Byte for byte what was sent, behind Postfix's own header fields only; the queue
    id in Postfix's Received: line is the one the backend recorded."""
    sent = wire_bytes(message)
    added = delivered.prepended(sent)
    assert {name.lower() for name, _ in added} <= PREPENDED_HEADERS, added
    assert [name for name, _ in added].count("Received") == 1, added
    outcome = outcome_of(message)
    assert outcome.status == "sent"
    assert outcome.size == len(sent)
    assert outcome.sha256 == hashlib.sha256(sent).hexdigest()
    assert delivered.queue_id == outcome.queue_id != ""


def send(postfix: Any, messages: list[EmailMessage], **kwargs: Any) -> int:
    settings = {**CLIENT, **kwargs.pop("sockmail", {})}
    with override_settings(SOCKMAIL=settings):
        sent: int = backend_for(postfix, **kwargs).send_messages(messages)
    return sent


@pytest.mark.parametrize("chunking", [True, False], ids=["BDAT", "DATA"])
def test_a_batch_over_one_connection_arrives_byte_for_byte(
    postfix: PostfixInstance, chunking: bool
) -> None:
    tag = "bdat" if chunking else "data"
    messages = make_messages(tag, 40)

    assert send(postfix, messages, sockmail={"CHUNKING": chunking}) == 40

    session = Session.objects.get()  # one connection for the whole batch
    assert session.status == "ok" and session.sent_count == 40
    ehlo = server_lines(session)
    assert "250-PIPELINING" in ehlo and "250 CHUNKING" in ehlo  # what Postfix offers
    commands = client_commands(session)
    sizes = [len(wire_bytes(m)) for m in messages]
    if chunking:
        # Each message in one chunk of exactly its size, never DATA.
        assert [c for c in commands if c.startswith("BDAT")] == [f"BDAT {n} LAST" for n in sizes]
        assert "DATA" not in commands
    else:
        assert commands.count("DATA") == 40
        assert not any(c.startswith("BDAT") for c in commands)
    assert sum(c.startswith("EHLO") for c in commands) == 1

    delivered = postfix.wait_for_messages(message_id(m) for m in messages)
    records = {r.message_id: r for r in Message.objects.filter(session=session)}
    log = postfix.wait_for_log(f"{delivered[message_id(messages[-1])].queue_id}: removed")
    for message in messages:
        mid = message_id(message)
        assert_delivered_exactly(delivered[mid], message)
        record = records[mid]
        assert record.status == "sent"
        assert record.sha256 == hashlib.sha256(wire_bytes(message)).hexdigest()
        assert record.queue_id == delivered[mid].queue_id
        # Postfix's own log ties the queue id to the Message-ID and the recipient.
        assert f"{record.queue_id}: message-id={mid}" in log
        assert f"{record.queue_id}: to=<{message.to[0]}>, relay=virtual" in log


def test_many_messages_over_one_opened_connection(postfix: PostfixInstance) -> None:
    messages = make_messages("many", 150)
    with override_settings(SOCKMAIL=CLIENT), backend_for(postfix) as backend:
        assert backend.send_messages(messages[:75]) == 75
        assert backend.send_messages(messages[75:]) == 75

    session = Session.objects.get()
    assert session.message_count == session.sent_count == 150
    commands = client_commands(session)
    assert sum(c.startswith("EHLO") for c in commands) == 1
    assert commands[-1] == "QUIT"
    delivered = postfix.wait_for_messages(message_id(m) for m in messages)
    queue_ids = {d.queue_id for d in delivered.values()}
    assert len(queue_ids) == 150  # 150 separate transactions, none merged or lost
    for message in messages:
        assert_delivered_exactly(delivered[message_id(message)], message)


def test_a_recipient_postfix_refuses_leaves_the_message_partly_sent(
    postfix: PostfixInstance,
) -> None:
    [message] = make_messages("partial", 1)
    message.to = [f"kept@{DOMAIN}", "elsewhere@example.net"]  # Postfix relays nowhere

    assert send(postfix, [message]) == 1

    outcome = outcome_of(message)
    assert outcome.status == "partial"
    [(address, reply)] = outcome.refused_recipients.items()
    assert address == "elsewhere@example.net"
    assert reply.code == 554 and "Relay access denied" in str(reply)
    [delivered] = postfix.wait_for_messages([message_id(message)]).values()
    assert ("Delivered-To", f"kept@{DOMAIN}") in delivered.prepended(wire_bytes(message))


def test_starttls_with_the_test_ca(postfix: PostfixInstance, cafile: str) -> None:
    messages = make_messages("starttls", 5)

    assert send(postfix, messages, use_tls=True, sockmail={"SSL_CAFILE": cafile}) == 5

    session = Session.objects.get()
    assert session.security == "starttls"
    assert session.tls_version in ("TLSv1.2", "TLSv1.3") and session.tls_cipher
    commands = client_commands(session)
    assert [c.split()[0] for c in commands[:3]] == ["EHLO", "STARTTLS", "EHLO"]
    delivered = postfix.wait_for_messages(message_id(m) for m in messages)
    for message in messages:
        d = delivered[message_id(message)]
        assert_delivered_exactly(d, message)
        assert b"with ESMTPS id" in d.raw  # Postfix saw the mail arrive over TLS


def test_implicit_tls_with_the_test_ca(postfix: PostfixInstance, cafile: str) -> None:
    messages = make_messages("smtps", 5)

    assert send(postfix.tls, messages, use_ssl=True, sockmail={"SSL_CAFILE": cafile}) == 5

    session = Session.objects.get()
    assert session.security == "ssl" and session.port == postfix.tls_port
    assert session.tls_version in ("TLSv1.2", "TLSv1.3") and session.tls_cipher
    assert "STARTTLS" not in client_commands(session)
    delivered = postfix.wait_for_messages(message_id(m) for m in messages)
    for message in messages:
        d = delivered[message_id(message)]
        assert_delivered_exactly(d, message)
        assert b"with ESMTPS id" in d.raw


def test_a_non_ascii_local_part_goes_with_smtputf8(postfix: PostfixInstance) -> None:
    [message] = make_messages("utf8", 1)
    message.to = [f"jörg.müller@{DOMAIN}"]

    assert send(postfix, [message]) == 1

    [mail] = [c for c in client_commands(Session.objects.get()) if c.startswith("MAIL")]
    assert mail.endswith(" SMTPUTF8") or " SMTPUTF8 " in mail
    [delivered] = postfix.wait_for_messages([message_id(message)]).values()
    assert_delivered_exactly(delivered, message)
    added = delivered.prepended(wire_bytes(message))
    assert ("Delivered-To", f"jörg.müller@{DOMAIN}") in added
    assert b"with UTF8SMTP id" in delivered.raw  # Postfix's name for an SMTPUTF8 session


def test_dsn_parameters_reach_postfix_and_its_success_report_comes_back(
    postfix: PostfixInstance,
) -> None:
    [message] = make_messages("dsn", 1)
    message.from_email = f"dsn-sender@{DOMAIN}"  # so the report lands in the Maildir
    message.sockmail_dsn = DSN(  # type: ignore[attr-defined]
        notify=("SUCCESS",), ret="HDRS", envid="invoice-7"
    )

    assert send(postfix, [message]) == 1

    commands = client_commands(Session.objects.get())
    assert any(
        c.startswith("MAIL") and "RET=HDRS" in c and "ENVID=invoice-7" in c for c in commands
    )
    assert any(c.startswith("RCPT") and "NOTIFY=SUCCESS" in c for c in commands)
    [delivered] = postfix.wait_for_messages([message_id(message)]).values()
    assert_delivered_exactly(delivered, message)
    # Postfix's virtual agent reports the delivery to the sender, as NOTIFY=SUCCESS asks.
    [report] = postfix.wait_for(
        lambda d: (
            b"Original-Envelope-Id: invoice-7" in d.raw and delivered.queue_id.encode() in d.raw
        ),
        count=1,
    )
    assert b"Action: delivered" in report.raw
    assert b"Delivered-To: dsn-sender@sockmail.test" in report.raw
