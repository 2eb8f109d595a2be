"""What the server said about each recipient and each message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .replies import Reply

SENT = "sent"  # every recipient accepted, content accepted
PARTIAL = "partial"  # content accepted for some recipients, others refused
FAILED = "failed"  # the server refused the message for good (a 5xx reply)
DEFERRED = "deferred"  # the server refused it for now (a 4xx reply): worth a retry later
NOT_SENT = "not_sent"  # never offered to the server (the session ended first)
# The whole content went out but the session broke before the server's verdict: it
# may have been queued. Retrying it may deliver it twice (RFC 1047).
UNKNOWN = "unknown"

# How common servers name the queue entry in their reply to the end of data.
_QUEUE_ID_PATTERNS = [
    re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=([A-Za-z0-9._-]+)"),  # Exim
    re.compile(r"^(?:2\.\d\.\d )?([A-Za-z0-9]{8,}) Message accepted", re.IGNORECASE),  # Sendmail
    re.compile(r"InternalId=(\d+)"),  # Microsoft
    re.compile(r"^2\.0\.0 OK\s+\d+ (\S+) - gsmtp"),  # Google
]


# Any of them, for the usual reply that names no queue id: one search rules them all out.
_ANY_QUEUE_ID = re.compile("|".join(f"(?:{p.pattern})" for p in _QUEUE_ID_PATTERNS), re.IGNORECASE)


def queue_id(reply: Reply | None) -> str:
    """The server's queue id for an accepted message, when its reply names one."""
    if reply is None or not reply.is_positive:
        return ""
    text = reply.text
    if _ANY_QUEUE_ID.search(text) is None:
        return ""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


@dataclass
class RecipientOutcome:
    address: str
    reply: Reply | None = None  # None when the recipient was never offered

    @property
    def accepted(self) -> bool:
        return self.reply is not None and self.reply.is_positive


@dataclass
class MessageOutcome:
    """The result of one mail transaction: MAIL, each RCPT, and the content."""

    sender: str
    recipients: list[RecipientOutcome]
    mail_reply: Reply | None = None
    data_reply: Reply | None = None  # the reply to DATA; None when DATA was never sent
    final_reply: Reply | None = None  # the reply to the end of the content
    size: int = 0
    sha256: str = ""  # of the content as sent (CRLF line endings, before dot-stuffing)
    error: str = ""
    status: str = NOT_SENT

    @property
    def taken(self) -> bool:
        """The server took the message, for every recipient or for some."""
        return self.status in (SENT, PARTIAL)

    @property
    def accepted_recipients(self) -> list[str]:
        if not self.taken:
            return []
        return [r.address for r in self.recipients if r.accepted]

    @property
    def refused_recipients(self) -> dict[str, Reply]:
        return {r.address: r.reply for r in self.recipients if r.reply and not r.accepted}

    @property
    def queue_id(self) -> str:
        return queue_id(self.final_reply)

    @property
    def failure_reply(self) -> Reply | None:
        """The reply that stopped the message, when a reply did."""
        if self.mail_reply is not None and not self.mail_reply.is_positive:
            return self.mail_reply
        refused = list(self.refused_recipients.values())
        if refused and len(refused) == len(self.recipients):
            # Every recipient refused (what DATA said then only follows from it):
            # permanent if any refusal is, as a retry would still leave that one out.
            return next((r for r in refused if r.is_permanent), refused[0])
        for reply in (self.data_reply, self.final_reply):
            if reply is not None and not reply.is_positive and reply.code != 354:
                return reply
        return None

    @property
    def deferred_recipients(self) -> list[str]:
        """Recipients refused for now (4xx), for a retry of just them."""
        return [r.address for r in self.recipients if r.reply and r.reply.is_transient]

    @property
    def envelope_accepted(self) -> bool:
        """The server took the sender and at least one recipient."""
        return (
            self.mail_reply is not None
            and self.mail_reply.is_positive
            and any(r.accepted for r in self.recipients)
        )

    def settle_unfinished(self, *, content_went_out: bool) -> None:
        """Settle a transaction the session broke off before its verdict: refused when
        a reply refused it; else ``unknown`` when its whole content went out, as the
        server may have queued it (RFC 1047); else not sent."""
        self.settle()
        if content_went_out and self.final_reply is None and self.failure_reply is None:
            self.status = UNKNOWN

    def settle(self) -> None:
        """Derive ``status`` from the replies gathered so far."""
        failure = self.failure_reply
        if self.final_reply is not None and self.final_reply.is_positive:
            self.status = PARTIAL if self.refused_recipients else SENT
        elif failure is not None:
            self.status = DEFERRED if failure.is_transient else FAILED
        else:
            self.status = NOT_SENT  # nothing the server said stopped it: never fully offered
