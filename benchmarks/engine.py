"""What the transaction engine itself costs per message, without sockets or Django.

    .venv/bin/python benchmarks/engine.py [--transactions 20000] [--rounds 5]

Drives :class:`~django_sockmail.smtp.transactions.TransactionEngine` with scripted
replies, as the socket driver would: offer a transaction, take each reply (MAIL, RCPT,
DATA's 354, the verdict; or MAIL, RCPT and BDAT's verdict), confirm at the end of the
window. Pipelined and one command at a time, with DATA and with BDAT. The
transactions are prepared before the clock starts. Prints the best round's
microseconds per transaction for each case.

Run it in a checkout of another commit to compare; where ``smtp/transactions.py`` does
not exist yet (before issue 12), it drives ``smtp/pipeline.py``'s ``Pipeline``, which
had no one-at-a-time mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django_sockmail.smtp.envelope import make_envelope
from django_sockmail.smtp.protocol import Capabilities
from django_sockmail.smtp.replies import ReplyParser

try:
    from django_sockmail.smtp.transactions import TransactionEngine as Engine
    from django_sockmail.smtp.transactions import prepare

    MODES = [True, False]
except ImportError:  # a checkout from before the one engine
    from django_sockmail.smtp.pipeline import Pipeline as Engine  # type: ignore
    from django_sockmail.smtp.pipeline import prepare  # type: ignore

    MODES = [True]

CONTENT = b"Subject: benchmark\r\n\r\n" + b"a line of the body\r\n" * 10
ENVELOPE = make_envelope("from@example.org", ["to@example.org"])


def reply(text: str) -> Any:
    [parsed] = ReplyParser().feed(text.encode() + b"\r\n")
    return parsed


def capabilities(chunking: bool) -> Capabilities:
    lines = ["250-mx.example", "250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
    lines += ["250-CHUNKING"] if chunking else []
    lines[-1] = lines[-1].replace("250-", "250 ", 1)
    return Capabilities.from_ehlo(reply("\r\n".join(lines)))


def replies(chunking: bool) -> list[Any]:
    texts = ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    texts += [] if chunking else ["354 End data with <CR><LF>.<CR><LF>"]
    return [reply(t) for t in [*texts, "250 2.0.0 Ok: queued as 4F2ZXq1L"]]


def best_round(pipelined: bool, chunking: bool, count: int, rounds: int) -> float:
    caps, answers = capabilities(chunking), replies(chunking)
    mode = {"pipelining": pipelined} if MODES != [True] else {}
    best = float("inf")
    for _ in range(rounds):
        transactions = [prepare(caps, ENVELOPE, CONTENT) for _ in range(count)]
        started = time.perf_counter()
        engine = Engine(caps, chunking=chunking, reset_first=False, **mode)
        for transaction in transactions:
            engine.offer(transaction)
            for answer in answers:
                engine.receive(answer)
            engine.end_of_window()
            engine.take_confirmed()
        best = min(best, time.perf_counter() - started)
        assert all(t.outcome.status == "sent" for t in transactions)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'mode':<20} {'DATA µs/msg':>12} {'BDAT µs/msg':>12}")
    for pipelined in MODES:
        data = best_round(pipelined, False, args.transactions, args.rounds)
        bdat = best_round(pipelined, True, args.transactions, args.rounds)
        name = "pipelined" if pipelined else "one at a time"
        print(f"{name:<20} {data:>12.2f} {bdat:>12.2f}")


if __name__ == "__main__":
    main()
