"""PIPELINING (RFC 2920) on the wire, against a server of our own that answers a
command group only once all of it has arrived: a client that waited for each reply
would wait for ever (the tests' timeout), so passing shows the grouping."""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from django_sockmail import outcome_of
from django_sockmail.models import Session
from django_sockmail.smtp.errors import SMTPOutOfStepError
from tests import toolkit
from tests.servers import Conversation, Responder, backend_for
from tests.toolkit import message, statuses, transcript

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


def test_the_envelope_goes_in_one_group(scripted: Any) -> None:
    server = scripted(group_answering_server())
    backend = backend_for(server, timeout=3)
    sent = backend.send_messages(
        [message(to=["a@example.org", "b@example.org"]), message(to="c@x.org")]
    )
    assert sent == 2
    groups = server.conversations[0].groups
    assert groups[0] == [
        b"MAIL FROM:<from@example.org>",
        b"RCPT TO:<a@example.org>",
        b"RCPT TO:<b@example.org>",
        b"DATA",
    ]
    # No RSET: the first transaction ended with its data (RFC 5321 §4.1.1.4).
    assert groups[1] == [b"MAIL FROM:<from@example.org>", b"RCPT TO:<c@x.org>", b"DATA"]
    assert Session.objects.get().sent_count == 2


def test_each_recipient_gets_its_own_reply_from_a_group(scripted: Any) -> None:
    server = scripted(group_answering_server(refuse={b"<b@example.org>"}))
    msg = message(to=["a@example.org", "b@example.org", "c@example.org"])
    assert backend_for(server, timeout=3).send_messages([msg]) == 1
    outcome = outcome_of(msg)
    assert [(r.address, r.accepted) for r in outcome.recipients] == [
        ("a@example.org", True),
        ("b@example.org", False),
        ("c@example.org", True),
    ]
    assert outcome.status == "partial" and outcome.queue_id == "Q1"


def test_every_recipient_refused_in_a_group(scripted: Any) -> None:
    import smtplib

    server = scripted(group_answering_server(refuse={b"<a@example.org>"}))
    first, second = message(to="a@example.org"), message(to="ok@example.org")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend_for(server, timeout=3).send_messages([first, second])
    assert info.value.unsent_messages == [first, second]  # type: ignore[attr-defined]
    assert outcome_of(first).status == "failed"


def test_pipelining_can_be_turned_off(scripted: Any) -> None:
    import smtplib

    # The only recipient is refused: a client that waits for each reply knows it before
    # DATA and never says DATA, where a pipelining one has sent DATA with the RCPT.
    responder = Responder({"EHLO": EHLO, "RCPT": b"550 5.1.1 no\r\n"})
    server = scripted(responder)
    with (
        override_settings(SOCKMAIL={"PIPELINING": False}),
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        backend_for(server, timeout=3).send_messages([message(to="a@example.org")])
    responder.wait()
    verbs = [line.split(b" ")[0] for line in server.lines]
    assert b"RCPT" in verbs and b"DATA" not in verbs


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
    assert second[0] == b"RSET"  # offered while the first's BDAT had no verdict yet
    assert [outcome_of(m).queue_id for m in messages] == ["C0", "C1"]
    lines = [(x.direction, x.text) for x in Session.objects.get().transcript_lines()]
    assert ("C", f"BDAT {len(content)} LAST") in lines


def test_a_message_can_ask_for_delivery_status_notifications(scripted: Any) -> None:
    from django_sockmail import DSN

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", b"250-pipes.test\r\n250 DSN\r\n")
        c.take_message()
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    msg = message(to="a@example.org")
    msg.sockmail_dsn = DSN(notify=("FAILURE", "DELAY"), ret="HDRS", envid="inv-7")  # type: ignore[attr-defined]
    assert backend_for(server, timeout=3).send_messages([msg]) == 1
    mail, rcpt = server.lines[1], server.lines[2]
    assert mail.endswith(b" RET=HDRS ENVID=inv-7")
    assert rcpt == b"RCPT TO:<a@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@example.org"


# Across messages: the wire, against servers that hold their replies back.


def test_the_next_envelope_goes_out_before_the_verdict_on_the_content(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        # Never answers the end of a message's data before the next envelope is in: a
        # client that waited for that verdict first would wait for ever.
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", EHLO)
        c.groups = [[c.readline() for _ in range(3)]]  # type: ignore[attr-defined]
        c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        for n in range(3):
            c.read_data()
            verdict = b"250 2.0.0 queued as D%d\r\n" % n
            if n == 2:  # the last: nothing can follow it
                c.send(verdict)
                break
            group = [c.readline()]
            while group[-1] != b"DATA":
                group.append(c.readline())
            c.groups.append(group)  # type: ignore[attr-defined]
            c.send(verdict + b"250 ok\r\n" * (len(group) - 1) + b"354 go\r\n")
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    messages = [message(to=f"{n}@example.org") for n in range(3)]
    assert backend_for(server, timeout=3).send_messages(messages) == 3
    assert [outcome_of(m).queue_id for m in messages] == ["D0", "D1", "D2"]
    groups = server.conversations[0].groups
    # The next envelope follows the content directly, with no RSET: the end of the data
    # ends the transaction whatever its verdict, which has not even come yet.
    assert groups[1] == [b"MAIL FROM:<from@example.org>", b"RCPT TO:<1@example.org>", b"DATA"]
    assert groups[2] == [b"MAIL FROM:<from@example.org>", b"RCPT TO:<2@example.org>", b"DATA"]
    assert len(groups) == 3


def test_a_call_starts_with_rset_only_after_one_that_may_have_left_a_transaction_open(
    scripted: Any,
) -> None:
    import smtplib

    # One kept connection, three calls: the second call's DATA is refused.
    server = scripted(
        Responder({"EHLO": EHLO, "DATA": [b"354 go\r\n", b"554 5.3.0 not now\r\n", b"354 go\r\n"]})
    )
    with backend_for(server, timeout=3) as backend:
        assert backend.send_messages([message(to="a@example.org")]) == 1
        with pytest.raises(smtplib.SMTPDataError):
            backend.send_messages([message(to="b@example.org")])
        assert backend.send_messages([message(to="c@example.org")]) == 1
    said = Session.objects.get().transcript_lines()
    commands = [line.text for line in said if line.direction == "C"]
    envelope = ["MAIL FROM:<from@example.org>", "RCPT TO:<{}@example.org>", "DATA"]
    a, b, c = ([line.format(n) for line in envelope] for n in "abc")
    # The first call's message was taken: its data ended the transaction, and the
    # second call starts with MAIL. The second's DATA was refused, which may leave its
    # transaction open on the server: the third call starts with RSET.
    assert commands[1:] == [*a, *b, "RSET", *c, "QUIT"]
    assert commands[0].startswith("EHLO")


CHUNKING_EHLO = b"250-pipes.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
Answer = Callable[[int, str], bytes | None]


def batch_server(count: int, answer: Answer = lambda n, verb: None) -> Any:
    """Reads ``count`` whole BDAT transactions before answering any of them, then
    answers in order: ``answer(message, verb)`` may replace a reply; a 421 or ``b""``
    (a dropped connection) ends the session there."""

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", CHUNKING_EHLO)
        c.batch = []  # type: ignore[attr-defined]
        for _ in range(count):
            lines = [c.readline()]
            while not lines[-1].startswith(b"BDAT"):
                lines.append(c.readline())
            c.batch.append((lines, c.read_exact(int(lines[-1].split()[1]))))  # type: ignore[attr-defined]
        replies = b""
        for n, (lines, _) in enumerate(c.batch):  # type: ignore[attr-defined]
            mail_refused = False
            for line in lines:
                verb = line.split()[0].decode()
                default = b"250 2.0.0 queued as B%d\r\n" % n if verb == "BDAT" else b"250 ok\r\n"
                if mail_refused and verb != "RSET":
                    default = b"503 5.5.1 need MAIL\r\n"
                reply = answer(n, verb)
                if reply == b"" or (reply or b"").startswith(b"421"):
                    c.send(replies + (reply or b""))
                    return
                mail_refused |= verb == "MAIL" and reply is not None
                replies += reply or default
        c.send(replies)
        c.expect(b"QUIT", b"221 bye\r\n")

    return script


def at(index: int, verb: str, reply: bytes) -> Answer:
    """An ``answer`` for :func:`batch_server`: ``reply`` to one command of one message."""
    return lambda n, v: reply if (n, v) == (index, verb) else None


batch = partial(toolkit.batch, to="{n}@example.org")


def test_with_chunking_a_whole_batch_goes_out_before_any_reply(scripted: Any) -> None:
    server = scripted(batch_server(5))
    messages = batch(5)
    assert backend_for(server, timeout=3).send_messages(messages) == 5
    assert [outcome_of(m).queue_id for m in messages] == [f"B{n}" for n in range(5)]
    sent = server.conversations[0].batch
    # Each later one was offered while those before were in flight, their BDATs
    # unanswered: any could be refused and leave its transaction open (RFC 3030 §4.2).
    assert [lines[0] for lines, _ in sent] == [b"MAIL FROM:<from@example.org>"] + [b"RSET"] * 4
    assert all(content.startswith(b"Content-Type: text/plain") for _, content in sent)
    session = Session.objects.get()
    assert session.sent_count == 5
    assert session.messages.filter(queue_id="B4").exists()


def test_a_sender_refused_mid_batch_fails_that_message_alone(scripted: Any) -> None:
    import smtplib

    refuse = at(1, "MAIL", b"550 5.1.8 bad sender\r\n")
    server = scripted(batch_server(4, refuse))
    messages = batch(4)
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        backend_for(server, timeout=3).send_messages(messages)
    # The rest of the batch was already on its way, and the server took it.
    assert statuses(messages) == ["sent", "failed", "sent", "sent"]
    assert info.value.sent_messages == [messages[0], *messages[2:]]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == [messages[1]]  # type: ignore[attr-defined]
    stored = list(Session.objects.get().messages.order_by("id").values_list("status", flat=True))
    assert stored == ["sent", "failed", "sent", "sent"]


def test_content_refused_mid_batch(scripted: Any) -> None:
    import smtplib

    refuse = at(2, "BDAT", b"552 5.3.4 too big\r\n")
    server = scripted(batch_server(3, refuse))
    messages = batch(3)
    with pytest.raises(smtplib.SMTPDataError) as info:
        backend_for(server, timeout=3).send_messages(messages)
    assert info.value.smtp_code == 552
    assert statuses(messages) == ["sent", "sent", "failed"]


def test_a_421_mid_batch_leaves_the_rest_not_sent(scripted: Any) -> None:
    import smtplib

    shut = at(2, "MAIL", b"421 4.3.2 shutting down\r\n")
    server = scripted(batch_server(5, shut))
    messages = batch(5)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, timeout=3).send_messages(messages)
    # The server answers in order: nothing after its 421 was taken, so nothing is
    # "unknown" although every message's content went out.
    assert statuses(messages) == ["sent", "sent", "deferred", "not_sent", "not_sent"]
    assert info.value.sent_messages == messages[:2]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == messages[2:]  # type: ignore[attr-defined]
    assert info.value.unknown_messages == []  # type: ignore[attr-defined]
    session = Session.objects.get()
    assert session.status == "failed" and "421" in session.error
    assert ("S", "421 4.3.2 shutting down") in [
        (line.direction, line.text) for line in session.transcript_lines()
    ]


def test_a_disconnect_mid_batch_leaves_what_went_out_unknown(scripted: Any) -> None:
    import smtplib

    drop = at(2, "RSET", b"")
    server = scripted(batch_server(4, drop))
    messages = batch(4)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, timeout=3).send_messages(messages)
    # Messages 2 and 3 went out whole, and no verdict came: the server may have
    # queued them. They are neither "sent" nor offered for a blind retry.
    assert statuses(messages) == ["sent", "sent", "unknown", "unknown"]
    assert info.value.unknown_messages == messages[2:]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == []  # type: ignore[attr-defined]
    stored = list(Session.objects.get().messages.order_by("id").values_list("status", flat=True))
    assert stored == ["sent", "sent", "unknown", "unknown"]


def test_retrying_what_a_421_left_unsent_delivers_each_message_once(
    scripted: Any, smtpd: Any
) -> None:
    import smtplib

    shut = at(1, "BDAT", b"421 4.3.2 bye\r\n")
    server = scripted(batch_server(3, shut))
    messages = batch(3)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, timeout=3).send_messages(messages)
    retry = list(info.value.unsent_messages)  # type: ignore[attr-defined]
    assert retry == messages[1:]
    assert backend_for(smtpd).send_messages(retry) == 2
    delivered = [m.rcpt_tos for m in smtpd.messages]
    assert delivered == [["1@example.org"], ["2@example.org"]]


def bdat_server(reply_lines: int = 1) -> Any:
    """Answers each command (and each BDAT's content) as soon as it has read it, with
    a reply of ``reply_lines`` long lines; reads nothing while it writes."""
    filler = b"250-" + b"x" * 500 + b"\r\n"

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", CHUNKING_EHLO)
        c.contents = []  # type: ignore[attr-defined]
        while (line := c.readline()) != b"QUIT":
            last = b"250 ok\r\n"
            if line.startswith(b"BDAT"):
                c.contents.append(c.read_exact(int(line.split()[1])))  # type: ignore[attr-defined]
                last = b"250 2.0.0 queued as K%d\r\n" % len(c.contents)  # type: ignore[attr-defined]
            c.send(filler * (reply_lines - 1) + last)
        c.send(b"221 bye\r\n")

    return script


def test_writing_never_deadlocks_with_a_server_that_stops_reading(scripted: Any) -> None:
    # Each reply is about 100 KB and the server reads nothing until it has written it;
    # its buffers are small. The message is bigger than what the kernel buffers on
    # both sides can hold (up to 4 MiB here): a client that wrote it all before reading
    # would wait for the server, and the server for it, for ever.
    server = scripted(bdat_server(reply_lines=200))
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        server.listener.setsockopt(socket.SOL_SOCKET, option, 8192)
    body = "0123456789abcdef\n" * 600_000  # 10 MB
    messages = [EmailMessage("s", body, "from@example.org", [f"{n}@x.org"]) for n in range(2)]
    with override_settings(SOCKMAIL={"STORE_CONTENT": "envelope"}):
        assert backend_for(server, timeout=5).send_messages(messages) == 2
    assert [len(c) > 10_800_000 for c in server.conversations[0].contents] == [True, True]


def test_a_batch_is_rendered_as_it_goes_not_all_at_once(scripted: Any) -> None:
    from django_sockmail.signals import message_sent
    from django_sockmail.smtp.client import PIPELINE_WINDOW

    rendered: list[EmailMessage] = []
    settled: list[EmailMessage] = []
    in_flight: list[int] = []  # how many were rendered but not settled, at each render

    class Counted(EmailMessage):
        def message(self, *args: Any, **kwargs: Any) -> Any:
            rendered.append(self)
            in_flight.append(len(rendered) - len(settled))
            return super().message(*args, **kwargs)

    def note(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        settled.append(message)

    server = scripted(bdat_server())
    messages = [Counted("s", "b", "from@example.org", [f"{n}@x.org"]) for n in range(300)]
    message_sent.connect(note)
    try:
        assert backend_for(server, timeout=5).send_messages(messages) == 300
    finally:
        message_sent.disconnect(note)
    assert settled == messages
    # At most a window in flight, a window of verdicts not yet reported (they are
    # reported once the next transactions are on their way) and one rendered ahead:
    # never the whole batch at once.
    assert max(in_flight) <= 2 * PIPELINE_WINDOW + 1 < len(messages)


def test_reopening_after_a_broken_batch_starts_the_new_session_without_rset(
    scripted: Any,
) -> None:
    import smtplib

    from django_sockmail.smtp.client import SMTPClient
    from django_sockmail.smtp.envelope import make_envelope

    # The second message's RCPT is answered 421 on the first connection, its DATA in
    # flight; on the second connection every command is accepted.
    server = scripted(
        Responder(
            {
                "EHLO": EHLO,
                "RCPT": [b"250 2.1.5 Ok\r\n", b"421 4.3.2 shutting down\r\n", b"250 2.1.5 Ok\r\n"],
            }
        )
    )
    client = SMTPClient(server.host, server.port, timeout=3)
    content = b"Subject: s\r\n\r\nb\r\n"
    client.open()
    envelopes = [make_envelope("from@example.org", [f"{n}@x.org"]) for n in "ab"]
    transactions = [client.prepare(envelope, content) for envelope in envelopes]
    with pytest.raises(smtplib.SMTPServerDisconnected):
        list(client.send_many(transactions))
    assert [t.outcome.status for t in transactions] == ["sent", "deferred"]
    assert not client.is_open

    client.open()  # the same object: a new connection, with no transaction open on it
    outcome = client.send(make_envelope("from@example.org", ["c@x.org"]), content)
    client.quit()
    assert len(server.conversations) == 2
    second = server.conversations[1].received
    assert second[0].startswith(b"EHLO")
    assert second[1] == b"MAIL FROM:<from@example.org>"  # no RSET first
    assert second[2] == b"RCPT TO:<c@x.org>"
    assert outcome.status == "sent" and outcome.queue_id == "SCRIPTED1"


# QUIT behind the last message, when the session ends with the batch.


class _RecordingSocket:
    """A server's socket that keeps each chunk one recv() returned: while the server
    waits, what the client wrote at once arrives at once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.chunks: list[bytes] = []

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if data:
            self.chunks.append(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def chunks(server: Any) -> list[bytes]:
    """What the first conversation received after EHLO, chunk by chunk."""
    sock = server.conversations[0].sock
    assert isinstance(sock, _RecordingSocket)
    return sock.chunks


def the_chunk_with(server: Any, data: bytes) -> bytes:
    [chunk] = [chunk for chunk in chunks(server) if data in chunk]
    return chunk


Finish = Callable[[Conversation, bytes], None]


def holding_server(count: int, finish: Finish) -> Any:
    """Answers each message's envelope once all of it is in, and the end of its data
    only once the next envelope has arrived: a client that waited for that verdict
    would wait for ever. The last verdict is handed to ``finish(c, verdict)``."""

    def script(c: Conversation) -> None:
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", EHLO)
        c.sock = _RecordingSocket(c.sock)  # type: ignore[assignment]
        verdict = b""
        for n in range(count):
            group = [c.readline()]
            while group[-1] != b"DATA":
                group.append(c.readline())
            c.send(verdict + b"250 ok\r\n" * (len(group) - 1) + b"354 go\r\n")
            c.read_data()
            verdict = b"250 2.0.0 queued as D%d\r\n" % n
        finish(c, verdict)

    return script


def quit_first(then: bytes | None) -> Finish:
    """Holds the last verdict back until QUIT has come: a client that waited for it
    before saying QUIT would wait for ever. Then sends the verdict and ``then`` (None:
    closes without a word after the verdict)."""

    def finish(c: Conversation, verdict: bytes) -> None:
        assert c.readline() == b"QUIT"
        c.send(verdict)
        if then is not None:
            c.send(then)

    return finish


def verdict_first(c: Conversation, verdict: bytes) -> None:
    """Answers the last message at once, and QUIT when it comes."""
    c.send(verdict)
    c.expect(b"QUIT", b"221 2.0.0 Bye\r\n")


def test_a_batch_on_its_own_connection_says_quit_with_the_last_content(scripted: Any) -> None:
    server = scripted(holding_server(3, quit_first(b"221 2.0.0 Bye\r\n")))
    messages = batch(3)
    backend = backend_for(server, timeout=3)  # no `with`: the connection is for this call
    assert backend.send_messages(messages) == 3
    assert statuses(messages) == ["sent", "sent", "sent"]
    assert backend.connection is None
    # The last content and QUIT went out in one write.
    last = the_chunk_with(server, b"QUIT\r\n")
    assert last.endswith(b"\r\n.\r\nQUIT\r\n")
    assert b"To: 2@example.org\r\n" in last and b"MAIL" not in last
    assert server.lines.count(b"QUIT") == 1
    session = Session.objects.get()
    assert session.status == "ok" and session.error == "" and session.sent_count == 3
    said = transcript(session)
    assert said[-5][0] == "D"  # the last message's content
    assert said[-4:] == [
        ("C", "QUIT"),
        ("S", "250 2.0.0 queued as D2"),
        ("S", "221 2.0.0 Bye"),
        ("*", "connection closed"),
    ]
    assert [text for direction, text in said if direction == "C"].count("QUIT") == 1


def test_a_kept_connection_says_quit_on_its_own_when_closed(scripted: Any) -> None:
    server = scripted(holding_server(3, verdict_first))
    messages = batch(3)
    with backend_for(server, timeout=3) as backend:
        assert backend.send_messages(messages) == 3
        assert backend.connection is not None and backend.connection.is_open
        assert b"QUIT" not in b"".join(chunks(server))  # the session is the caller's
    assert statuses(messages) == ["sent", "sent", "sent"]
    # QUIT came in a write of its own, once the last verdict was in.
    assert the_chunk_with(server, b"QUIT") == b"QUIT\r\n"
    assert chunks(server)[-1] == b"QUIT\r\n" and chunks(server)[-2].endswith(b"\r\n.\r\n")
    session = Session.objects.get()
    assert session.status == "ok" and session.sent_count == 3
    said = transcript(session)
    assert said[-5][0] == "D"
    assert said[-4:] == [
        ("S", "250 2.0.0 queued as D2"),
        ("C", "QUIT"),
        ("S", "221 2.0.0 Bye"),
        ("*", "connection closed"),
    ]


def test_with_chunking_quit_goes_out_with_the_last_bdat(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        # Answers nothing until QUIT has come: the whole batch and QUIT are one write.
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", CHUNKING_EHLO)
        c.sock = _RecordingSocket(c.sock)  # type: ignore[assignment]
        c.bdat = []  # type: ignore[attr-defined]
        replies = b""
        while (line := c.readline()) != b"QUIT":
            reply = b"250 ok\r\n"
            if line.startswith(b"BDAT"):
                c.bdat.append((line, c.read_exact(int(line.split()[1]))))  # type: ignore[attr-defined]
                reply = b"250 2.0.0 queued as B%d\r\n" % (len(c.bdat) - 1)  # type: ignore[attr-defined]
            replies += reply
        c.send(replies + b"221 2.0.0 Bye\r\n")

    server = scripted(script)
    messages = batch(3)
    assert backend_for(server, timeout=3).send_messages(messages) == 3
    assert [outcome_of(m).queue_id for m in messages] == ["B0", "B1", "B2"]
    bdat, content = server.conversations[0].bdat[-1]
    last = the_chunk_with(server, b"QUIT\r\n")
    assert last.endswith(bdat + b"\r\n" + content + b"QUIT\r\n")
    session = Session.objects.get()
    assert session.status == "ok" and session.error == "" and session.sent_count == 3
    said = transcript(session)
    quit_at = said.index(("C", "QUIT"))
    assert said[quit_at - 2] == ("C", bdat.decode()) and said[quit_at - 1][0] == "D"
    # Every reply came after QUIT: 3 for the first message, 4 (with RSET) for the others.
    after = said[quit_at + 1 :]
    assert [direction for direction, _ in after] == ["S"] * 12 + ["*"]
    assert after[-3:] == [
        ("S", "250 2.0.0 queued as B2"),
        ("S", "221 2.0.0 Bye"),
        ("*", "connection closed"),
    ]


def test_a_server_that_hangs_up_instead_of_answering_quit(scripted: Any) -> None:
    server = scripted(holding_server(3, quit_first(None)))
    messages = batch(3)
    assert backend_for(server, timeout=3).send_messages(messages) == 3  # nothing raised
    assert statuses(messages) == ["sent", "sent", "sent"]
    session = Session.objects.get()
    assert session.status == "ok" and session.error == "" and session.sent_count == 3
    said = transcript(session)
    assert said[-3:] == [
        ("C", "QUIT"),
        ("S", "250 2.0.0 queued as D2"),
        ("*", "connection closed"),
    ]
    assert not any(text.startswith("error") for _, text in said)


def test_each_message_is_yielded_once_when_quit_goes_unanswered(scripted: Any) -> None:
    from django_sockmail.smtp.client import SMTPClient
    from django_sockmail.smtp.envelope import make_envelope

    server = scripted(holding_server(3, quit_first(None)))
    client = SMTPClient(server.host, server.port, timeout=3)
    client.open()
    content = b"Subject: s\r\n\r\nb\r\n"
    transactions = [
        client.prepare(make_envelope("from@example.org", [f"{n}@x.org"]), content) for n in "abc"
    ]
    assert list(client.send_many(transactions, quit_after=True)) == transactions
    assert [t.outcome.status for t in transactions] == ["sent"] * 3
    assert not client.is_open


def test_a_421_answering_quit_puts_the_last_verdict_in_doubt(scripted: Any) -> None:
    # Only 221 answers QUIT: any other reply may be the last message's, shifted onto
    # QUIT by a reply too many before it. Messages 1 and 2 were confirmed in step by
    # the 354s that followed their verdicts; message 3's verdict was not.
    server = scripted(holding_server(3, quit_first(b"421 4.3.2 shutting down\r\n")))
    messages = batch(3)
    with pytest.raises(SMTPOutOfStepError) as info:
        backend_for(server, timeout=3).send_messages(messages)
    assert str(info.value) == "The server answered QUIT with 421 4.3.2 shutting down: out of step"
    assert statuses(messages) == ["sent", "sent", "unknown"]
    assert list(info.value.sent_messages) == messages[:2]
    assert list(info.value.unknown_messages) == messages[2:]
    session = Session.objects.get()
    assert session.status == "failed" and session.sent_count == 2
    assert transcript(session)[-4:] == [
        ("S", "250 2.0.0 queued as D2"),
        ("S", "421 4.3.2 shutting down"),
        ("*", f"error: SMTPOutOfStepError: {info.value}"),
        ("*", "connection closed"),
    ]


def test_garbage_answering_quit_is_recorded_but_every_message_stays_sent(
    scripted: Any,
) -> None:
    server = scripted(holding_server(3, quit_first(b"garbage that is not a reply\r\n")))
    messages = batch(3)
    assert backend_for(server, timeout=3).send_messages(messages) == 3  # nothing raised
    assert statuses(messages) == ["sent", "sent", "sent"]
    session = Session.objects.get()
    error = "SMTPProtocolError: malformed reply code: b'garbage that is not a reply'"
    # The server misbehaved, which the session records; the messages were all taken.
    assert session.status == "failed" and session.error == error
    assert session.sent_count == 3
    stored = list(session.messages.order_by("id").values_list("status", flat=True))
    assert stored == ["sent", "sent", "sent"]
    assert transcript(session)[-3:] == [
        ("S", "250 2.0.0 queued as D2"),
        ("*", f"error: {error}"),
        ("*", "connection closed"),
    ]


def test_a_drop_before_the_last_verdict_leaves_it_unknown(scripted: Any) -> None:
    import smtplib

    def finish(c: Conversation, verdict: bytes) -> None:
        assert c.readline() == b"QUIT"  # and hangs up: the last verdict never comes

    server = scripted(holding_server(3, finish))
    messages = batch(3)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, timeout=3).send_messages(messages)
    assert not isinstance(info.value, TimeoutError)
    assert statuses(messages) == ["sent", "sent", "unknown"]
    assert info.value.sent_messages == messages[:2]  # type: ignore[attr-defined]
    assert info.value.unknown_messages == messages[2:]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == []  # type: ignore[attr-defined]
    assert the_chunk_with(server, b"QUIT\r\n").endswith(b"\r\n.\r\nQUIT\r\n")
    session = Session.objects.get()
    assert session.status == "failed" and "SMTPServerDisconnected" in session.error
    stored = list(session.messages.order_by("id").values_list("status", flat=True))
    assert stored == ["sent", "sent", "unknown"]


def test_a_refusal_that_stops_the_batch_still_ends_with_quit(scripted: Any) -> None:
    import smtplib

    server = scripted(group_answering_server(refuse={b"<1@example.org>"}))
    messages = batch(3)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend_for(server, timeout=3).send_messages(messages)
    assert statuses(messages) == ["sent", "failed", "not_sent"]
    assert info.value.sent_messages == messages[:1]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == messages[1:]  # type: ignore[attr-defined]
    groups = server.conversations[0].groups
    assert [group[-1] for group in groups] == [b"DATA", b"DATA", b"QUIT"]
    assert groups[2] == [b"QUIT"]  # the third message was never offered
    session = Session.objects.get()
    assert session.status == "ok" and session.error == ""
    assert [m.status for m in session.messages.order_by("id")] == ["sent", "failed", "not_sent"]
    assert transcript(session)[-3:] == [
        ("C", "QUIT"),
        ("S", "221 bye"),
        ("*", "connection closed"),
    ]


def test_with_chunking_a_refusal_mid_batch_has_quit_behind_what_was_in_flight(
    scripted: Any,
) -> None:
    import smtplib

    def script(c: Conversation) -> None:
        # Answers nothing until QUIT has come; the second message's RCPT is refused.
        c.send(b"220 pipes.test\r\n")
        c.expect(b"EHLO", CHUNKING_EHLO)
        replies, n = b"", 0
        while (line := c.readline()) != b"QUIT":
            if line.startswith(b"BDAT"):
                c.read_exact(int(line.split()[1]))
                ok = n != 1
                replies += b"250 2.0.0 queued as B%d\r\n" % n if ok else b"554 5.5.1 no\r\n"
                n += 1
            elif line == b"RCPT TO:<1@example.org>":
                replies += b"550 5.1.1 no such user\r\n"
            else:
                replies += b"250 ok\r\n"
        c.send(replies + b"221 2.0.0 Bye\r\n")

    server = scripted(script)
    messages = batch(3)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend_for(server, timeout=3).send_messages(messages)
    # The third was already on its way, behind the second, and the server took it.
    assert statuses(messages) == ["sent", "failed", "sent"]
    assert info.value.unsent_messages == [messages[1]]  # type: ignore[attr-defined]
    assert server.lines[-1] == b"QUIT" and server.lines.count(b"QUIT") == 1
    session = Session.objects.get()
    assert session.status == "ok" and session.sent_count == 2
    assert transcript(session)[-2:] == [("S", "221 2.0.0 Bye"), ("*", "connection closed")]


# A 421 as the last message's verdict closes the session while that message is still in
# flight: it is no failure of the QUIT behind it, and must be handled as before.


@pytest.mark.parametrize("quit_after", [False, True])
def test_a_421_to_the_last_bdat_is_raised_whether_quit_follows_or_not(
    scripted: Any, quit_after: bool
) -> None:
    import smtplib

    from django_sockmail.smtp.client import SMTPClient
    from django_sockmail.smtp.envelope import make_envelope

    server = scripted(batch_server(3, at(2, "BDAT", b"421 4.3.2 shutting down\r\n")))
    client = SMTPClient(server.host, server.port, timeout=3)
    client.open()
    content = b"Subject: s\r\n\r\nb\r\n"
    transactions = [
        client.prepare(make_envelope("from@example.org", [f"{n}@x.org"]), content) for n in "abc"
    ]
    yielded = []
    with pytest.raises(smtplib.SMTPServerDisconnected, match="421"):
        for transaction in client.send_many(transactions, quit_after=quit_after):
            yielded.append(transaction)
    # Every verdict came in one read: each transaction is yielded with its own verdict,
    # the 421 too, and then the error is raised.
    assert yielded == transactions
    assert [t.outcome.status for t in transactions] == ["sent", "sent", "deferred"]
    assert not client.is_open


def _421_after_the_last_content(c: Conversation, verdict: bytes) -> None:
    c.send(b"421 4.3.2 shutting down\r\n")


def send_into_a_421(
    server: Any, kept_open: bool
) -> tuple[list[EmailMessage], list[tuple[str, Any]], Any]:
    """Three messages through a backend (kept open or not) to a server whose 421 ends
    the batch: the messages, the signals sent for them in order, and the error."""
    import smtplib

    from django_sockmail import signals

    messages = batch(3)
    backend = backend_for(server, timeout=3)
    said: list[tuple[str, Any]] = []

    def on_sent(message: Any, **kwargs: Any) -> None:
        said.append(("sent", message))

    def on_failed(message: Any, **kwargs: Any) -> None:
        said.append(("failed", message))

    signals.message_sent.connect(on_sent)
    signals.message_failed.connect(on_failed)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="421") as info:
            if kept_open:
                with backend:
                    backend.send_messages(messages)
            else:
                backend.send_messages(messages)
    finally:
        signals.message_sent.disconnect(on_sent)
        signals.message_failed.disconnect(on_failed)
    return messages, said, info.value


@pytest.mark.parametrize("kept_open", [True, False])
def test_a_421_to_the_last_message_fails_the_batch_as_before(
    scripted: Any, kept_open: bool
) -> None:
    server = scripted(holding_server(3, _421_after_the_last_content))
    messages, said, error = send_into_a_421(server, kept_open)
    assert statuses(messages) == ["sent", "sent", "deferred"]
    # Each message's own signal, once: the two taken before the 421 are sent.
    assert said == [("sent", messages[0]), ("sent", messages[1]), ("failed", messages[2])]
    assert error.sent_messages == messages[:2]
    assert error.unsent_messages == messages[2:]
    session = Session.objects.get()
    assert session.status == "failed" and "421 4.3.2 shutting down" in session.error
    stored = list(session.messages.order_by("id").values_list("status", flat=True))
    assert stored == ["sent", "sent", "deferred"]


@pytest.mark.parametrize("kept_open", [True, False])
def test_verdicts_in_the_read_that_brings_a_421_keep_their_own_signals(
    scripted: Any, kept_open: bool
) -> None:
    # With CHUNKING every verdict comes in one read, the 421 last: the two messages
    # taken before it are reported sent, with their own signal, before the error.
    server = scripted(batch_server(3, at(2, "BDAT", b"421 4.3.2 shutting down\r\n")))
    messages, said, error = send_into_a_421(server, kept_open)
    assert statuses(messages) == ["sent", "sent", "deferred"]
    assert said == [("sent", messages[0]), ("sent", messages[1]), ("failed", messages[2])]
    assert error.sent_messages == messages[:2]
    stored = list(Session.objects.get().messages.order_by("position").values_list("status"))
    assert stored == [("sent",), ("sent",), ("deferred",)]
