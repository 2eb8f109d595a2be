"""The socket driver against real and scripted servers, without Django."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from django_sockmail.smtp.client import SMTPClient, default_port, host_port
from django_sockmail.smtp.envelope import make_envelope
from django_sockmail.smtp.errors import (
    SMTPConnectError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from django_sockmail.transcript import CLIENT, CONTENT, SERVER, Transcript
from tests.faults import HostileResponder, Say, StopReading
from tests.servers import Answer, Responder, SMTPServer

ENVELOPE = make_envelope("from@example.org", ["to@example.org"])


def send_one(host: str, port: int, content: bytes = b"Subject: x\r\n\r\nbody\r\n") -> Transcript:
    transcript = Transcript()
    client = SMTPClient(host, port, timeout=5, listener=transcript)
    client.open()
    outcome = client.send(ENVELOPE, content)
    client.quit()
    assert outcome.status == "sent"
    return transcript


def test_connects_by_host_name(smtpd: SMTPServer) -> None:
    transcript = send_one("localhost", smtpd.port)
    assert transcript.peer_address == f"127.0.0.1:{smtpd.port}"
    assert len(smtpd.messages) == 1


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_connects_over_ipv6(make_smtpd: Any) -> None:
    server = make_smtpd(host="::1")
    transcript = send_one("::1", server.port)
    assert transcript.peer_address == f"[::1]:{server.port}"
    assert len(server.messages) == 1


def test_8bit_body_is_declared_with_8bitmime(smtpd: SMTPServer) -> None:
    send_one(smtpd.host, smtpd.port, "Subject: x\r\n\r\nGrüße\r\n".encode())
    assert "BODY=8BITMIME" in smtpd.messages[0].mail_options


def test_transcript_records_both_directions_in_order(smtpd: SMTPServer) -> None:
    transcript = send_one(smtpd.host, smtpd.port)
    said = [(line.direction, line.text.split(" ")[0]) for line in transcript.lines]
    conversation = [(d, t) for d, t in said if d in (CLIENT, SERVER, CONTENT)]
    assert conversation[:2] == [(SERVER, "220"), (CLIENT, "EHLO")]
    assert (CLIENT, "DATA") in conversation and (CONTENT, "Subject:") in conversation
    assert conversation[-2:] == [(CLIENT, "QUIT"), (SERVER, "221")]
    offsets = [line.offset for line in transcript.lines]
    assert offsets == sorted(offsets)
    assert transcript.ended_at is not None


def test_content_keeps_headers_and_size_not_the_body(smtpd: SMTPServer) -> None:
    content = b"Subject: secret plans\r\nX-A: 1\r\n\r\nthe body stays private\r\n"
    transcript = send_one(smtpd.host, smtpd.port, content)
    [block] = [line.text for line in transcript.lines if line.direction == CONTENT]
    assert "Subject: secret plans" in block and "X-A: 1" in block
    assert f"{len(content)} bytes" in block
    assert "private" not in block


def test_helo_fallback_on_the_wire(scripted: Any) -> None:
    def script(c: Any) -> None:
        c.send(b"220 old server\r\n")
        c.expect(b"EHLO", b"500 what?\r\n")
        c.expect(b"HELO", b"250 hello\r\n")
        c.expect(b"MAIL FROM:<from@example.org>", b"250 ok\r\n")  # no ESMTP parameters
        c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()
        c.send(b"250 ok\r\n")
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    send_one(server.host, server.port)
    assert server.lines[2] == b"MAIL FROM:<from@example.org>"


def test_local_hostname_is_sent_in_ehlo(smtpd: SMTPServer) -> None:
    client = SMTPClient(smtpd.host, smtpd.port, timeout=5, local_hostname="client.example.org")
    client.open()
    client.quit()
    assert smtpd.handler.ehlo_names == ["client.example.org"]


def test_rset_only_where_the_session_needs_a_clean_slate(smtpd: SMTPServer) -> None:
    transcript = Transcript()
    client = SMTPClient(smtpd.host, smtpd.port, timeout=5, listener=transcript)
    client.open()
    refused = make_envelope("from@example.org", ["nobody@refused.test"])
    content = b"Subject: x\r\n\r\nbody\r\n"
    assert client.send(ENVELOPE, content).status == "sent"
    assert client.send(refused, content).status == "failed"  # ends with its own RSET
    assert client.send(ENVELOPE, content).status == "sent"
    client.quit()
    commands = [line.text.split(" ")[0] for line in transcript.lines if line.direction == CLIENT]
    # aiosmtpd offers no PIPELINING: one command at a time. The end of the data ends
    # the first transaction (RFC 5321 §4.1.1.4), and the refused one ends with its own
    # RSET, so neither the second nor the third transaction needs one to begin.
    assert commands == [
        "EHLO",
        *["MAIL", "RCPT", "DATA"],
        *["MAIL", "RCPT", "RSET"],
        *["MAIL", "RCPT", "DATA"],
        "QUIT",
    ]


# A client opened again starts from a clean slate: nothing of the session before (a
# parse error, replies, unsent bytes, capabilities) reaches the next.


def test_reopened_after_a_garbage_reply_the_client_does_not_raise_the_old_error(
    scripted: Any,
) -> None:
    # The first session's MAIL is answered with garbage; the second's properly.
    server = scripted(Responder({"MAIL": [b"hello there\r\n", b"250 2.1.0 Ok\r\n"]}))
    client = SMTPClient(server.host, server.port, timeout=5)
    client.open()
    with pytest.raises(SMTPProtocolError, match="malformed reply code"):
        client.send(ENVELOPE, b"Subject: x\r\n\r\none\r\n")
    client.open()
    assert client.send(ENVELOPE, b"Subject: x\r\n\r\ntwo\r\n").status == "sent"
    client.quit()


def test_reopened_after_a_send_timeout_nothing_of_the_old_message_goes_to_the_new_server(
    scripted: Any,
) -> None:
    # The first session's server stops reading mid-message: the send times out with
    # megabytes still queued. The next session must begin with EHLO.
    stop_reading = StopReading()
    server = scripted(HostileResponder({"DATA": [stop_reading, b"354 go\r\n"]}))
    client = SMTPClient(server.host, server.port, timeout=0.5, local_hostname="client.test")
    client.open()
    big = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 400_000 + b"\r\n"
    with pytest.raises(SMTPTimeoutError):
        client.send(ENVELOPE, big)
    stop_reading.released.set()
    client.open()
    assert client.send(ENVELOPE, b"Subject: x\r\n\r\nsmall\r\n").status == "sent"
    client.quit()
    second = server.conversations[1].received
    assert second[0] == b"EHLO client.test", second[:2]
    assert not any(b"0123456789abcdef" in line for line in second)


def test_reopened_after_a_session_broken_mid_transaction_no_rset_is_owed(scripted: Any) -> None:
    # The first session drops after MAIL, its transaction left open: that connection
    # owed a RSET. The next connection owes nothing and begins its transaction with MAIL.
    server = scripted(
        HostileResponder({"RCPT": [Say(b"", then="close"), b"250 2.1.5 Ok\r\n"]}, pipelining=True)
    )
    client = SMTPClient(server.host, server.port, timeout=5, local_hostname="client.test")
    client.open()
    with pytest.raises(SMTPServerDisconnected):
        client.send(ENVELOPE, b"Subject: x\r\n\r\none\r\n")
    client.open()
    assert client.send(ENVELOPE, b"Subject: x\r\n\r\ntwo\r\n").status == "sent"
    client.quit()
    second = server.conversations[1].received
    assert second[1].startswith(b"MAIL FROM:"), second[:2]


def test_reopened_nothing_is_known_of_a_server_that_refused_the_session(scripted: Any) -> None:
    # The first session learnt SIZE 10; the second is refused in the greeting: what
    # the first server offered is not taken for this one's.
    greetings: list[Answer] = [b"220 x.test\r\n", b"554 5.3.2 Not now\r\n"]
    server = scripted(Responder({"GREETING": greetings, "EHLO": b"250-x.test\r\n250 SIZE 10\r\n"}))
    client = SMTPClient(server.host, server.port, timeout=5)
    client.open()
    assert client.capabilities.size_limit == 10
    client.close()
    with pytest.raises(SMTPConnectError):
        client.open()
    assert not client.capabilities.has("SIZE") and not client.capabilities.esmtp


def test_host_port_brackets_an_ipv6_address() -> None:
    assert host_port("mail.example", 25) == "mail.example:25"
    assert host_port("192.0.2.1", 587) == "192.0.2.1:587"
    assert host_port("2001:db8::25", 465) == "[2001:db8::25]:465"


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_a_refused_connection_names_an_ipv6_server_in_brackets() -> None:
    with socket.socket(socket.AF_INET6) as unused:  # a free port nobody listens on
        unused.bind(("::1", 0))
        port = unused.getsockname()[1]
    client = SMTPClient("::1", port, timeout=5)
    with pytest.raises(SMTPConnectError, match=rf"Could not connect to \[::1\]:{port}: "):
        client.open()


def test_each_security_has_its_default_port() -> None:
    # RFC 8314 implicit TLS, RFC 6409 submission, RFC 5321 relay.
    assert [default_port(s) for s in ("ssl", "starttls", "none", "opportunistic")] == [
        465,
        587,
        25,
        25,
    ]


# A reply read before a command was written cannot answer it: when the replies read
# so far answer every command written, one more is a reply to no command, and the
# client stops before writing what the next reply would be taken to answer.


@pytest.mark.parametrize(
    ("command", "replies", "pipelining", "never_written"),
    [
        # One at a time: a reply too many behind MAIL's stops the RCPT.
        ("MAIL", b"250 2.1.0 Ok\r\n250 2.1.0 Ok, again\r\n", False, b"RCPT TO:<to@example.org>"),
        # Pipelined: a reply behind the 354 stops the content.
        ("DATA", b"354 go\r\n250 2.0.0 Ok\r\n", True, b"the content"),
    ],
    ids=["one-at-a-time", "pipelined"],
)
def test_a_reply_too_many_stops_what_the_next_reply_would_answer(
    scripted: Any, command: str, replies: bytes, pipelining: bool, never_written: bytes
) -> None:
    server = scripted(HostileResponder({command: replies}, pipelining=pipelining))
    client = SMTPClient(server.host, server.port, timeout=5)
    client.open()
    with pytest.raises(SMTPOutOfStepError) as info:
        client.send(ENVELOPE, b"Subject: x\r\n\r\nthe content\r\n")
    assert str(info.value) == "The server sent a reply to no command"
    assert info.value.outcome is not None and info.value.outcome.status == "not_sent"
    assert never_written not in server.conversations[0].received
