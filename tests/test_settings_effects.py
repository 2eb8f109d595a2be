"""Each setting makes a difference a test can see: every test here fails when the
backend ignores the setting it names (checked by mutation: the setting's read
replaced by its default). Settings whose other tests already show this live there;
these are the ones that needed a test of their own."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from io import StringIO
from typing import Any

import pytest
import trustme
from django.core.mail import get_connection
from django.core.management import call_command
from django.test import override_settings

from django_sockmail.models import Session
from tests import toolkit
from tests.servers import (
    STALL,
    Answer,
    Conversation,
    MakeServer,
    Responder,
    Scripted,
    SMTPServer,
    backend_for,
    server_context,
)
from tests.toolkit import target

pytestmark = pytest.mark.django_db(transaction=True)

OURS = "django_sockmail.backend.EmailBackend"

OFFERS_BOTH = b"250-both.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n"


message = partial(toolkit.message, body="line one\n.dotted\n")


def bdat_or_data(c: Conversation) -> None:
    """A server offering PIPELINING and CHUNKING that takes content either way, so the
    client's choice is what shows on the wire."""
    c.send(b"220 both.test ESMTP\r\n")
    while True:
        line = c.readline()
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"QUIT":
            c.send(b"221 bye\r\n")
            return
        if verb == b"BDAT":
            c.read_exact(int(line.split()[1]))
            c.send(b"250 2.0.0 queued as B\r\n")
        elif verb == b"DATA":
            c.send(b"354 go\r\n")
            c.read_data()
            c.send(b"250 2.0.0 queued as D\r\n")
        else:
            c.send(OFFERS_BOTH if verb == b"EHLO" else b"250 ok\r\n")


# CHUNKING


def test_chunking_can_be_turned_off(scripted: Scripted) -> None:
    server = scripted(bdat_or_data)
    with override_settings(SOCKMAIL={"CHUNKING": False}):
        assert backend_for(server).send_messages([message(0), message(1)]) == 2
    verbs = [line.split(b" ", 1)[0] for line in server.lines]
    assert verbs.count(b"DATA") == 2 and b"BDAT" not in verbs
    assert b".dotted" not in server.lines and b"..dotted" in server.lines  # dot-stuffed


def test_chunking_is_used_when_offered(scripted: Scripted) -> None:
    # The contrast: the same server, the default setting.
    server = scripted(bdat_or_data)
    assert backend_for(server).send_messages([message(0), message(1)]) == 2
    verbs = [line.split(b" ", 1)[0] for line in server.lines]
    assert verbs.count(b"BDAT") == 2 and b"DATA" not in verbs


# OPPORTUNISTIC_TLS


def test_without_opportunistic_tls_an_offer_of_starttls_is_not_taken(
    make_smtpd: MakeServer, server_cert: trustme.LeafCert, trust_ca: str
) -> None:
    # As Django's backend: no TLS unless asked for, even from a server that offers it
    # (the upgrade itself is tested with the setting on, in test_security.py).
    server = make_smtpd(tls_context=server_context(server_cert))
    assert backend_for(server).send_messages([message()]) == 1
    session = Session.objects.get()
    commands = [line.text for line in session.transcript_lines() if line.direction == "C"]
    assert session.security == "none" and "STARTTLS" not in commands


# RECORD_SESSIONS


def test_without_recording_a_long_session_writes_nothing_as_it_goes(scripted: Scripted) -> None:
    # WRITE_EVERY writes an open session's records part way through; with recording
    # off there must be none, before the session ends or after.
    server = scripted(Responder())
    with override_settings(SOCKMAIL={"RECORD_SESSIONS": False, "WRITE_EVERY": 2}):
        backend = backend_for(server)
        backend.open()
        assert backend.send_messages([message(n) for n in range(5)]) == 5
        assert not Session.objects.exists()
        backend.close()
    assert not Session.objects.exists()


# TIMEOUTS: each step's limit from the settings, not the backend's timeout


def send_timing_out(server: Any, timeout: float) -> smtplib.SMTPServerDisconnected:
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server, timeout=timeout).send_messages([message()])
    assert isinstance(info.value, TimeoutError)
    return info.value


PIPELINING_EHLO = b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


@pytest.mark.parametrize(
    ("step", "stalls_at", "waiting_for", "pipelining"),
    [
        ("greeting", "GREETING", "the greeting", False),
        ("command", "MAIL", "the reply to MAIL", False),
        ("data", "END", "the reply to the message content", False),
        # A pipelining client waits for its replies in a code path of its own.
        ("command", "MAIL", "the reply to MAIL", True),
        ("data", "END", "the reply to the message content", True),
    ],
)
def test_each_steps_timeout_comes_from_the_settings(
    scripted: Scripted, step: str, stalls_at: str, waiting_for: str, pipelining: bool
) -> None:
    replies: dict[str, Answer | list[Answer]] = {stalls_at: STALL}
    if pipelining:
        replies["EHLO"] = PIPELINING_EHLO
    server = scripted(Responder(replies))
    with override_settings(SOCKMAIL={"TIMEOUTS": {step: 0.3}}):
        error = send_timing_out(server, timeout=3)
    # The step's own limit, not the backend's 3 s.
    assert str(error) == f"Timed out after 0.3 s waiting for {waiting_for}"


def test_the_deadline_bounds_an_open_called_on_its_own(scripted: Scripted) -> None:
    # send_messages() hands its deadline to the client; open() called by the user
    # (a kept connection) has the client start it.
    server = scripted(Responder({"EHLO": STALL}))
    backend = backend_for(server, timeout=3)
    with (
        override_settings(SOCKMAIL={"TIMEOUTS": {"deadline": 0.3}}),
        pytest.raises(smtplib.SMTPServerDisconnected) as info,
    ):
        backend.open()
    assert isinstance(info.value, TimeoutError)
    assert str(info.value) == "Timed out waiting for the reply to EHLO (the deadline of 0.3 s)"


@dataclass
class Unanswered:
    host: str
    port: int


@pytest.fixture
def unanswered() -> Iterator[Unanswered]:
    """A loopback port whose connections never complete: a listener with a backlog of
    one, already taken by a connection it never accepts, so Linux drops further SYNs
    (as a firewall that drops packets would)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    host, port = listener.getsockname()
    first = socket.create_connection((host, port))
    yield Unanswered(host, port)
    first.close()
    listener.close()


def test_the_connect_timeout_comes_from_the_settings(unanswered: Unanswered) -> None:
    with override_settings(SOCKMAIL={"TIMEOUTS": {"connect": 0.3}}):
        error = send_timing_out(unanswered, timeout=3)
    # The connect step's own limit, not the backend's 3 s.
    assert str(error) == f"Timed out after 0.3 s connecting to {unanswered.host}:{unanswered.port}"


# LOCAL_HOSTNAME, in sockmail_probe as in the backend


def test_the_probe_says_ehlo_with_the_name_from_settings(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"LOCAL_HOSTNAME": "app.example.org"}):
        call_command("sockmail_probe", "--timeout", "5", target(smtpd), stdout=StringIO())
    assert smtpd.handler.ehlo_names == ["app.example.org"]
    assert Session.objects.get().status == "ok"


# EMAIL_USE_SSL: the one EMAIL_* setting no other test sends with


@pytest.mark.email_settings
def test_email_use_ssl_from_settings_opens_with_implicit_tls(
    make_smtpd: MakeServer, server_cert: trustme.LeafCert, trust_ca: str
) -> None:
    server = make_smtpd(ssl_context=server_context(server_cert))
    email = {"EMAIL_HOST": server.host, "EMAIL_PORT": server.port, "EMAIL_TIMEOUT": 5}
    with override_settings(**email, EMAIL_USE_SSL=True):
        assert get_connection(OURS).send_messages([message()]) == 1
    assert len(server.messages) == 1
    assert Session.objects.get().security == "ssl"
