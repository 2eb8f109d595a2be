"""An in-memory record of one SMTP session: what was said, when, and what became of
each message. It implements :class:`~django_sockmail.smtp.events.SessionListener`;
:mod:`django_sockmail.recorder` writes it to the database. No ORM here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .smtp.events import TLSInfo
from .smtp.replies import Reply
from .smtp.results import MessageOutcome

CLIENT = "C"  # a command line the client sent (credentials already redacted)
SERVER = "S"  # a reply line from the server
CONTENT = "D"  # the message content, as much of it as is kept
INFO = "*"  # what happened around the conversation: connect, TLS, close, errors

OK = "ok"
FAILED = "failed"

# How much of each message's content a transcript keeps (SOCKMAIL["STORE_CONTENT"]).
CONTENT_FULL = "full"  # the whole message, up to a cap
CONTENT_HEADERS = "headers"  # the header block and the size
CONTENT_ENVELOPE = "envelope"  # none of the content: no headers, no subject
CONTENT_MODES = (CONTENT_FULL, CONTENT_HEADERS, CONTENT_ENVELOPE)


@dataclass
class Line:
    offset: float  # seconds since the session started
    direction: str
    text: str


@dataclass
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


@dataclass
class Transcript:
    """Collects one session's events with their time offsets."""

    host: str = ""
    port: int = 0
    security: str = "none"  # "none", "starttls" or "ssl"
    content_mode: str = CONTENT_HEADERS
    content_max_bytes: int = 256 * 1024
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    ended_at: datetime | None = None
    peer_address: str = ""
    local_address: str = ""
    tls: TLSInfo | None = None
    status: str = OK
    error: str = ""
    lines: list[Line] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    _start: float = field(default_factory=time.monotonic, repr=False)

    def add_line(self, direction: str, text: str) -> None:
        self.lines.append(Line(time.monotonic() - self._start, direction, text))

    def add_message(self, record: MessageRecord) -> None:
        """Keep a message's record, with as much of its content as the mode allows."""
        size = record.outcome.size
        record.content_mode = self.content_mode
        if self.content_mode == CONTENT_FULL:
            record.content_stored = min(size, self.content_max_bytes)
        elif self.content_mode == CONTENT_HEADERS:
            record.content_stored = len(record.headers.encode())
        else:
            record.subject, record.headers, record.content_stored = "", "", 0
        self.messages.append(record)

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
        for text in reply.wire_lines():
            self.add_line(SERVER, text)

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
            note = f"{size}; body not stored]"
            self.add_line(CONTENT, f"{header_block(content)}\n\n{note}")
        else:
            self.add_line(CONTENT, f"{size}; not stored]")

    def on_tls(self, info: TLSInfo) -> None:
        self.tls = info
        if self.security == "none":  # an opportunistic STARTTLS that succeeded
            self.security = "starttls"
        self.add_line(INFO, f"TLS established: {info.version} {info.cipher}")

    def on_closed(self) -> None:
        self.ended_at = datetime.now(timezone.utc)
        self.add_line(INFO, "connection closed")

    def on_error(self, error: BaseException) -> None:
        self.status = FAILED
        self.error = f"{type(error).__name__}: {error}"
        self.add_line(INFO, f"error: {self.error}")
