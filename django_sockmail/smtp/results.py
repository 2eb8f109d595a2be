"""What the server said about each recipient and each message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .reply import Reply
from .status import MessageStatus

# Each MessageStatus by its name here, as the package first named them.
SENT = MessageStatus.SENT
PARTIAL = MessageStatus.PARTIAL
FAILED = MessageStatus.FAILED
DEFERRED = MessageStatus.DEFERRED
NOT_SENT = MessageStatus.NOT_SENT
UNKNOWN = MessageStatus.UNKNOWN

# How common servers and providers name the queue entry in their reply to the end of
# data; the first that matches wins. Each captures only printable ASCII, no spaces.
_QUEUE_ID_PATTERNS = [
    # Postfix "2.0.0 Ok: queued as 4ZkX2b0Qz5z9v"; SendGrid "Ok: queued as <X-Message-Id>"
    re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE),
    re.compile(r"\bid=([A-Za-z0-9._-]+)"),  # Exim "OK id=1vAbCd-000Efg-Hi"
    # Sendmail "2.0.0 5AQ3x1a9012345 Message accepted for delivery"; OpenSMTPD the same
    # with its 8 hex digits, after "2.0.0: ", "2.0.0 " or nothing (as versions differ)
    re.compile(r"^(?:2\.[0-9]\.[0-9]:? )?([A-Za-z0-9]{8,}) Message accepted", re.IGNORECASE),
    # Exchange, and Microsoft 365's inbound servers: "2.6.0 <message-id>
    # [InternalId=1417339042123, Hostname=…] … Queued mail for delivery"
    re.compile(r"InternalId=([0-9]+)"),
    # Microsoft 365 submission (smtp.office365.com) names the Message-ID it gave the
    # message: "2.0.0 OK <id@….prod.outlook.com> [Hostname=…]"; Exchange without an
    # InternalId: "2.6.0 <id@host> Queued mail for delivery"
    re.compile(r"^2\.0\.0 OK <([!-;=?-~]+)> \[Hostname="),  # printable ASCII but <, >
    re.compile(r"^2\.6\.0 <([!-;=?-~]+)> .*Queued mail for delivery"),
    # Gmail "2.0.0 OK  1731389794 ffacd0b85a97d-381ed975a54si7856017f8f.119 - gsmtp"
    re.compile(r"^2\.0\.0 OK +[0-9]+ ([A-Za-z0-9._-]+) - gsmtp"),
    # Amazon SES "Ok 010001727bf05c7f-8ff7cc5f-aea3-4284-91ea-51f2f82c4469-000000": its
    # message id (16 hex digits, a UUID, 6 digits), the one its notifications name
    re.compile(r"^Ok ([0-9a-f]{16}-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}-[0-9]{6})\b"),
    # Haraka "Message Queued (5B199CBD-2F0B-4A5C-9E3E-0123456789AB.1)": the transaction
    re.compile(r"\bMessage Queued \(([A-Za-z0-9.-]+)\)"),
]
# Mailgun names none: "250 Great success".

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
    """One recipient of a message, and the server's reply to its RCPT."""

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
    status: MessageStatus = NOT_SENT

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

    def settle_out_of_step(self, *, content_went_out: bool) -> None:
        """Settle a transaction whose replies may have answered other commands (the
        server sent a reply too many, or one that cannot answer its command): what
        they said proves nothing. Its content went out: it may have been queued
        (``unknown``); it never did: it cannot have been delivered (``not_sent``)."""
        said = "; ".join(str(r) for r in self.replies_received)
        self.reset_replies()
        self.status = UNKNOWN if content_went_out else NOT_SENT
        self.error = (
            "The server's replies fell out of step with the commands, so none of "
            "those to this message can be trusted" + (f" (it was told: {said})" if said else "")
        )

    @property
    def replies_received(self) -> list[Reply]:
        """Every reply to this transaction's commands, in the order sent."""
        replies = [self.mail_reply, *(r.reply for r in self.recipients)]
        replies += [self.data_reply, self.final_reply]
        return [r for r in replies if r is not None]

    def reset_replies(self) -> None:
        """Forget every reply: the transaction is to be offered again, or what the
        replies said cannot be trusted."""
        self.mail_reply = self.data_reply = self.final_reply = None
        for recipient in self.recipients:
            recipient.reply = None
        self.error = ""
        self.status = NOT_SENT

    def settle(self) -> None:
        """Derive ``status`` from the replies gathered so far."""
        failure = self.failure_reply
        if self.final_reply is not None and self.final_reply.is_positive:
            self.status = PARTIAL if self.refused_recipients else SENT
        elif failure is not None:
            self.status = DEFERRED if failure.is_transient else FAILED
        else:
            self.status = NOT_SENT  # nothing the server said stopped it: never fully offered
