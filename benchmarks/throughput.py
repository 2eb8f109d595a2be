"""Sending speed: django_sockmail against Django's SMTP backend, through Postfix's
smtp-sink and through a real Postfix.

    .venv/bin/python benchmarks/throughput.py [--messages 500] [--rounds 3]

Starts ``smtp-sink`` (Debian's postfix package; ``source scripts/postfix.sh;
ensure_postfix`` installs it) on 127.0.0.1 and a free port, configures Django in this
process (SQLite in a temporary directory, migrated, django_sockmail installed; or, with
--database, SQLite in WAL mode or a PostgreSQL database of its own), builds
the messages once (small text messages, one recipient each, the same objects for every
backend) and sends them, one connection per batch, alternating in every round:

- Django's ``django.core.mail.backends.smtp.EmailBackend`` (smtplib: one round trip per
  command),
- ours with the audit log on (the default), and
- ours with ``SOCKMAIL = {"RECORD_SESSIONS": False}``.

Three scenarios: smtp-sink on loopback directly; smtp-sink behind a delay line (a
TCP proxy in a process of its own that holds every chunk 5 ms each way: 10 ms round
trip), which sends fewer messages (--delay-messages) because every round trip counts,
and behind it --single-messages more, each on a connection of its own as send_mail()
sends it (connect, EHLO, the message, QUIT); and a real Postfix behind the same delay
line: a private instance (tests/postfix.py,
needs root; its queue on /dev/shm) that offers PIPELINING and CHUNKING like any
Postfix, and hands what it accepts to its discard transport, so delivery takes
nothing from acceptance (``--no-postfix`` skips it).
The table gives the median msg/s of the rounds, ours/Django, and what recording the
session costs (on against off). Last, --big-batch messages, built lazily by a generator,
go through each backend over loopback, each in a fresh process, for the growth of the
peak resident memory (ru_maxrss) during the batch.

Nothing is sent anywhere but 127.0.0.1; every server and proxy here stops by itself
(a Postfix left behind by a killed run is stopped by the next one that starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_setup import setup_django  # noqa: E402 (beside this script)

SMTP_SINK = "/usr/sbin/smtp-sink"
HOST = "127.0.0.1"  # the only address this benchmark ever talks to
DELAY = 0.005  # seconds each chunk is held, each way
PROXY_LIFETIME = 600.0  # seconds: the delay line stops by itself after this at the latest
POSTFIX_DOMAIN = "sockmail.test"  # = tests.postfix.DOMAIN


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="per batch on loopback")
    parser.add_argument(
        "--delay-messages", type=int, default=100, help="per batch on the delay line"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument(
        "--single-messages",
        type=int,
        default=20,
        help="messages sent one to a connection on the delay line, as send_mail() does",
    )
    parser.add_argument(
        "--big-batch", type=int, default=10_000, help="messages for the memory peak (0: skip)"
    )
    parser.add_argument("--no-postfix", action="store_true", help="skip the real Postfix scenario")
    parser.add_argument(
        "--database",
        choices=("sqlite", "sqlite-wal", "postgresql"),
        default="sqlite",
        help="where the audit log goes (see database_settings)",
    )
    return parser.parse_args()


# Django, in this process


# The common tuning of SQLite for production: no flush of the disk at every commit.
SQLITE_WAL = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
PG_NAME = "sockmail_throughput_bench"  # Django's test-database machinery adds "test_"


def database_settings(kind: str, directory: str) -> dict[str, Any]:
    """Where the audit log goes: SQLite in ``directory`` as Django configures it (a
    rollback journal, every commit flushed to disk), SQLite in WAL mode with
    synchronous=NORMAL, or a database of its own on the PostgreSQL of the tests."""
    if kind == "postgresql":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_NAME,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    database: dict[str, Any] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(directory, "bench.sqlite3"),
    }
    if kind == "sqlite-wal":
        database["OPTIONS"] = {"init_command": SQLITE_WAL}
    return database


def configure(directory: str, kind: str, *, create: bool = True) -> None:
    """Django in this process, its database migrated (``create``: made first; without
    it, a PostgreSQL database an earlier configure() made is used as it is)."""
    from django.core.management import call_command
    from django.db import connection

    setup_django(database_settings(kind, directory), EMAIL_HOST=HOST, EMAIL_TIMEOUT=30)
    if kind != "postgresql":
        call_command("migrate", verbosity=0)
    elif create:  # test_<PG_NAME>, made afresh and migrated; dropped by teardown()
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    else:
        connection.settings_dict["NAME"] = f"test_{PG_NAME}"


def teardown(kind: str) -> None:
    from django.db import connection

    if kind == "postgresql":
        connection.creation.destroy_test_db(PG_NAME, verbosity=0)


def make_message(i: int) -> Any:
    from django.core.mail import EmailMessage

    return EmailMessage(
        subject=f"Benchmark message {i}",
        body=f"Hello,\n\nthis is message number {i} of the benchmark.\n\n-- \nsockmail\n",
        from_email="bench@localhost",
        # The private Postfix takes mail for this domain only; smtp-sink takes anything.
        to=[f"rcpt{i}@{POSTFIX_DOMAIN}"],
    )


# The peers: smtp-sink and the delay line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """smtp-sink on 127.0.0.1 and a free port: a backlog of 100, no dump file."""
    if not os.access(SMTP_SINK, os.X_OK):
        sys.exit(f"{SMTP_SINK} is missing: source scripts/postfix.sh; ensure_smtp_sink")
    port = free_port()
    command = [SMTP_SINK]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # it refuses to run as root without it
    command += [f"{HOST}:{port}", "100"]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield port
    finally:
        sink.terminate()
        try:
            sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward one direction: every chunk leaves ``delay`` seconds after it arrived.
    One FIFO queue and one writer per direction, so the order is the order of arrival."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:  # the sender closed its side: pass the close on, in order
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    with contextlib.suppress(OSError):  # a reset: the session is over either way
        await asyncio.gather(receive(), send())


async def _delay_line(listen_port: int, target_port: int, delay: float, ready: Any) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _carry(client_r, server_w, delay),
            _carry(server_r, client_w, delay),
            return_exceptions=True,
        )
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(handle, HOST, listen_port)
    ready.set()
    async with server:
        # Bounded in time: the parent terminates this process when done, and it ends
        # itself after PROXY_LIFETIME whatever happens to the parent.
        await asyncio.sleep(PROXY_LIFETIME)


def run_delay_line(listen_port: int, target_port: int, delay: float, ready: Any) -> None:
    asyncio.run(_delay_line(listen_port, target_port, delay, ready))


@contextlib.contextmanager
def delay_line(target_port: int) -> Iterator[int]:
    """A TCP proxy on 127.0.0.1 that adds DELAY each way, in a process of its own so it
    takes no time from the client being measured."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    port = free_port()
    proxy = context.Process(
        target=run_delay_line, args=(port, target_port, DELAY, ready), daemon=True
    )
    proxy.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the delay line did not start")
        yield port
    finally:
        proxy.terminate()
        proxy.join(5)


# Measuring


def django_backend(port: int) -> Any:
    from django.core.mail.backends.smtp import EmailBackend

    return EmailBackend(host=HOST, port=port, timeout=30)


def our_backend(port: int) -> Any:
    from django_sockmail.backend import EmailBackend

    return EmailBackend(host=HOST, port=port, timeout=30)


def send_batch(backend: Any, messages: Any, record: bool) -> int:
    """One connection for the whole batch, as the task says: ``with backend:``."""
    from django.test import override_settings

    with (
        override_settings(
            SOCKMAIL={"LOCAL_HOSTNAME": "bench.localhost", "RECORD_SESSIONS": record}
        ),
        backend,
    ):
        sent: int = backend.send_messages(messages)
    return sent


def send_each(backend: Callable[[int], Any], port: int, messages: Any, record: bool) -> int:
    """Each message on a connection of its own, as ``send_mail()`` sends it: a new
    backend, opened and closed by send_messages() itself."""
    from django.test import override_settings

    sent = 0
    with override_settings(
        SOCKMAIL={"LOCAL_HOSTNAME": "bench.localhost", "RECORD_SESSIONS": record}
    ):
        for message in messages:
            sent += backend(port).send_messages([message])
    return sent


CASES: tuple[tuple[str, Callable[[int], Any], bool], ...] = (
    ("django", django_backend, False),
    ("ours, recording on", our_backend, True),
    ("ours, recording off", our_backend, False),
)


def rates(port: int, messages: list[Any], rounds: int, *, each: bool = False) -> dict[str, float]:
    """Median msg/s of each case, the cases alternating within every round: one
    connection for the batch, or (``each``) a connection for each message."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    for _, backend, record in CASES:  # warm-up, not counted: imports, first queries
        send_batch(backend(port), messages[:20], record)
    for round_number in range(rounds):
        # Each case runs first, second and last in turn, and starts with no garbage of
        # the case before it to collect: neither order nor leftovers favour one.
        shift = round_number % len(CASES)
        for name, backend, record in CASES[shift:] + CASES[:shift]:
            gc.collect()
            started = time.perf_counter()
            if each:
                sent = send_each(backend, port, messages, record)
            else:
                sent = send_batch(backend(port), messages, record)
            elapsed = time.perf_counter() - started
            assert sent == len(messages), (name, sent)
            samples[name].append(len(messages) / elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_memory(port: int, n: int, kind: str) -> list[tuple[str, float, float]]:
    """(case, growth of the peak RSS in MiB, seconds) for n messages from a generator,
    each case in a fresh process, so one case's peak does not hide the next one's."""
    context = multiprocessing.get_context("spawn")
    results = []
    for name, _, _ in CASES:
        with context.Pool(1) as pool:
            growth, elapsed = pool.apply(measure_memory, (name, port, n, kind))
        results.append((name, growth, elapsed))
    return results


def measure_memory(case: str, port: int, n: int, kind: str) -> tuple[float, float]:
    """In a child process: configure Django, warm up, then send n messages made by a
    generator and return how far the peak RSS (ru_maxrss) rose, in MiB, and the time."""
    import resource

    directory = tempfile.mkdtemp(prefix="sockmail-bench-")
    try:
        configure(directory, kind, create=False)
        _, backend, record = next(c for c in CASES if c[0] == case)
        send_batch(backend(port), [make_message(i) for i in range(20)], record)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        sent = send_batch(backend(port), (make_message(i) for i in range(n)), record)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert sent == n, (case, sent)
        return (after - before) / 1024, elapsed  # ru_maxrss is in KiB on Linux
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def postfix_rates(messages: list[Any], rounds: int) -> list[tuple[str, dict[str, float]]]:
    """Scenario (c): a private Postfix, discarding what it accepts, behind the delay line.
    Nothing (and a note why) where no instance can be started."""
    from tests.postfix import PostfixInstance, unavailable

    reason = unavailable()
    if reason:
        print(f"  Postfix: skipped, {reason}", flush=True)
        return []
    with PostfixInstance(deliver=False) as postfix, delay_line(postfix.port) as proxy_port:
        assert postfix.domain == POSTFIX_DOMAIN
        print(f"  Postfix on {HOST}:{postfix.port} ({postfix.directory})", flush=True)
        started = time.perf_counter()
        rate = rates(proxy_port, messages, rounds)
        print(f"  Postfix, delay line: {time.perf_counter() - started:.1f} s", flush=True)
    return [(f"Postfix, delay line, 10 ms RTT ({len(messages)} msgs)", rate)]


def main() -> None:
    args = parse_args()
    directory = tempfile.mkdtemp(prefix="sockmail-bench-")
    try:
        configure(directory, args.database)
        try:
            run(args)
        finally:
            teardown(args.database)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    from django_sockmail.models import Session

    loopback_messages = [make_message(i) for i in range(args.messages)]
    delay_messages = loopback_messages[: args.delay_messages]
    if len(delay_messages) < args.delay_messages:
        delay_messages = [make_message(i) for i in range(args.delay_messages)]
    table = []
    with smtp_sink() as sink_port:
        print(f"smtp-sink on {HOST}:{sink_port}; {args.rounds} rounds, alternating", flush=True)
        started = time.perf_counter()
        table.append(
            (
                f"smtp-sink, loopback ({len(loopback_messages)} msgs)",
                rates(sink_port, loopback_messages, args.rounds),
            )
        )
        print(f"  loopback: {time.perf_counter() - started:.1f} s", flush=True)
        with delay_line(sink_port) as proxy_port:
            started = time.perf_counter()
            table.append(
                (
                    f"delay line, 10 ms RTT ({len(delay_messages)} msgs)",
                    rates(proxy_port, delay_messages, args.rounds),
                )
            )
            print(f"  delay line: {time.perf_counter() - started:.1f} s", flush=True)
            started = time.perf_counter()
            single = delay_messages[: args.single_messages]
            table.append(
                (
                    f"send_mail(), 10 ms RTT ({len(single)} connections)",
                    rates(proxy_port, single, args.rounds, each=True),
                )
            )
            print(f"  send_mail(): {time.perf_counter() - started:.1f} s", flush=True)
        if not args.no_postfix:
            table.extend(postfix_rates(delay_messages, args.rounds))
        memory = peak_memory(sink_port, args.big_batch, args.database) if args.big_batch else []
    print()
    print(
        f"{'scenario':<42} {'Django msg/s':>12} {'ours msg/s':>11} {'ours/Django':>12}"
        f" {'ours, no recording':>19} {'recording cost':>15}"
    )
    for scenario, rate in table:
        django, on, off = (rate[name] for name, _, _ in CASES)
        cost = (off / on - 1) * 100  # extra time per message with recording on
        print(
            f"{scenario:<42} {django:>12,.0f} {on:>11,.0f} {on / django:>11.2f}x"
            f" {off:>19,.0f} {cost:>14.0f}%"
        )
    if memory:
        print()
        print(f"{args.big_batch:,} messages built by a generator, over loopback (peak RSS growth):")
        for name, peak, elapsed in memory:
            print(f"  {name:<22} peak +{peak:6.1f} MiB   {elapsed:6.1f} s")
    print(f"\n{Session.objects.count()} sessions recorded ({args.database})", flush=True)


if __name__ == "__main__":
    main()
