"""Server text the client reads, end to end: whatever a server says in its EHLO reply
ends as capabilities or an SMTPProtocolError, never another exception; the queue id a
server names is the one recorded."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.mail import EmailMessage, send_mail

from django_sockmail import outcome_of
from django_sockmail.models import Message
from tests.servers import Answer, Responder, backend_for, mail_to

pytestmark = pytest.mark.django_db(transaction=True)

# "SIZE ²": str.isdigit() is True for "²", int() refuses it.
SUPERSCRIPT_SIZE: dict[str, Answer | list[Answer]] = {"EHLO": b"250-x\r\n250 SIZE \xc2\xb2\r\n"}


def mail_commands(server: Any) -> list[bytes]:
    return [line for line in server.lines if line.upper().startswith(b"MAIL")]


def test_send_mail_after_a_size_that_is_no_number(scripted: Any) -> None:
    # A SIZE the client cannot read declares no limit: the message goes out, with SIZE=
    # declared on MAIL as the server offered the extension.
    responder = Responder(dict(SUPERSCRIPT_SIZE))
    server = scripted(responder)
    with mail_to(server):
        sent = send_mail("s", "b", "from@example.org", ["to@example.org"], fail_silently=True)
    responder.wait()
    assert sent == 1 and len(responder.messages) == 1
    [mail] = mail_commands(server)
    assert mail.startswith(b"MAIL FROM:<from@example.org> SIZE=")


def test_a_backend_sends_after_a_size_that_is_no_number(scripted: Any) -> None:
    responder = Responder(dict(SUPERSCRIPT_SIZE))
    server = scripted(responder)
    message = EmailMessage("s", "b" * 5000, "from@example.org", ["to@example.org"])
    assert backend_for(server).send_messages([message]) == 1
    responder.wait()
    assert outcome_of(message).status == "sent"


def test_harakas_queue_id_is_recorded(scripted: Any) -> None:
    uuid = "5B199CBD-2F0B-4A5C-9E3E-0123456789AB.1"
    responder = Responder({"END": f"250 Message Queued ({uuid})\r\n".encode()})
    server = scripted(responder)
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    assert backend_for(server).send_messages([message]) == 1
    assert outcome_of(message).queue_id == uuid
    assert Message.objects.get().queue_id == uuid
