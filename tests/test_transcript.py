"""The in-memory transcript: kept for every session, recorded or not, so it must stay
small for a session of many thousand messages and still read back exactly as it was
said."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from django_sockmail import transcript as transcript_module
from django_sockmail.smtp.replies import Reply, ReplyParser
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


def long_reply(code: int, lines: int, line_bytes: int) -> bytes:
    text = b"x" * (line_bytes - 6)
    return b"".join(
        b"%d%s%s\r\n" % (code, b" " if i == lines - 1 else b"-", text) for i in range(lines)
    )


def test_a_cut_reply_reads_with_its_note_and_is_not_copied() -> None:
    parser = ReplyParser()
    [one_line] = parser.feed(long_reply(550, 1, 8000))
    many = [parser.feed(long_reply(250, 31, 8000))[0] for _ in range(100)]
    transcript = Transcript()
    with traced() as held:
        transcript.on_reply(one_line)
        for reply in many:
            transcript.on_reply(reply)
        per_line = held() / len(transcript.lines)

    assert per_line < 100  # each line's text was a copy: over a thousand bytes
    texts = [line.text for line in transcript.lines]
    assert texts == [text for reply in [one_line, *many] for text in reply.wire_lines()]
    assert texts[:2] == [
        f"550 {'x' * 1000}...",
        "[... 6,994 of the reply's 8,000 bytes not kept]",
    ]
    assert texts[-1] == "[... 27 more lines and 243,976 of the reply's 248,000 bytes not kept]"


NORMAL = {
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "END": b"250 2.0.0 Ok: queued as 4Tq2Kx0abcZ1\r\n",
}
LONG = {verb: long_reply(250, 31, 8000) for verb in ("MAIL", "RCPT", "END")}
LONG["DATA"] = long_reply(354, 31, 8000)
CONTENT_BYTES = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <1.2@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n"
)


def converse(transcript: Transcript, n: int, replies: dict[str, bytes]) -> None:
    """One message's transaction, as the client and the backend report it."""
    parser, said = ReplyParser(), {}
    for verb, command in [
        ("MAIL", f"MAIL FROM:<a{n}@example.org>"),
        ("RCPT", f"RCPT TO:<b{n}@example.org>"),
        ("DATA", "DATA"),
    ]:
        transcript.on_command(command)
        [said[verb]] = parser.feed(replies[verb])
        transcript.on_reply(said[verb])
    transcript.on_content(CONTENT_BYTES)
    [said["END"]] = parser.feed(replies["END"])
    transcript.on_reply(said["END"])
    outcome = MessageOutcome(
        sender=f"a{n}@example.org",
        recipients=[RecipientOutcome(f"b{n}@example.org", said["RCPT"])],
        mail_reply=said["MAIL"],
        final_reply=said["END"],
        size=len(CONTENT_BYTES),
    )
    outcome.settle()
    headers = header_block(CONTENT_BYTES)
    transcript.add_message(MessageRecord(outcome, subject=f"hello {n}", headers=headers))


@pytest.mark.parametrize(("replies", "count"), [(NORMAL, 300), (LONG, 10)], ids=["usual", "long"])
def test_held_bytes_is_about_what_the_lines_and_records_hold(
    replies: dict[str, bytes], count: int
) -> None:
    # What the byte budget is measured in: it must follow the memory, within a factor.
    transcript = Transcript()
    with traced() as held:
        for n in range(count):
            converse(transcript, n, replies)
        real = held()
    assert 0.75 < transcript.held_bytes / real < 1.5


def test_an_open_session_needs_writing_every_so_many_messages_or_at_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transcript = Transcript()
    for n in range(3):
        converse(transcript, n, NORMAL)
    assert transcript.needs_writing(3) and not transcript.needs_writing(4)
    assert not transcript.needs_writing(0)  # 0: never for the number of messages
    monkeypatch.setattr(transcript_module, "HELD_BYTES_BUDGET", transcript.held_bytes)
    assert transcript.needs_writing(0) and transcript.needs_writing(4)

    lines = len(transcript.lines)
    transcript.forget_written(7)
    assert (transcript.session_id, transcript.held_bytes) == (7, 0)
    assert (len(transcript.lines), transcript.messages) == (0, [])
    assert (transcript.lines_written, transcript.messages_written) == (lines, 3)
    assert not transcript.needs_writing(0)
