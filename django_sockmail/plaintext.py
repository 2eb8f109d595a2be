"""Server text made safe for a terminal or a plain-text file that people ``cat``.

A server's replies, its EHLO keywords and its certificate's names are hostile input: an
escape sequence in them (ESC, BEL, a C1 control such as U+009B, a bare CR) would be
acted upon by the terminal that shows it. The transcript download and
``manage.py sockmail_probe`` show such text through :func:`printable`.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# Control characters other than tab and newline, which a terminal would act upon.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline (an escape sequence
    from a hostile server, a bare CR) written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
