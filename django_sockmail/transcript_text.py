"""A transcript as plain text: the admin's "Download transcript", and the lines that
``manage.py sockmail_probe`` prints as its session goes.

Both write a line of the conversation with :func:`transcript_line`, so a probe's output
and a download read alike; the server's words pass through
:func:`~django_sockmail.plaintext.printable` on the way, as they are hostile input.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone
from django.utils.formats import date_format

from .plaintext import printable
from .transcript import CLIENT, CONTENT, INFO, SERVER

if TYPE_CHECKING:
    from .models import Session

__all__ = ["PREFIXES", "timestamp", "transcript_header", "transcript_line", "transcript_text"]

# Who said a line, before its text (the session page shows the same).
PREFIXES: dict[str, str] = {CLIENT: "C:", SERVER: "S:", CONTENT: "D:", INFO: "*"}


def timestamp(value: datetime | None) -> str:
    """A time to the second, in the current time zone: an audit log needs the seconds
    that the admin's default format leaves out. The admin's lists show the same."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return date_format(value, "Y-m-d H:i:s T" if timezone.is_aware(value) else "Y-m-d H:i:s")


def transcript_line(
    offset_ms: float | None, direction: str, text: str, *, hanging_indent: bool = True
) -> str:
    """One line of the conversation, e.g. ``+12.345ms C: EHLO client.example.org``, or
    with no offset (``None``) ``C: EHLO client.example.org``.

    The continuation lines of a multi-line text (a header block) are indented under the
    first line's text; with ``hanging_indent=False`` they are left as they are (the
    probe's lines, printed as they happen).
    """
    prefix = PREFIXES.get(direction, direction)
    lead = f"{prefix} " if offset_ms is None else f"+{offset_ms:.3f}ms {prefix} "
    text = printable(text)
    if not hanging_indent:
        return lead + text
    first, *rest = text.split("\n")
    indent = " " * len(lead)
    return "\n".join([lead + first, *(indent + line for line in rest)])


def transcript_header(session: Session) -> list[str]:
    """The lines above the conversation in a transcript download."""
    rows = [
        ("Server", f"{session.endpoint} ({session.get_security_display()})"),
        ("Peer", session.peer_address),
        ("Local", session.local_address),
        ("Started", timestamp(session.started_at)),
        ("Ended", timestamp(session.ended_at)),
    ]
    duration = session.duration
    if duration is not None:
        rows.append(("Duration", f"{duration.total_seconds():.3f} s"))
    rows += _tls_rows(session)
    rows += [
        ("Status", session.get_status_display()),
        ("Error", session.error),
        ("Messages", f"{session.message_count} ({session.sent_count} sent)"),
    ]
    return [
        f"SMTP session {session.pk}",
        *(f"{label}: {printable(value)}" for label, value in rows if value),
    ]


def _tls_rows(session: Session) -> list[tuple[str, str]]:
    if not session.tls_version:
        return [("TLS", "none")]
    return [
        ("TLS", f"{session.tls_version} {session.tls_cipher}".strip()),
        ("Certificate subject", session.tls_peer_subject),
        ("Certificate issuer", session.tls_peer_issuer),
        (
            "Certificate valid",
            f"{session.tls_peer_not_before} to {session.tls_peer_not_after}",
        ),
        ("Certificate SHA-256", session.tls_peer_fingerprint),
    ]


def transcript_text(session: Session) -> Iterator[str]:
    """The whole transcript as plain text, a piece at a time: the header, a blank line,
    then every line of the conversation, a stored chunk (up to a thousand lines) to a
    piece, read a few chunks to a query: memory does not grow with the transcript."""
    yield "\n".join(transcript_header(session)) + "\n\n"
    for chunk in session.iter_transcript_chunks():
        lines = chunk.decoded()
        yield "".join(transcript_line(x.offset_ms, x.direction, x.text) + "\n" for x in lines)
