"""An in-memory record of one SMTP session: what was said, when, and what became of
each message. It implements :class:`~django_sockmail.smtp.events.SessionListener`;
:mod:`django_sockmail.recorder` writes it to the database. No ORM here.

The backend keeps a transcript of every session, recorded or not, and a session can
run to many thousands of messages, so the lines are held compactly (:class:`Lines`)
and made into text only when they are read.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from .smtp.events import TLSInfo
from .smtp.reply import Reply
from .smtp.results import MessageOutcome
from .smtp.status import SessionStatus

CLIENT = "C"  # a command line the client sent (credentials already redacted)
SERVER = "S"  # a reply line from the server
CONTENT = "D"  # the message content, as much of it as is kept
INFO = "*"  # what happened around the conversation: connect, TLS, close, errors

# How the session ended, by the names the package first gave them.
OK = SessionStatus.OK
FAILED = SessionStatus.FAILED
TIMED_OUT = SessionStatus.TIMED_OUT  # failed because the server did not answer in time

# How much of each message's content a transcript keeps (SOCKMAIL["STORE_CONTENT"]).
CONTENT_FULL = "full"  # the whole message, up to a cap
CONTENT_HEADERS = "headers"  # the header block and the size
CONTENT_ENVELOPE = "envelope"  # none of the content: no headers, no subject
CONTENT_MODES = (CONTENT_FULL, CONTENT_HEADERS, CONTENT_ENVELOPE)

# Header blocks of content lines that no message record has claimed yet (see
# Transcript.add_message); past this many, sharing them is given up, never correctness.
_UNCLAIMED_LIMIT = 256

# An open session is written to the database (recorder.write_so_far) and forgotten once
# what its transcript holds passes this many bytes (Transcript.held_bytes), however
# few messages that is: with a server's long replies (up to KEPT_TEXT_BYTES each, see
# smtp/replies.py) or contents kept whole, WRITE_EVERY messages could be far more.
HELD_BYTES_BUDGET = 8 << 20
# What the transcript holds beyond the text, about (measured with tracemalloc): a line
# (its offset, direction and text object), and a message record (its outcome, and
# each recipient's; their replies are the transcript's lines).
_LINE_BYTES = 64
_MESSAGE_BYTES = 1024
_RECIPIENT_BYTES = 256


@dataclass(frozen=True, slots=True)
class Line:
    offset: float  # seconds since the session started
    direction: str
    text: str


@dataclass(slots=True)
class MessageRecord:
    """One message offered in the session, with the server's verdict."""

    outcome: MessageOutcome
    message_id: str = ""
    subject: str = ""
    headers: str = ""
    content_mode: str = CONTENT_HEADERS
    content_stored: int = 0  # bytes of the content kept in the transcript


def header_block(content: bytes) -> str:
    """The header section of a message: everything before the first empty line."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    return head.decode("utf-8", errors="replace").replace("\r\n", "\n").rstrip("\n")


class _HeadersNote:
    """The content line of a message whose header block is kept. The block is the
    same string as the message record's ``headers``, so it is held once."""

    __slots__ = ("headers", "size")

    def __init__(self, headers: str, size: int) -> None:
        self.headers = headers
        self.size = size

    def __str__(self) -> str:
        return f"{self.headers}\n\n[message content: {self.size} bytes; body not stored]"


class _ReplyLine:
    """A line of a reply of several: the reply (which a message's outcome keeps too)
    and which of its :meth:`~Reply.wire_lines` this is."""

    __slots__ = ("index", "reply")

    def __init__(self, reply: Reply, index: int) -> None:
        self.reply = reply
        self.index = index

    def __str__(self) -> str:
        return self.reply.wire_line(self.index)

    @property
    def size(self) -> int:
        """The length of the reply's text this line holds."""
        lines = self.reply.lines
        return len(lines[self.index]) if self.index < len(lines) else len(self.reply.cut_note)


# A line's text as it is held: the text itself, a reply or a line of one (already kept
# by the message's outcome), or a content note; made into text when the line is read.
_Text = str | Reply | _ReplyLine | _HeadersNote


def _text(held: _Text) -> str:
    if type(held) is str:
        return held
    if isinstance(held, Reply):  # one line: written as Reply.wire_lines() writes it
        return f"{held.code} {held.lines[0]}".rstrip()
    return str(held)


def _held(held: _Text) -> int:
    """About what a line holds: its text's length and what a line costs beyond it."""
    if isinstance(held, str):
        return _LINE_BYTES + len(held)
    if isinstance(held, Reply):
        return _LINE_BYTES + len(held.lines[0])
    if isinstance(held, _ReplyLine):
        return _LINE_BYTES + held.size
    return _LINE_BYTES + len(held.headers)


class Lines(Sequence[Line]):
    """A transcript's lines, in order: a sequence of :class:`Line`.

    Held as an array of offsets and two lists rather than as an object per line (a
    fifth of the memory); each :class:`Line` is made when it is read.
    """

    __slots__ = ("_directions", "_offsets", "_texts", "held_bytes")

    def __init__(self, lines: Iterable[Line] = ()) -> None:
        self._offsets = array("d")
        self._directions: list[str] = []
        self._texts: list[_Text] = []
        self.held_bytes = 0  # about what the lines hold: see _held()
        for line in lines:
            self.append(line.offset, line.direction, line.text)

    def append(self, offset: float, direction: str, text: _Text) -> None:
        self._offsets.append(offset)
        self._directions.append(direction)
        self._texts.append(text)
        self.held_bytes += _held(text)

    def rows(self) -> Iterator[tuple[float, str, str]]:
        """``(offset, direction, text)`` of each line, without a :class:`Line` each."""
        return zip(self._offsets, self._directions, map(_text, self._texts), strict=True)

    def columns(self, start: int, stop: int) -> tuple[array[float], list[str], list[str]]:
        """The offsets, directions and texts of lines ``start`` to ``stop``, column by
        column: what a writer that works a column at a time takes."""
        texts = list(map(_text, self._texts[start:stop]))
        return self._offsets[start:stop], self._directions[start:stop], texts

    def __len__(self) -> int:
        return len(self._texts)

    @overload
    def __getitem__(self, index: int) -> Line: ...
    @overload
    def __getitem__(self, index: slice) -> list[Line]: ...
    def __getitem__(self, index: int | slice) -> Line | list[Line]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Line(self._offsets[index], self._directions[index], _text(self._texts[index]))

    def __iter__(self) -> Iterator[Line]:
        for offset, direction, text in self.rows():
            yield Line(offset, direction, text)

    def __repr__(self) -> str:
        return f"<Lines: {len(self)}>"


class _LinesField:
    """``Transcript.lines``: whatever sequence of lines is given or assigned is kept as
    :class:`Lines` (a dataclass field whose default is a descriptor)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attribute = f"_{name}"

    @overload
    def __get__(self, transcript: None, owner: type) -> tuple[()]: ...
    @overload
    def __get__(self, transcript: Transcript, owner: type) -> Lines: ...
    def __get__(self, transcript: Transcript | None, owner: type) -> Lines | tuple[()]:
        if transcript is None:
            return ()  # the field's default: no lines
        lines: Lines = getattr(transcript, self._attribute)
        return lines

    def __set__(self, transcript: Transcript, lines: Iterable[Line]) -> None:
        setattr(transcript, self._attribute, lines if isinstance(lines, Lines) else Lines(lines))


@dataclass
class Transcript:
    """Collects one session's events with their time offsets."""

    host: str = ""
    port: int = 0
    security: str = "none"  # "none", "starttls" or "ssl"
    content_mode: str = CONTENT_HEADERS
    content_max_bytes: int = 256 * 1024
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    peer_address: str = ""
    local_address: str = ""
    tls: TLSInfo | None = None
    status: SessionStatus = OK
    error: str = ""
    lines: _LinesField = _LinesField()
    messages: list[MessageRecord] = field(default_factory=list)
    # What an earlier write of a session still open took (recorder.write_so_far): its
    # row, and how many lines and messages went, which the transcript no longer holds.
    session_id: int | None = None
    lines_written: int = 0
    messages_written: int = 0
    sent_written: int = 0
    _start: float = field(default_factory=time.monotonic, repr=False)
    _unclaimed: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _records_held: int = field(default=0, init=False, repr=False)

    @property
    def held_bytes(self) -> int:
        """About how many bytes the lines and message records held now take: their
        text, and a fixed cost for each line, message and recipient. Bounded per
        message whatever the server says (its replies are cut, see smtp/replies.py)."""
        return self.lines.held_bytes + self._records_held

    def needs_writing(self, write_every: int) -> bool:
        """Whether an open session should go to the database now: ``write_every``
        messages are held (0: never for their number), or what is held passes
        HELD_BYTES_BUDGET."""
        if write_every and len(self.messages) >= write_every:
            return True
        return self.held_bytes >= HELD_BYTES_BUDGET

    def forget_written(self, session_id: int) -> None:
        """Everything held so far is in the database, in session ``session_id``."""
        self.session_id = session_id
        self.forget()

    def forget(self) -> None:
        """Let go of the lines and message records held (they are in the database,
        or go nowhere), counting them as written."""
        self.lines_written += len(self.lines)
        self.messages_written += len(self.messages)
        self.sent_written += sum(record.outcome.taken for record in self.messages)
        self.lines = Lines()
        self.messages = []
        self._records_held = 0
        self._unclaimed.clear()  # the lines that shared these are gone

    def add_line(self, direction: str, text: str) -> None:
        self.lines.append(time.monotonic() - self._start, direction, text)

    def add_message(self, record: MessageRecord) -> None:
        """Keep a message's record, with as much of its content as the mode allows."""
        size = record.outcome.size
        record.content_mode = self.content_mode
        if self.content_mode == CONTENT_FULL:
            record.content_stored = min(size, self.content_max_bytes)
        elif self.content_mode == CONTENT_HEADERS:
            # The same header block as a content line's: keep that one string for both.
            record.headers = self._unclaimed.pop(record.headers, record.headers)
            record.content_stored = len(record.headers.encode())
        else:
            record.subject, record.headers, record.content_stored = "", "", 0
        self.messages.append(record)
        self._records_held += (
            _MESSAGE_BYTES
            + _RECIPIENT_BYTES * len(record.outcome.recipients)
            + len(record.subject)
            + len(record.headers)  # counted twice when shared with a content line: "about"
        )

    # SessionListener

    def on_connecting(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.add_line(INFO, f"connecting to {host} port {port}")

    def on_connected(self, peer_address: str, local_address: str) -> None:
        self.peer_address, self.local_address = peer_address, local_address
        self.add_line(INFO, f"connected to {peer_address} from {local_address}")

    def on_command(self, text: str) -> None:
        self.add_line(CLIENT, text)

    def on_reply(self, reply: Reply) -> None:
        offset = time.monotonic() - self._start
        # Keep the reply (an outcome keeps it too), and write it out when it is read.
        if len(reply.lines) == 1 and not reply.cut_bytes:  # nearly every reply
            self.lines.append(offset, SERVER, reply)
            return
        for index in range(reply.wire_line_count):
            self.lines.append(offset, SERVER, _ReplyLine(reply, index))

    def on_content(self, content: bytes) -> None:
        size = f"[message content: {len(content)} bytes"
        if self.content_mode == CONTENT_FULL:
            kept = content[: self.content_max_bytes]
            text = kept.decode("utf-8", errors="replace").replace("\r\n", "\n")
            if len(kept) < len(content):
                note = f"{size}; the first {self.content_max_bytes} stored]"
            else:
                note = f"{size}]"
            self.add_line(CONTENT, f"{text.rstrip(chr(10))}\n\n{note}")
        elif self.content_mode == CONTENT_HEADERS:
            headers = header_block(content)
            if len(self._unclaimed) >= _UNCLAIMED_LIMIT:
                self._unclaimed.clear()
            self._unclaimed[headers] = headers
            self.lines.append(
                time.monotonic() - self._start, CONTENT, _HeadersNote(headers, len(content))
            )
        else:
            self.add_line(CONTENT, f"{size}; not stored]")

    def on_tls(self, info: TLSInfo) -> None:
        self.tls = info
        if self.security == "none":  # an opportunistic STARTTLS that succeeded
            self.security = "starttls"
        self.add_line(INFO, f"TLS established: {info.version} {info.cipher}")

    def on_closed(self) -> None:
        self.ended_at = datetime.now(UTC)
        self.add_line(INFO, "connection closed")

    def on_error(self, error: BaseException) -> None:
        self.status = SessionStatus.after(error)
        self.error = f"{type(error).__name__}: {error}"
        self.add_line(INFO, f"error: {self.error}")
