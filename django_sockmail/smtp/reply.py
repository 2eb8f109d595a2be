"""One SMTP reply (RFC 5321 §4.2): a three-digit code and its text lines, as a value.

What reads replies off the wire is :mod:`.replies`; this module imports nothing, so
every other one (the errors that carry a reply among them) can import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Ends a line kept in part, and begins the note of a cut. ASCII: a single "…" would
# make Python hold the whole line at two bytes a character.
CUT_SHORT = "..."

# ASCII digits only: \d would also take Arabic-Indic digits for a status code.
_ENHANCED = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    """One complete server reply: a three-digit code and its text lines.

    A reply the parser cut (see ``replies.KEPT_TEXT_BYTES``) keeps its first lines in
    ``lines``, a line kept in part ending in ``...``; ``cut_lines`` and ``cut_bytes``
    say what was left out, and :attr:`text` and :meth:`wire_lines` end with a note of
    it (:attr:`cut_note`).
    """

    code: int
    lines: tuple[str, ...]
    cut_lines: int = 0  # whole lines left out, at the end
    cut_bytes: int = 0  # bytes on the wire not kept: those lines and the ends of lines
    # Its bytes on the wire, CRLFs included (0 when it was not read from one): not
    # part of what the reply says, so not compared.
    size: int = field(default=0, compare=False)

    @property
    def cut_note(self) -> str:
        """What was left out of the reply, as a line of text; "" when nothing was."""
        if not self.cut_bytes:
            return ""
        lines = self.cut_lines
        more = f"{lines:,} more line{'s' if lines != 1 else ''} and " if lines else ""
        of = f" of the reply's {self.size:,}" if self.size else ""
        return f"[{CUT_SHORT} {more}{self.cut_bytes:,}{of} bytes not kept]"

    @property
    def text(self) -> str:
        """The text of the lines kept, one to a line, and the note of any cut."""
        text = "\n".join(self.lines)
        return f"{text}\n{self.cut_note}" if self.cut_bytes else text

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
        """The reply as it appeared on the wire, one string per line (no CRLF); the
        lines kept of a cut reply, then the note of the cut (no code: the server did
        not say it)."""
        return [self.wire_line(i) for i in range(self.wire_line_count)]

    @property
    def wire_line_count(self) -> int:
        """How many lines :meth:`wire_lines` gives."""
        return len(self.lines) + bool(self.cut_bytes)

    def wire_line(self, index: int) -> str:
        """Line ``index`` of :meth:`wire_lines`, alone."""
        if index == len(self.lines) and self.cut_bytes:
            return self.cut_note
        # After lines left out, every line kept went with "-" on the wire.
        last = index == len(self.lines) - 1 and not self.cut_lines
        return f"{self.code}{' ' if last else '-'}{self.lines[index]}".rstrip()

    def __str__(self) -> str:
        return f"{self.code} {self.text}"
