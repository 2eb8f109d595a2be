"""Reading SMTP replies (RFC 5321 §4.2) off the wire: a bounded, incremental parser
that makes :class:`~.reply.Reply` values."""

from __future__ import annotations

from .errors import SMTPProtocolError
from .reply import CUT_SHORT
from .reply import Reply as Reply  # re-exported: the package and its users import it here

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers exceed it, so be
# generous, but never unbounded: a hostile server must not be able to exhaust memory.
MAX_LINE_LENGTH = 8192
MAX_LINES = 1000
MAX_REPLY_SIZE = 256 * 1024

# How much of a reply is kept. The parser reads all of it (within the limits above), but
# a reply is kept as its first lines, within these bounds, and a note of what was cut:
# the transcript, the outcome and the audit log's rows all hold the same Reply, so what
# a session stores and holds per message stays small whatever the server says. Any
# real reply fits whole, an EHLO reply with every extension line included.
KEPT_LINE_BYTES = 1000  # of one line's text (RFC 5321 allows 512 octets a line)
KEPT_TEXT_BYTES = 4096  # of the text of all the lines kept
KEPT_LINES = 50


class ReplyParser:
    """Turns bytes from the server into complete :class:`Reply` objects.

    Feed it whatever the socket returned; it keeps partial lines between calls and
    raises :class:`SMTPProtocolError` for anything that is not a well-formed reply.
    Replies that arrived complete before a bad line are still returned (the server
    said them); the error is raised on the next call, or by :meth:`check`.

    The whole of a reply counts against ``max_lines`` and ``max_reply_size``, but only
    its first lines are kept (``kept_line_bytes`` of a line's text, ``kept_text_bytes``
    and ``kept_lines`` in all); the rest is counted, not held.
    """

    def __init__(
        self,
        max_line_length: int = MAX_LINE_LENGTH,
        max_lines: int = MAX_LINES,
        max_reply_size: int = MAX_REPLY_SIZE,
        *,
        kept_line_bytes: int = KEPT_LINE_BYTES,
        kept_text_bytes: int = KEPT_TEXT_BYTES,
        kept_lines: int = KEPT_LINES,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_lines = max_lines
        self.max_reply_size = max_reply_size
        self.kept_line_bytes = kept_line_bytes
        self.kept_text_bytes = kept_text_bytes
        self.kept_lines = kept_lines
        self._buffer = bytearray()
        self._code: int | None = None
        self._new_reply()
        self.error: SMTPProtocolError | None = None  # held back by feed()

    def _new_reply(self) -> None:
        self._lines: list[str] = []  # the lines kept
        self._line_count = 0
        self._size = 0  # bytes on the wire
        self._kept = 0  # bytes of text kept
        self._cut_lines = 0
        self._cut_bytes = 0

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
        self._line_count += 1
        self._size += len(raw)
        if self._line_count > self.max_lines or self._size > self.max_reply_size:
            raise SMTPProtocolError("reply too large")
        self._keep(text, len(raw))
        if separator == b"-":
            return None
        reply = Reply(code, tuple(self._lines), self._cut_lines, self._cut_bytes, self._size)
        self._code = None
        self._new_reply()
        return reply

    def _keep(self, text: bytes, wire: int) -> None:
        """Keep a line's text, or as much of it as the bounds allow; once a line does
        not fit, leave it and every line after it out (the lines kept are the first)."""
        if not self._cut_lines and len(self._lines) < self.kept_lines:
            kept = _utf8_prefix(text, self.kept_line_bytes)
            if len(kept) <= self.kept_text_bytes - self._kept:
                line = kept.decode("utf-8", errors="replace")
                if len(kept) < len(text):
                    line += CUT_SHORT
                    self._cut_bytes += len(text) - len(kept)
                self._lines.append(line)
                self._kept += len(kept)
                return
        self._cut_lines += 1
        self._cut_bytes += wire


def _utf8_prefix(data: bytes, limit: int) -> bytes:
    """``data``, or its first ``limit`` bytes at most, not ending inside a UTF-8
    character (it may be cut only before a byte that does not continue one)."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80 and limit - end < 3:
        end -= 1
    return data[:end]
