"""The in-memory transcript: kept for every session, recorded or not, so it must stay
small for a session of many thousand messages and still read back exactly as it was
said."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django_sockmail.smtp.replies import Reply
from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome
from django_sockmail.transcript import (
    CLIENT,
    CONTENT,
    SERVER,
    Line,
    MessageRecord,
    Transcript,
    header_block,
)

COUNT = 10_000


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Yields a function that tells how many bytes were allocated, and are still held,
    since the block began."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        yield lambda: tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()


def test_a_line_takes_a_few_dozen_bytes_beyond_its_text() -> None:
    transcript = Transcript()
    with traced() as held:
        for _ in range(COUNT):
            transcript.on_command("RSET")  # one string for all the lines
        per_line = held() / COUNT

    assert per_line < 40  # an object and a float per line took about 130
    assert len(transcript.lines) == COUNT
    first, last = transcript.lines[0], transcript.lines[-1]
    assert (first.direction, first.text) == (last.direction, last.text) == (CLIENT, "RSET")
    assert 0 <= first.offset <= last.offset
    assert transcript.lines[1:3] == [transcript.lines[1], transcript.lines[2]]
    assert list(transcript.lines)[COUNT // 2] == transcript.lines[COUNT // 2]


def test_a_reply_is_not_copied_and_reads_as_on_the_wire() -> None:
    # The replies are kept by the messages' outcomes anyway.
    replies = [Reply(250, (f"2.1.5 Ok {i}",)) for i in range(COUNT)]
    transcript = Transcript()
    with traced() as held:
        for reply in replies:
            transcript.on_reply(reply)
        per_reply = held() / COUNT

    assert per_reply < 40  # its text written out, and a Line, took about 190
    more = [Reply(250, ("mx.example.org", "PIPELINING", "")), Reply(221, ("",))]
    for reply in more:
        transcript.on_reply(reply)
    assert [line.text for line in transcript.lines] == [
        text for reply in replies + more for text in reply.wire_lines()
    ]
    assert transcript.lines[-1] == Line(transcript.lines[-1].offset, SERVER, "221")


def test_a_header_block_is_kept_once_for_the_line_and_the_message() -> None:
    headers = "".join(f"X-Header-{i}: {'v' * 60}\r\n" for i in range(300))
    content = f"{headers}Subject: big\r\n\r\nthe body\r\n".encode()
    outcome = MessageOutcome(
        sender="a@example.org", recipients=[RecipientOutcome("b@example.org")], size=len(content)
    )
    transcript = Transcript()
    with traced() as held:
        # As the backend does: its record has a header block of its own.
        record = MessageRecord(outcome, headers=header_block(content))
        transcript.on_content(content)
        transcript.add_message(record)
        kept = held()

    block = header_block(content)
    assert kept < 1.5 * len(block)  # it was twice, in the content line and the record
    assert record.headers == block
    assert record.content_stored == len(block.encode())
    line = transcript.lines[-1]
    assert line.direction == CONTENT
    assert line.text == f"{block}\n\n[message content: {len(content)} bytes; body not stored]"
