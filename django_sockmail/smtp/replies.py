"""SMTP replies (RFC 5321 §4.2) and a bounded, incremental reply parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SMTPProtocolError

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers exceed it, so be
# generous, but never unbounded: a hostile server must not be able to exhaust memory.
MAX_LINE_LENGTH = 8192
MAX_LINES = 1000
MAX_REPLY_SIZE = 256 * 1024

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    """One complete server reply: a three-digit code and its text lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 enhanced status code (``"5.1.1"``) when the server gave one."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return ".".join(match.groups()) if match else None

    @property
    def is_positive(self) -> bool:
        """A completion reply (2xx). 3xx replies (354, 334) only ask for more."""
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def wire_lines(self) -> list[str]:
        """The reply as it appeared on the wire, one string per line (no CRLF)."""
        last = len(self.lines) - 1
        return [
            f"{self.code}{' ' if i == last else '-'}{line}".rstrip()
            for i, line in enumerate(self.lines)
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ReplyParser:
    """Turns bytes from the server into complete :class:`Reply` objects.

    Feed it whatever the socket returned; it keeps partial lines between calls and
    raises :class:`SMTPProtocolError` for anything that is not a well-formed reply.
    Replies that arrived complete before a bad line are still returned (the server
    said them); the error is raised on the next call, or by :meth:`check`.
    """

    def __init__(
        self,
        max_line_length: int = MAX_LINE_LENGTH,
        max_lines: int = MAX_LINES,
        max_reply_size: int = MAX_REPLY_SIZE,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_lines = max_lines
        self.max_reply_size = max_reply_size
        self._buffer = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []
        self._size = 0
        self.error: SMTPProtocolError | None = None  # held back by feed()

    @property
    def in_reply(self) -> bool:
        """True while some of a reply has arrived but not its last line."""
        return bool(self._buffer) or self._code is not None

    def check(self) -> None:
        """Raise the error a previous :meth:`feed` held back, if any."""
        if self.error is not None:
            raise self.error

    def feed(self, data: bytes) -> list[Reply]:
        self.check()
        self._buffer += data
        replies: list[Reply] = []
        try:
            while (end := self._buffer.find(b"\n")) >= 0:
                raw = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                reply = self._take_line(raw)
                if reply is not None:
                    replies.append(reply)
            # What is left is an unfinished line; its CR may be here without its LF.
            if len(self._buffer.removesuffix(b"\r")) > self.max_line_length:
                raise SMTPProtocolError("reply line too long")
        except SMTPProtocolError as exc:
            # The stream is broken for good: every later call raises this error too.
            self._buffer.clear()
            self.error = exc
            if not replies:
                raise
        return replies

    def _take_line(self, raw: bytes) -> Reply | None:
        if not raw.endswith(b"\r\n"):
            raise SMTPProtocolError(f"reply line not ended by CRLF: {raw[:80]!r}")
        line = raw[:-2]
        if len(line) > self.max_line_length:
            raise SMTPProtocolError("reply line too long")
        code_bytes, separator, text = line[:3], line[3:4], line[4:]
        if not (len(code_bytes) == 3 and code_bytes.isdigit() and b"2" <= code_bytes[:1] <= b"5"):
            raise SMTPProtocolError(f"malformed reply code: {line[:80]!r}")
        if separator not in (b"", b" ", b"-"):
            raise SMTPProtocolError(f"malformed reply line: {line[:80]!r}")
        code = int(code_bytes)
        if self._code is not None and code != self._code:
            raise SMTPProtocolError(
                f"reply code changed within a multi-line reply: {self._code} then {code}"
            )
        self._code = code
        self._lines.append(text.decode("utf-8", errors="replace"))
        self._size += len(raw)
        if len(self._lines) > self.max_lines or self._size > self.max_reply_size:
            raise SMTPProtocolError("reply too large")
        if separator == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._code, self._lines, self._size = None, [], 0
        return reply
