"""What many tests build: the messages they send.

``message(n)`` and ``batch(count)`` make plain-text EmailMessages. In every string
given, ``{n}`` stands for the message's number and ``{domain}`` for ``domain``, so a
test file says once how its messages look (``partial(batch, subject="Message {n}")``)
and its assertions can name what they expect: the subjects, senders and recipients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.core.mail import EmailMessage


def message(
    n: int = 0,
    *,
    subject: str = "s",
    body: str = "b",
    sender: str = "from@{domain}",
    to: str | Sequence[str] = "to{n}@{domain}",
    domain: str = "example.org",
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """Message number ``n``: by default subject "s", body "b", from
    from@example.org to to<n>@example.org."""

    def fill(text: str) -> str:  # not str.format: a body may hold braces of its own
        return text.replace("{n}", str(n)).replace("{domain}", domain)

    recipients = [to] if isinstance(to, str) else to
    return EmailMessage(
        subject=fill(subject),
        body=fill(body),
        from_email=fill(sender),
        to=[fill(address) for address in recipients],
        headers={name: fill(value) for name, value in (headers or {}).items()},
    )


def batch(
    count: int,
    *,
    first: int = 0,
    subject: str = "s",
    body: str = "b",
    sender: str = "from@{domain}",
    to: str | Sequence[str] = "to{n}@{domain}",
    domain: str = "example.org",
) -> list[EmailMessage]:
    """``count`` messages numbered from ``first``, each made by :func:`message`."""
    return [
        message(n, subject=subject, body=body, sender=sender, to=to, domain=domain)
        for n in range(first, first + count)
    ]
