"""The audit log's cost per message: building the transcript and writing it.

    .venv/bin/python benchmarks/recording.py [--messages 500] [--rounds 7]
        [--database sqlite|postgresql|both] [--big 10000]

Feeds a :class:`~django_sockmail.transcript.Transcript` the events the client reports
for one pipelined session through smtp-sink (EHLO, then per message MAIL, RCPT, DATA,
their three replies, the content and the final reply: eight lines, one message, one
recipient; no RSET, as each transaction ended with its data), as the backend does,
and then calls ``recorder.record()`` on it. The replies, outcomes and message bytes are
made before the clock starts: what is timed is only what the transcript and the
recorder do. It prints the median over the rounds of
the microseconds per message for the building (paid with or without RECORD_SESSIONS)
and for the recording, and the queries the recording took.

Then a session of --big messages whose inputs come from a generator (nothing but the
transcript keeps them): the memory Python allocated (tracemalloc) that the built
transcript holds and the peak while recording it, and, in another fresh process
without tracemalloc, the growth of the peak resident memory (ru_maxrss) over both.

SQLite is a file in a temporary directory. PostgreSQL (127.0.0.1:5432, user postgres,
as in tests/settings.py; change with --pg-host, --pg-port, --pg-user) gets a database
of its own, ``test_sockmail_recording_bench``, created and dropped around the run.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_setup import setup_django  # noqa: E402 (beside this script)

MIB = 1024 * 1024
PG_NAME = "sockmail_recording_bench"  # Django's test-database machinery adds "test_"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="per session (timing)")
    parser.add_argument("--rounds", type=int, default=7, help="sessions timed (median)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--big", type=int, default=10_000, help="messages for the memory peak (0: skip)"
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", default="5432")
    parser.add_argument("--pg-user", default="postgres")
    return parser.parse_args()


# Django, in this process


def configure(database: str, directory: str, args: argparse.Namespace) -> None:

    if database == "sqlite":
        db: dict[str, Any] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(directory, "bench.sqlite3"),
        }
    else:
        db = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_NAME,
            "USER": args.pg_user,
            "HOST": args.pg_host,
            "PORT": args.pg_port,
        }
    setup_django(db)
    from django.core.management import call_command
    from django.db import connection

    if database == "sqlite":
        call_command("migrate", verbosity=0)
    else:  # a database of its own, migrated; dropped by teardown()
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)


def teardown(database: str) -> None:
    from django.db import connection

    if database == "postgresql":
        connection.creation.destroy_test_db(PG_NAME, verbosity=0)


# One session's events, as the client reports them through smtp-sink


@dataclass
class MessageEvents:
    """What the client reports for one message, and what the backend keeps of it."""

    commands: tuple[str, ...]
    replies: tuple[Any, ...]  # Reply objects, in order
    content: bytes
    final: Any  # the Reply to the end of data
    outcome: Any  # MessageOutcome
    message_id: str
    subject: str


def message_events(i: int) -> MessageEvents:
    from django_sockmail.smtp.replies import Reply
    from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome

    message_id = f"<179573998964.6520.{9321191067315289709 + i}@localhost>"
    subject = f"Benchmark message {i}"
    content = (
        'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
        f"Content-Transfer-Encoding: 7bit\r\nSubject: {subject}\r\n"
        f"From: bench@localhost\r\nTo: rcpt{i}@localhost\r\n"
        f"Date: Fri, 27 Nov 2026 00:39:49 -0000\r\nMessage-ID: {message_id}\r\n\r\n"
        f"Hello,\r\n\r\nthis is message number {i} of the benchmark.\r\n\r\n-- \r\nsockmail\r\n"
    ).encode()
    mail, rcpt = Reply(250, ("2.1.0 Ok",)), Reply(250, ("2.1.5 Ok",))
    data, final = Reply(354, ("End data with <CR><LF>.<CR><LF>",)), Reply(250, ("2.0.0 Ok",))
    commands: tuple[str, ...] = (
        "MAIL FROM:<bench@localhost>",
        f"RCPT TO:<rcpt{i}@localhost>",
        "DATA",
    )
    replies: tuple[Any, ...] = (mail, rcpt, data)
    outcome = MessageOutcome(
        sender="bench@localhost",
        recipients=[RecipientOutcome(f"rcpt{i}@localhost", rcpt)],
        mail_reply=mail,
        data_reply=data,
        final_reply=final,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    outcome.settle()
    return MessageEvents(commands, replies, content, final, outcome, message_id, subject)


def build(events: Iterable[MessageEvents]) -> Any:
    """A transcript fed as the client and the backend feed it."""
    from django_sockmail.smtp.events import TLSInfo
    from django_sockmail.smtp.replies import Reply
    from django_sockmail.transcript import MessageRecord, Transcript, header_block

    transcript = Transcript(host="127.0.0.1", port=25)
    transcript.on_connecting("127.0.0.1", 25)
    transcript.on_connected("127.0.0.1:25", "127.0.0.1:50274")
    transcript.on_reply(Reply(220, ("smtp-sink ESMTP",)))
    transcript.on_command("EHLO bench.localhost")
    transcript.on_reply(
        Reply(250, ("smtp-sink", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", ""))
    )
    transcript.tls = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")  # stored, no line
    for message in events:
        for command in message.commands:
            transcript.on_command(command)
        for reply in message.replies:
            transcript.on_reply(reply)
        transcript.on_content(message.content)
        transcript.on_reply(message.final)
        transcript.add_message(  # as EmailBackend._keep does
            MessageRecord(
                outcome=message.outcome,
                message_id=message.message_id,
                subject=message.subject,
                headers=header_block(message.content),
            )
        )
    transcript.on_command("QUIT")
    transcript.on_reply(Reply(221, ("Bye",)))
    transcript.on_closed()
    return transcript


def lazy_events(n: int) -> Iterator[MessageEvents]:
    return (message_events(i) for i in range(n))


# Measuring


def timings(messages: int, rounds: int) -> tuple[float, float, int]:
    """Median µs per message for building and for recording, and the queries taken."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_sockmail.recorder import record

    events = [message_events(i) for i in range(messages)]
    record(build(events[:20]))  # warm-up: imports, the first queries
    # Counted apart: a debug cursor renders every query with its parameters.
    with CaptureQueriesContext(connection) as captured:
        assert record(build(events)) is not None
    build_us, record_us = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        transcript = build(events)
        built = time.perf_counter()
        assert record(transcript) is not None
        done = time.perf_counter()
        build_us.append((built - started) / messages * 1e6)
        record_us.append((done - built) / messages * 1e6)
    return statistics.median(build_us), statistics.median(record_us), len(captured)


def memory(database: str, n: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """(what the built transcript holds, the peak while recording it, both as traced by
    tracemalloc; the growth of ru_maxrss over both, without tracemalloc), in MiB, each
    from a fresh process."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        kept, peak = pool.apply(measure_memory, (database, n, args, True))
    with context.Pool(1) as pool:
        (rss,) = pool.apply(measure_memory, (database, n, args, False))
    return kept, peak, rss


def measure_memory(
    database: str, n: int, args: argparse.Namespace, traced: bool
) -> tuple[float, ...]:
    import resource
    import tracemalloc

    directory = tempfile.mkdtemp(prefix="sockmail-bench-")
    try:
        configure(database, directory, args)
        from django_sockmail.recorder import record

        try:
            record(build(lazy_events(20)))  # warm-up
            if traced:
                tracemalloc.start()
                transcript = build(lazy_events(n))
                kept, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                assert record(transcript) is not None
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                return kept / MIB, peak / MIB
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert record(build(lazy_events(n))) is not None
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return ((after - before) / 1024,)  # ru_maxrss is in KiB on Linux
        finally:
            teardown(database)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure(database: str, args: argparse.Namespace) -> tuple[float, float, int]:
    directory = tempfile.mkdtemp(prefix="sockmail-bench-")
    try:
        configure(database, directory, args)
        try:
            return timings(args.messages, args.rounds)
        finally:
            teardown(database)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    args = parse_args()
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    context = multiprocessing.get_context("spawn")  # Django is configured once per process
    print(
        f"{args.messages} messages per session, median of {args.rounds} sessions (µs per message)"
    )
    print(f"{'database':<12} {'build':>8} {'record':>8} {'queries':>8}")
    for database in databases:
        with context.Pool(1) as pool:
            build_us, record_us, queries = pool.apply(measure, (database, args))
        print(f"{database:<12} {build_us:>8.1f} {record_us:>8.1f} {queries:>8}", flush=True)
    if not args.big:
        return
    print()
    print(f"one session of {args.big:,} messages from a generator (MiB):")
    print(f"{'database':<12} {'transcript':>11} {'peak recording':>15} {'max RSS growth':>15}")
    for database in databases:
        kept, record_peak, rss = memory(database, args.big, args)
        print(f"{database:<12} {kept:>11.1f} {record_peak:>15.1f} {rss:>15.1f}", flush=True)


if __name__ == "__main__":
    main()
