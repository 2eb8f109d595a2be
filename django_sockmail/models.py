"""The audit log: one :class:`Session` per SMTP connection, the :class:`Message` objects
offered in it, each message's :class:`Recipient` verdicts and the session's
:class:`TranscriptLine` rows. :mod:`django_sockmail.recorder` writes them; the admin
shows them. Nothing here talks to a mail server.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from .transcript import CONTENT_ENVELOPE, CONTENT_FULL, CONTENT_HEADERS

# Long enough for any real value, short enough to index on every supported database
# (MySQL's utf8mb4 index limit is 768 characters). The recorder clips longer values.
_ADDRESS_LENGTH = 320  # RFC 3696: 64 (local part) + 1 + 255 (domain)
_ID_LENGTH = 255


class Session(models.Model):
    """One connection to an SMTP server, from connect to close."""

    class Security(models.TextChoices):
        NONE = "none", "none"
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS"

    class Status(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "failed"

    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    security = models.CharField(max_length=8, choices=Security.choices, default=Security.NONE)
    peer_address = models.CharField(max_length=255, blank=True)
    local_address = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    tls_version = models.CharField("TLS version", max_length=32, blank=True)
    tls_cipher = models.CharField("TLS cipher", max_length=128, blank=True)
    tls_peer_subject = models.TextField("certificate subject", blank=True)
    tls_peer_issuer = models.TextField("certificate issuer", blank=True)
    tls_peer_not_before = models.CharField("certificate valid from", max_length=64, blank=True)
    tls_peer_not_after = models.CharField("certificate valid until", max_length=64, blank=True)
    tls_peer_fingerprint = models.CharField(
        "certificate SHA-256 fingerprint", max_length=128, blank=True
    )
    status = models.CharField(max_length=8, choices=Status.choices, db_index=True)
    error = models.TextField(blank=True)
    # Denormalised so the changelist needs no joins.
    message_count = models.PositiveIntegerField("messages", default=0)
    sent_count = models.PositiveIntegerField(
        "sent", default=0, help_text="Messages the server accepted (sent or partly sent)."
    )

    class Meta:
        verbose_name = "SMTP session"
        ordering = ("-started_at", "-id")

    def __str__(self) -> str:
        started = self.started_at
        if timezone.is_aware(started):
            started = timezone.localtime(started)
        when = f"{started:%Y-%m-%d %H:%M:%S %Z}".rstrip()  # no zone name when naive
        return f"{self.endpoint} at {when} ({self.status})"

    @property
    def endpoint(self) -> str:
        """``host:port``, with an IPv6 literal in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def duration(self) -> timedelta | None:
        if self.ended_at is None:
            return None
        return self.ended_at - self.started_at


class ServerReply(models.Model):
    """A server reply kept on a row: its code (empty when there was none), text and
    RFC 3463 enhanced status code."""

    reply_code = models.PositiveSmallIntegerField(null=True, blank=True)
    reply_text = models.TextField(blank=True)
    enhanced_status = models.CharField(max_length=16, blank=True)

    class Meta:
        abstract = True

    @property
    def reply(self) -> str:
        """The reply as one line of text."""
        if self.reply_code is None:
            return ""
        return f"{self.reply_code} {self.reply_text}".rstrip()


class Message(ServerReply):
    """One mail transaction (MAIL, RCPT…, content) within a session."""

    class ContentMode(models.TextChoices):
        FULL = CONTENT_FULL, "full message"
        HEADERS = CONTENT_HEADERS, "headers"
        ENVELOPE = CONTENT_ENVELOPE, "envelope only"

    class Status(models.TextChoices):
        SENT = "sent", "sent"
        PARTIAL = "partial", "partly sent"
        FAILED = "failed", "failed"
        NOT_SENT = "not_sent", "not sent"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    position = models.PositiveIntegerField(help_text="1 for the first message in the session.")
    envelope_from = models.CharField(
        "envelope sender", max_length=_ADDRESS_LENGTH, blank=True, help_text="Empty for <>."
    )
    message_id = models.CharField("Message-ID", max_length=_ID_LENGTH, blank=True, db_index=True)
    subject = models.CharField(max_length=998, blank=True)
    size = models.PositiveIntegerField(help_text="Bytes of content, as sent.", default=0)
    sha256 = models.CharField(
        "SHA-256",
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Of the content as sent, whatever of it is stored.",
    )
    content_mode = models.CharField(
        "content stored",
        max_length=8,
        choices=ContentMode.choices,
        default=ContentMode.HEADERS,
    )
    content_stored = models.PositiveIntegerField(
        "bytes stored", default=0, help_text="How much of the content the transcript keeps."
    )
    headers = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, db_index=True)
    queue_id = models.CharField("queue id", max_length=_ID_LENGTH, blank=True, db_index=True)
    error = models.TextField(blank=True)
    recipient_count = models.PositiveIntegerField("recipients", default=0)

    class Meta:
        verbose_name = "message"
        ordering = ("session_id", "position")
        constraints = (
            models.UniqueConstraint(
                fields=("session", "position"), name="django_sockmail_message_position"
            ),
        )

    def __str__(self) -> str:
        subject = self.subject or "(no subject)"
        return f"{subject} from <{self.envelope_from}> ({self.get_status_display()})"


class Recipient(ServerReply):
    """One envelope recipient of a message and the server's reply to its RCPT."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=_ADDRESS_LENGTH, db_index=True)
    accepted = models.BooleanField(default=False)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        verdict = "accepted" if self.accepted else "refused"
        if self.reply_code is None:
            verdict = "not offered"
        return f"{self.address} ({verdict})"


class TranscriptLine(models.Model):
    """One line of the conversation, or one event around it, in order."""

    class Direction(models.TextChoices):
        CLIENT = "C", "client"
        SERVER = "S", "server"
        CONTENT = "D", "content"
        INFO = "*", "info"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="lines")
    seq = models.PositiveIntegerField()
    offset_ms = models.FloatField(help_text="Milliseconds since the session started.")
    direction = models.CharField(max_length=1, choices=Direction.choices)
    text = models.TextField(blank=True)

    class Meta:
        verbose_name = "transcript line"
        ordering = ("session_id", "seq")
        constraints = (
            models.UniqueConstraint(fields=("session", "seq"), name="django_sockmail_line_seq"),
        )

    def __str__(self) -> str:
        text = self.text if len(self.text) <= 80 else f"{self.text[:79]}…"
        return f"{self.direction}: {text}"
