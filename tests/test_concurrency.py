"""Many senders at once against one real server (aiosmtpd): threads with a backend each,
threads sharing one backend (its lock), and separate processes — every message is
delivered exactly once, every session is recorded, and no session's record holds a
line, a message or a recipient of another.

The senders write the audit log through connections of their own, so the test database
must be one that other connections see: PostgreSQL or MariaDB. Models are imported
inside the tests: the worker processes import this module before django.setup()."""

from __future__ import annotations

import email
import itertools
import multiprocessing
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import django
import pytest
from django.core.mail import EmailMessage
from django.db import connections

from tests.servers import Peer, SMTPServer, backend_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connections["default"].vendor == "sqlite",
        reason="SQLite in memory is one connection's own database, which the senders' "
        "connections do not see: run with SOCKMAIL_TEST_DB=postgresql or mysql",
    ),
]

THREADS, PER_THREAD = 8, 50
PROCESSES, PER_PROCESS = 4, 25
TIMEOUT = 120  # seconds for all senders together: a hang fails the test
RCPT = re.compile(r"RCPT TO:<([^>]*)>")
QUEUED = re.compile(r"queued as (\S+)")


def messages(sender: str, count: int, batch: str = "") -> list[EmailMessage]:
    """``count`` messages, each to two recipients whose addresses, like its subject,
    name the sender and the message's number: a record that mixes senders shows."""
    return [
        EmailMessage(
            f"{sender}{batch} m{n}",
            f"Message {n} from {sender}.",
            f"{sender}@senders.test",
            [f"{sender}{batch}-m{n}-{part}@example.com" for part in ("a", "b")],
        )
        for n in range(count)
    ]


def backend_to(server: SMTPServer) -> Any:
    return backend_for(server, timeout=30)


def run_in_threads(work: Callable[[int], int], count: int) -> list[int]:
    """Run ``work(0)`` .. ``work(count - 1)`` in threads that start together; each closes
    its database connections when done. Re-raises the first error of any."""
    start = threading.Barrier(count, timeout=30)
    results: list[int | None] = [None] * count
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            start.wait()
            results[n] = work(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's: the test database is dropped later

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a sender hangs"
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def assert_delivered_exactly_once(server: SMTPServer, expected: int) -> None:
    """Each address got one message, the one whose subject names it."""
    received = Counter(rcpt for m in server.messages for rcpt in m.rcpt_tos)
    assert len(received) == 2 * expected
    assert set(received.values()) == {1}
    for message in server.messages:
        subject = str(email.message_from_bytes(message.content)["Subject"])
        wanted = "-".join(subject.split(" "))  # "t3 m7" -> "t3-m7"
        assert sorted(message.rcpt_tos) == [f"{wanted}-a@example.com", f"{wanted}-b@example.com"]


def assert_each_session_is_its_own(expected_sessions: int, expected_messages: int) -> list[Any]:
    """Every session: its transcript numbered 1..n without a gap, held in chunks that
    follow one another without a gap or an overlap and add up to its line_count, and
    the recipients and queue ids in its lines exactly those of its own message and
    recipient rows."""
    from django_sockmail.models import Message, Recipient, Session

    sessions = list(Session.objects.order_by("id"))
    assert len(sessions) == expected_sessions
    assert Message.objects.count() == expected_messages
    assert Recipient.objects.count() == 2 * expected_messages
    for session in sessions:
        assert session.status == "ok", session.error
        lines = [(x.seq, x.direction, x.text) for x in session.transcript_lines()]
        assert [seq for seq, _, _ in lines] == list(range(1, len(lines) + 1))
        assert session.line_count == len(lines)
        # The chunks that hold them follow one another: each begins where the last ended.
        chunks = list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count"))
        assert chunks, "a session without a transcript"
        expected_first = 1
        for first_seq, line_count in chunks:
            assert (first_seq, line_count > 0) == (expected_first, True)
            expected_first = first_seq + line_count
        assert sum(count for _, count in chunks) == session.line_count
        # The recipients of each transaction (MAIL FROM .. the next), in order.
        in_transcript: list[set[str]] = []
        for _, direction, text in lines:
            if direction == "C" and text.startswith("MAIL FROM:"):
                in_transcript.append(set())
            elif direction == "C" and (rcpt := RCPT.match(text)):
                in_transcript[-1].add(rcpt.group(1))
        queued = [q.group(1) for _, d, t in lines if d == "S" and (q := QUEUED.search(t))]

        rows = list(session.messages.order_by("position").prefetch_related("recipients"))
        assert [m.position for m in rows] == list(range(1, len(rows) + 1))
        assert session.message_count == len(rows)
        assert in_transcript == [{r.address for r in m.recipients.all()} for m in rows]
        assert queued == [m.queue_id for m in rows]
        for row in rows:
            assert row.status == "sent"
            wanted = "-".join(row.subject.split(" "))
            assert {r.address for r in row.recipients.all()} == {
                f"{wanted}-a@example.com",
                f"{wanted}-b@example.com",
            }
    return sessions


def sender_of(session: Any) -> set[str]:
    return {m.envelope_from for m in session.messages.all()}


def test_threads_each_with_a_backend_of_their_own(smtpd: SMTPServer) -> None:
    def send(n: int) -> int:
        backend = backend_to(smtpd)
        sent: int = backend.send_messages(messages(f"t{n}", PER_THREAD))
        return sent

    assert run_in_threads(send, THREADS) == [PER_THREAD] * THREADS

    assert_delivered_exactly_once(smtpd, THREADS * PER_THREAD)
    sessions = assert_each_session_is_its_own(THREADS, THREADS * PER_THREAD)
    # One session per thread, holding that thread's messages in the order it gave them.
    assert sorted(s for session in sessions for s in sender_of(session)) == sorted(
        f"t{n}@senders.test" for n in range(THREADS)
    )
    for session in sessions:
        subjects = list(session.messages.order_by("position").values_list("subject", flat=True))
        thread = subjects[0].split(" ")[0]
        assert subjects == [f"{thread} m{n}" for n in range(PER_THREAD)]


@pytest.mark.parametrize("kept_open", [True, False], ids=["kept-open", "a-session-per-call"])
def test_threads_sharing_one_backend(smtpd: SMTPServer, kept_open: bool) -> None:
    # The backend's lock makes each send_messages() call whole: a call's messages follow
    # one another in one session, never interleaved with another thread's.
    threads, calls, per_call = 4, 5, 5
    backend = backend_to(smtpd)
    if kept_open:
        assert backend.open() is True

    def send(n: int) -> int:
        return sum(
            backend.send_messages(messages(f"t{n}", per_call, batch=f"c{call}"))
            for call in range(calls)
        )

    try:
        assert run_in_threads(send, threads) == [calls * per_call] * threads
    finally:
        backend.close()

    total = threads * calls * per_call
    assert_delivered_exactly_once(smtpd, total)
    sessions = assert_each_session_is_its_own(1 if kept_open else threads * calls, total)
    # Each call's name ("t2c4") for every message, in the order the sessions hold them:
    # the calls' messages in unbroken runs, one run per call.
    names = [
        subject.split(" ")[0]
        for session in sessions
        for subject in session.messages.order_by("position").values_list("subject", flat=True)
    ]
    runs = [list(run) for _, run in itertools.groupby(names)]
    assert len(runs) == threads * calls
    assert {len(run) for run in runs} == {per_call}
    if not kept_open:  # and each call in a session of its own
        assert [len(session.messages.all()) for session in sessions] == [per_call] * len(sessions)


# -- processes ------------------------------------------------------------------------


def _start_django(database: str) -> None:
    """A worker process: the test settings, pointed at the test database the parent's
    pytest-django created (by name: a new process would take the normal one)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from tests import settings

    for alias in settings.DATABASES.values():
        alias["NAME"] = database
    django.setup()


def _send_from_a_process(job: tuple[str, int, int]) -> tuple[int, int]:
    host, port, n = job
    try:
        backend = backend_for(Peer(host, port), timeout=30)
        sent: int = backend.send_messages(messages(f"p{n}", PER_PROCESS))
        return os.getpid(), sent
    finally:
        connections.close_all()


def test_processes_each_sending(smtpd: SMTPServer) -> None:
    database = connections["default"].settings_dict["NAME"]
    context = multiprocessing.get_context("spawn")
    jobs = [(smtpd.host, smtpd.port, n) for n in range(PROCESSES)]
    with context.Pool(PROCESSES, initializer=_start_django, initargs=(database,)) as pool:
        results = pool.map_async(_send_from_a_process, jobs).get(TIMEOUT)

    assert [sent for _, sent in results] == [PER_PROCESS] * PROCESSES
    assert_delivered_exactly_once(smtpd, PROCESSES * PER_PROCESS)
    sessions = assert_each_session_is_its_own(PROCESSES, PROCESSES * PER_PROCESS)
    assert sorted(s for session in sessions for s in sender_of(session)) == sorted(
        f"p{n}@senders.test" for n in range(PROCESSES)
    )
