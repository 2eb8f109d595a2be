"""PIPELINING (RFC 2920) on the wire, against a server of our own that answers a
command group only once all of it has arrived: a client that waited for each reply
would wait for ever (the tests' timeout), so passing shows the grouping."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from django_sockmail.models import Session
from tests.servers import Conversation, backend_for

pytestmark = pytest.mark.django_db(transaction=True)

EHLO = b"250-pipes.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


def group_answering_server(refuse: set[bytes] = frozenset()) -> Any:  # type: ignore[assignment]
    """Reads each envelope group up to DATA before answering any of it."""

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", EHLO)
        c.groups = []  # type: ignore[attr-defined]
        while True:
            group = []
            while True:
                line = c.readline()
                group.append(line)
                if line in (b"DATA", b"QUIT"):
                    break
            c.groups.append(group)  # type: ignore[attr-defined]
            if line == b"QUIT":
                c.send(b"221 bye\r\n")
                return
            replies = []
            accepted = False
            for cmd in group[:-1]:
                refused = any(cmd.endswith(r) for r in refuse)
                replies.append(b"550 5.1.1 no\r\n" if refused else b"250 ok\r\n")
                accepted |= cmd.startswith(b"RCPT") and not refused
            replies.append(b"354 go\r\n" if accepted else b"554 no valid recipients\r\n")
            c.send(b"".join(replies))  # all the group's replies in one write
            if accepted:  # (else the next group starts with RSET)
                c.read_data()
                c.send(b"250 2.0.0 Ok: queued as Q%d\r\n" % len(c.groups))  # type: ignore[attr-defined]

    return script


def message(*to: str) -> EmailMessage:
    return EmailMessage("s", "b", "from@example.org", list(to))


def test_the_envelope_goes_in_one_group(scripted: Any) -> None:
    server = scripted(group_answering_server())
    backend = backend_for(server, timeout=3)
    sent = backend.send_messages([message("a@example.org", "b@example.org"), message("c@x.org")])
    assert sent == 2
    groups = server.conversations[0].groups
    assert groups[0] == [
        b"MAIL FROM:<from@example.org>",
        b"RCPT TO:<a@example.org>",
        b"RCPT TO:<b@example.org>",
        b"DATA",
    ]
    assert groups[1] == [b"RSET", b"MAIL FROM:<from@example.org>", b"RCPT TO:<c@x.org>", b"DATA"]
    assert Session.objects.get().sent_count == 2


def test_each_recipient_gets_its_own_reply_from_a_group(scripted: Any) -> None:
    server = scripted(group_answering_server(refuse={b"<b@example.org>"}))
    msg = message("a@example.org", "b@example.org", "c@example.org")
    assert backend_for(server, timeout=3).send_messages([msg]) == 1
    outcome = msg.sockmail_outcome  # type: ignore[attr-defined]
    assert [(r.address, r.accepted) for r in outcome.recipients] == [
        ("a@example.org", True),
        ("b@example.org", False),
        ("c@example.org", True),
    ]
    assert outcome.status == "partial" and outcome.queue_id == "Q1"


def test_every_recipient_refused_in_a_group(scripted: Any) -> None:
    import smtplib

    server = scripted(group_answering_server(refuse={b"<a@example.org>"}))
    first, second = message("a@example.org"), message("ok@example.org")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend_for(server, timeout=3).send_messages([first, second])
    assert info.value.unsent_messages == [first, second]  # type: ignore[attr-defined]
    assert first.sockmail_outcome.status == "failed"  # type: ignore[attr-defined]


def test_pipelining_can_be_turned_off(scripted: Any) -> None:
    def script(c: Conversation) -> None:  # answers each command at once
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", EHLO)
        c.take_message()
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    with override_settings(SOCKMAIL={"PIPELINING": False}):
        assert backend_for(server, timeout=3).send_messages([message("a@example.org")]) == 1


def test_chunking_and_pipelining_make_a_message_one_round_trip(scripted: Any) -> None:
    body = "line one\n.a line that DATA would have to dot-stuff\n"

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", b"250-pipes.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        c.bdat = []  # type: ignore[attr-defined]
        for n in range(2):
            # Nothing is answered until the whole group, content included, is in.
            first = [c.readline() for _ in range(2 if n == 0 else 3)]
            bdat = c.readline()
            size = int(bdat.split()[1])
            c.bdat.append((first, bdat, c.read_exact(size)))  # type: ignore[attr-defined]
            c.send(b"250 ok\r\n" * (len(first)) + b"250 2.0.0 queued as C%d\r\n" % n)
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    messages = [EmailMessage("s", body, "from@example.org", [f"{n}@example.org"]) for n in "ab"]
    assert backend_for(server, timeout=3).send_messages(messages) == 2
    (first, bdat, content), (second, _, _) = server.conversations[0].bdat
    assert first == [b"MAIL FROM:<from@example.org>", b"RCPT TO:<a@example.org>"]
    assert bdat == f"BDAT {len(content)} LAST".encode()
    assert b"\r\n.a line that DATA would have to dot-stuff\r\n" in content  # exact bytes
    assert second[0] == b"RSET"
    assert [m.sockmail_outcome.queue_id for m in messages] == ["C0", "C1"]  # type: ignore[attr-defined]
    lines = list(Session.objects.get().lines.values_list("direction", "text"))
    assert ("C", f"BDAT {len(content)} LAST") in lines


def test_a_message_can_ask_for_delivery_status_notifications(scripted: Any) -> None:
    from django_sockmail import DSN

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", b"250-pipes.test\r\n250 DSN\r\n")
        c.take_message()
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    msg = message("a@example.org")
    msg.sockmail_dsn = DSN(notify=("FAILURE", "DELAY"), ret="HDRS", envid="inv-7")  # type: ignore[attr-defined]
    assert backend_for(server, timeout=3).send_messages([msg]) == 1
    mail, rcpt = server.lines[1], server.lines[2]
    assert mail.endswith(b" RET=HDRS ENVID=inv-7")
    assert rcpt == b"RCPT TO:<a@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@example.org"
