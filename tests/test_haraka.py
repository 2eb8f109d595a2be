"""Interop with a real Haraka (a private instance, tests/haraka.py): a server that
answers 503 to every command pipelined behind the end of DATA before its reply
(Haraka 3.3.4 and later, against SMTP smuggling), with its early_talker plugin
watching for a client that speaks before its turn.

RFC 2920 allows that pipelining; the client must still get every message through,
each once, learn that this server refuses it, and remember that for later sessions to
the same host and port, so the refusals do not repeat. One Haraka serves the module
(it takes seconds to start), but each test talks to a port of its own: a server the
client has never met, whatever ran before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from email.utils import make_msgid

import pytest
from django.core.mail import EmailMessage, send_mail

from django_sockmail.models import Message, Session
from tests.faults import written_behind_data
from tests.haraka import (
    HarakaEndpoint,
    HarakaInstance,
    early_talk,
    early_talker_checks,
    protocol_lines,
    refusals,
    replies,
    unavailable,
)
from tests.instances import where_available
from tests.servers import backend_for, mail_to
from tests.toolkit import message, statuses

# Skipped on a machine without Haraka (no .haraka/, no node), but not under CI.
pytestmark = [where_available("Haraka", unavailable()), pytest.mark.django_db(transaction=True)]

SENDER = "sender@example.org"


@pytest.fixture(scope="module")
def haraka_instance() -> Iterator[HarakaInstance]:
    """One private Haraka for the module, with a port for each test; stopped (and
    its directory removed) however the tests end."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"CI=true, but {reason}")
    with HarakaInstance(endpoints=8) as instance:
        yield instance


@pytest.fixture
def haraka(haraka_instance: HarakaInstance) -> HarakaEndpoint:
    """A port of the instance no test has used: the client may remember what it
    learned about a server by host and port, and must meet this one for the first
    time."""
    return haraka_instance.endpoint()


def batch(count: int) -> list[EmailMessage]:
    """Messages 0 to ``count - 1``, each with a Message-ID of our own: the one Django
    would make is made anew at each rendering."""
    return [
        message(
            n,
            subject="message {n}",
            body="Body of message {n}.\n",
            sender=SENDER,
            to="rcpt{n}@example.org",
            headers={"Message-ID": make_msgid(f"m{n}", domain="sockmail.test")},
        )
        for n in range(count)
    ]


def message_ids(messages: Sequence[EmailMessage]) -> list[str]:
    return sorted(m.extra_headers["Message-ID"] for m in messages)


def delivered_ids(haraka: HarakaEndpoint) -> list[str]:
    return sorted(delivery.message_id for delivery in haraka.deliveries())


def assert_nothing_early(log: str) -> None:
    """early_talker checked (its ``pass:early``) and saw nobody speak early."""
    assert early_talker_checks(log), "early_talker never checked:\n" + log[-4000:]


def conversation(log: str) -> str:
    """What was said, as Haraka logged it: for a failing assertion's message."""
    return "\n".join(protocol_lines(log))
    assert early_talk(log) == []


def test_a_batch_of_twenty_is_delivered_whole_in_one_session(haraka: HarakaEndpoint) -> None:
    messages = batch(20)
    assert backend_for(haraka).send_messages(messages) == 20
    assert statuses(messages) == ["sent"] * 20
    # Each message delivered exactly once, all in one session.
    assert delivered_ids(haraka) == message_ids(messages)
    assert len({delivery.session for delivery in haraka.deliveries()}) == 1
    log = haraka.log()
    assert_nothing_early(log)
    # A server met for the first time may refuse what came behind the first end of
    # DATA; from then on the session does not pipeline behind the end of DATA, so no
    # later end of DATA has anything refused, and every 503 is one of those refusals.
    refused = refusals(log)
    assert [refusal.transaction for refusal in refused] in ([], [1]), refused
    assert len(replies("503", log)) == sum(refusal.commands for refusal in refused)
    recorded = Session.objects.get()
    assert recorded.status == "ok" and recorded.sent_count == 20


def test_send_mail_leaves_no_refusal_once_the_server_is_known(haraka: HarakaEndpoint) -> None:
    with mail_to(haraka):
        for n in range(3):
            mark = len(haraka.log())
            assert send_mail(f"send_mail {n}", "Body.\n", SENDER, [f"rcpt{n}@example.org"]) == 1
            stored = Message.objects.get(subject=f"send_mail {n}")
            assert stored.status == "sent"
            delivered = [d.message_id.strip("<>") for d in haraka.deliveries()]
            assert delivered.count(stored.message_id.strip("<>")) == 1
            log = haraka.log()[mark:]
            assert_nothing_early(log)
            refused = refusals(log)
            if n == 0:
                # The first call to a server never met may learn from a QUIT written
                # behind the content: that QUIT alone is refused, nothing else.
                assert [(r.transaction, r.commands) for r in refused] in ([], [(1, 1)])
            else:
                assert refused == [] and replies("503", log) == [], conversation(log)
    assert len(haraka.deliveries()) == 3


def test_a_later_session_writes_nothing_behind_the_end_of_data(haraka: HarakaEndpoint) -> None:
    first = batch(3)
    assert backend_for(haraka).send_messages(first) == 3
    mark = len(haraka.log())
    second = batch(3)
    assert backend_for(haraka).send_messages(second) == 3
    assert statuses(first + second) == ["sent"] * 6
    assert delivered_ids(haraka) == message_ids(first + second)
    log = haraka.log()[mark:]
    assert refusals(log) == [] and replies("503", log) == [], conversation(log)
    assert_nothing_early(log)
    sessions = list(Session.objects.order_by("id"))
    assert [(s.host, s.port) for s in sessions] == [(haraka.host, haraka.port)] * 2
    later = sessions[1]
    assert later.status == "ok" and later.sent_count == 3
    assert written_behind_data(later) == []
    # The envelope is still pipelined (MAIL, RCPT and DATA written before the reply to
    # MAIL): only what follows the end of DATA waits for its reply.
    wire = [(line.direction, line.text.split(" ", 1)[0]) for line in later.transcript_lines()]
    mail = wire.index(("C", "MAIL"))
    assert wire[mail : mail + 3] == [("C", "MAIL"), ("C", "RCPT"), ("C", "DATA")]
