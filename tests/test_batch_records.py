"""An error that stops a batch says which messages went and which did not, whatever the
error (a session that breaks, a message that cannot be rendered, a bad address); and
the audit log shows every message the backend was handed, in the order given, those
never offered as not sent, saying why."""

from __future__ import annotations

import email
from functools import partial
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_sockmail.models import Message, Session
from django_sockmail.smtp.errors import (
    SMTPConnectError,
    SMTPError,
    SMTPRecipientsRefused,
    SMTPServerDisconnected,
)
from tests import toolkit
from tests.instances import free_port
from tests.servers import (
    DROP,
    Address,
    Responder,
    Scripted,
    ScriptedServer,
    SMTPServer,
    backend_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "from@example.org"
PIPELINING_EHLO = b"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
NEWLINE_SUBJECT = "Message 3\nBcc: everyone@example.org"  # a header injection Django refuses


# "Message 1", "Message 2", … from SENDER, each to its own recipient.
batch = partial(toolkit.batch, first=1, subject="Message {n}", body="Body")


def rows(session: Session | None = None) -> list[tuple[str, str, str]]:
    """Each Message row (of ``session``, or of the only session): subject, status, error."""
    session = session or Session.objects.get()
    found = Message.objects.filter(session=session).order_by("position")
    return list(found.values_list("subject", "status", "error"))


def subjects_received(server: SMTPServer | Responder) -> list[str]:
    """The Subject of each message the server took, in order."""
    if isinstance(server, SMTPServer):
        contents = [received.content for received in server.messages]
    else:
        contents = server.messages
    return [str(email.message_from_bytes(content)["Subject"]) for content in contents]


def pipelining(scripted: Scripted, **replies: Any) -> tuple[ScriptedServer, Responder]:
    """A scripted server that offers PIPELINING and answers as ``replies`` say."""
    responder = Responder({"EHLO": PIPELINING_EHLO, **replies})
    return scripted(responder), responder


# -- a message that cannot be rendered ------------------------------------------------


def test_a_message_that_cannot_be_rendered_after_others_went_says_what_was_sent(
    smtpd: SMTPServer,
) -> None:
    messages = batch(3)
    messages[2].subject = NEWLINE_SUBJECT
    backend = backend_for(smtpd)
    # Django's BadHeaderError (a ValueError; ValueError itself on Django 6.1), as
    # Django's own backend raises it: a caller's except clause still catches it.
    with pytest.raises(ValueError, match=r"newline|linefeed") as raised:
        backend.send_messages(messages)
    error: Any = raised.value
    assert not isinstance(error, SMTPError)
    assert error.sent_messages == messages[:2]
    assert error.unsent_messages == messages[2:]
    assert error.unknown_messages == []
    assert subjects_received(smtpd) == ["Message 1", "Message 2"]

    # The audit log agrees: two sent, the third never offered, and why.
    (*sent, (subject, status, why)) = rows()
    assert sent == [("Message 1", "sent", ""), ("Message 2", "sent", "")]
    assert (subject, status) == (NEWLINE_SUBJECT, "not_sent")
    assert why == f"never offered: it could not be rendered: {type(error).__name__}: {error}"

    # The retry of what was not sent sends nothing twice.
    messages[2].subject = "Message 3"
    assert backend.send_messages(error.unsent_messages) == 1
    assert subjects_received(smtpd) == ["Message 1", "Message 2", "Message 3"]


def test_the_messages_after_one_that_cannot_be_rendered_are_recorded_in_order(
    scripted: Scripted,
) -> None:
    # Pipelined, the next message is rendered while the server works on the one before.
    server, responder = pipelining(scripted)
    messages = batch(4)
    messages[1].subject = "Message 2\nBcc: everyone@example.org"
    with pytest.raises(ValueError) as raised:
        backend_for(server).send_messages(messages)
    error: Any = raised.value
    assert (error.sent_messages, error.unsent_messages) == (messages[:1], messages[1:])
    assert subjects_received(responder) == ["Message 1"]
    described = f"{type(error).__name__}: {error}"
    assert rows() == [
        ("Message 1", "sent", ""),
        (messages[1].subject, "not_sent", f"never offered: it could not be rendered: {described}"),
        ("Message 3", "not_sent", f"never offered: the batch stopped first: {described}"),
        ("Message 4", "not_sent", f"never offered: the batch stopped first: {described}"),
    ]


def test_a_message_never_rendered_is_recorded_with_what_is_known_of_it(
    smtpd: SMTPServer,
) -> None:
    bad = EmailMessage(
        "x\ny", "Body", SENDER, ["a@example.org", "b@example.org"], headers={"message-id": "<m@x>"}
    )
    with pytest.raises(ValueError):
        backend_for(smtpd).send_messages([bad])
    row = Message.objects.get()
    assert (row.message_id, row.envelope_from, row.status) == ("<m@x>", SENDER, "not_sent")
    assert (row.size, row.sha256, row.headers) == (0, "", "")  # no content was made
    assert list(row.recipients.values_list("address", "accepted")) == [
        ("a@example.org", False),
        ("b@example.org", False),
    ]


# -- a session that ends first ----------------------------------------------------------


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_a_421_mid_batch_leaves_a_row_for_every_message(
    scripted: Scripted, pipelined: bool
) -> None:
    closing = b"421 4.3.2 Shutting down\r\n"
    responder = Responder({"MAIL": [b"250 2.1.0 Ok\r\n", closing]})
    if pipelined:
        responder.replies["EHLO"] = PIPELINING_EHLO
    server = scripted(responder)
    messages = batch(4)
    with pytest.raises(SMTPServerDisconnected) as raised:
        backend_for(server).send_messages(messages)
    error = raised.value
    assert (error.sent_messages, error.unsent_messages) == (messages[:1], messages[1:])
    ended = f"never offered: the session ended first: SMTPServerDisconnected: {error}"
    (first, (subject, status, _), *never_offered) = rows()
    assert (first, subject, status) == (("Message 1", "sent", ""), "Message 2", "deferred")
    assert never_offered == [("Message 3", "not_sent", ended), ("Message 4", "not_sent", ended)]
    assert Session.objects.get().message_count == 4


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_a_dropped_connection_mid_batch_leaves_a_row_for_every_message(
    scripted: Scripted, pipelined: bool
) -> None:
    # The second message's content goes out whole and the connection drops before its
    # verdict: it is unknown; the third and fourth were never offered.
    responder = Responder({"END": [b"250 2.0.0 Ok: queued as A1\r\n", DROP]})
    if pipelined:
        responder.replies["EHLO"] = PIPELINING_EHLO
    server = scripted(responder)
    messages = batch(4)
    with pytest.raises(SMTPServerDisconnected) as raised:
        backend_for(server).send_messages(messages)
    error = raised.value
    assert error.sent_messages == messages[:1]
    assert error.unknown_messages == messages[1:2]
    assert error.unsent_messages == messages[2:]
    recorded = rows()
    assert [(subject, status) for subject, status, _ in recorded] == [
        ("Message 1", "sent"),
        ("Message 2", "unknown"),
        ("Message 3", "not_sent"),
        ("Message 4", "not_sent"),
    ]
    # Pipelined, Message 3's commands went out behind Message 2's content: offered,
    # never answered. Message 4 was never offered either way.
    assert (
        recorded[-1][2]
        == f"never offered: the session ended first: SMTPServerDisconnected: {error}"
    )
    assert all(f"SMTPServerDisconnected: {error}" in why for _, _, why in recorded[1:])


def test_with_fail_silently_the_messages_never_offered_are_recorded_too(
    scripted: Scripted,
) -> None:
    server = scripted(Responder({"MAIL": [b"250 2.1.0 Ok\r\n", DROP]}))
    messages = batch(3)
    assert backend_for(server, fail_silently=True).send_messages(messages) == 1
    assert [status for _, status, _ in rows()] == ["sent", "not_sent", "not_sent"]
    assert rows()[2][2].startswith("never offered: the session ended first: ")


# -- a refusal that stops the batch -----------------------------------------------------


def test_the_messages_after_a_refusal_that_stops_the_batch_are_recorded(
    smtpd: SMTPServer,
) -> None:
    messages = batch(3)
    messages[1].to = ["nobody@refused.test"]
    with pytest.raises(SMTPRecipientsRefused) as raised:
        backend_for(smtpd).send_messages(messages)
    refused = f"SMTPRecipientsRefused: {raised.value}"
    assert [(subject, status) for subject, status, _ in rows()] == [
        ("Message 1", "sent"),
        ("Message 2", "failed"),
        ("Message 3", "not_sent"),
    ]
    assert rows()[2][2] == f"never offered: a message before it was refused: {refused}"


# -- a session that never opens ---------------------------------------------------------


def nothing_listening() -> Address:
    class Closed:
        host, port = "127.0.0.1", free_port()

    return Closed()


def test_a_session_that_cannot_open_records_the_messages_it_was_handed() -> None:
    messages = batch(2)
    with pytest.raises(SMTPConnectError) as raised:
        backend_for(nothing_listening()).send_messages(messages)
    error = raised.value
    assert (error.sent_messages, error.unsent_messages) == ([], messages)
    session = Session.objects.get()
    assert session.status == "failed"
    why = f"never offered: the session could not be opened: {session.error}"
    assert rows(session) == [("Message 1", "not_sent", why), ("Message 2", "not_sent", why)]


def test_failing_silently_to_open_still_records_the_messages() -> None:
    backend = backend_for(nothing_listening(), fail_silently=True)
    assert backend.send_messages(batch(2)) == 0
    assert [status for _, status, _ in rows()] == ["not_sent", "not_sent"]


def test_open_alone_records_no_message() -> None:
    assert backend_for(nothing_listening(), fail_silently=True).open() is None
    assert Session.objects.get().message_count == 0


# -- a bad address --------------------------------------------------------------------


def test_a_bad_address_says_nothing_was_sent(smtpd: SMTPServer) -> None:
    messages = batch(2)
    messages[1].to = ["x@y.org> NOTIFY=SUCCESS"]
    with pytest.raises(ValueError) as raised:
        backend_for(smtpd).send_messages(messages)
    error: Any = raised.value
    assert (error.sent_messages, error.unsent_messages, error.unknown_messages) == (
        [],
        messages,
        [],
    )
    assert smtpd.messages == [] and not Session.objects.exists()
