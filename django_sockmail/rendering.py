"""An EmailMessage's bytes, exactly as Django renders them, with less work.

Django (before 6.0) writes a message with the email package's ``compat32`` policy,
which runs every header through ``email.header.Header`` to fold it: most of the time
of rendering a small message, although a short header of plain ASCII words comes out
unchanged. :data:`QUICK_COMPAT32` writes such a header directly and leaves every
other one to ``compat32``; the bytes are the same (tests/test_rendering.py compares
them across generated messages). Django 6's modern email API is used as it is.
"""

from __future__ import annotations

import email.policy
import inspect
import re
from email.generator import BytesGenerator
from io import BytesIO
from typing import Any

from django.core.mail import EmailMessage

# Printable ASCII words, one space between them: what compat32 writes unchanged when
# the line fits (no leading, trailing or repeated whitespace, no tabs).
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")


class _QuickCompat32(email.policy.Compat32):
    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and len(name) + len(value) + 2 <= (self.max_line_length or 0)
            and _PLAIN.fullmatch(value)
        ):
            return f"{name}: {value}{self.linesep}"
        folded: str = super()._fold(name, value, sanitize)  # type: ignore[misc]
        return folded


QUICK_COMPAT32 = _QuickCompat32(linesep="\r\n")

# Django 6.0 renders messages with the modern email API and takes a policy.
_MESSAGE_TAKES_POLICY = "policy" in inspect.signature(EmailMessage.message).parameters


def render(message: EmailMessage) -> tuple[Any, bytes]:
    """The MIME message Django builds, and its bytes with CRLF line endings."""
    if _MESSAGE_TAKES_POLICY:
        mime: Any = message.message(policy=email.policy.SMTP)  # type: ignore[call-arg,unused-ignore]
        return mime, mime.as_bytes()
    mime = message.message()
    return mime, compat32_bytes(mime)


def compat32_bytes(mime: Any) -> bytes:
    """What ``mime.as_bytes(linesep="\r\n")`` gives for Django's MIME classes."""
    if mime.policy is not email.policy.compat32:  # a subclass chose its own: keep it
        return mime.as_bytes(linesep="\r\n")  # type: ignore[no-any-return]
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=QUICK_COMPAT32).flatten(mime, unixfrom=False)
    return out.getvalue()
