"""Preparing message content for the wire (RFC 5321 §4.5.2, §2.3.8).

Every bare CR and bare LF becomes CRLF *before* dot-stuffing, so no sequence in the
content can end the data early on any server (SMTP smuggling, CVE-2023-51764 and kin).
"""

from __future__ import annotations

import re

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


def normalize_line_endings(content: bytes) -> bytes:
    """Turn CRLF, bare CR and bare LF alike into CRLF; end with a CRLF."""
    normalized = _LINE_ENDING.sub(b"\r\n", content)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return normalized


def dot_stuff(normalized: bytes) -> bytes:
    """Double the leading dot of every line (input must already be normalized)."""
    stuffed = normalized.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def is_8bit(content: bytes) -> bool:
    """True when the content has octets above 127 (it then wants BODY=8BITMIME)."""
    return not content.isascii()
