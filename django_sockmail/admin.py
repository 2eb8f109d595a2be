"""A read-only admin for the audit log: sessions with their transcript, messages with
their recipients. Nothing can be added or changed here; superusers may delete.

Everything the server said is hostile input: it reaches the page only through
auto-escaping templates and ``format_html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.contrib import admin
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .models import Message, Recipient, Session, TranscriptLine

# The session page renders at most this many transcript lines and messages; the rest
# are counted, and the messages are a link away in the message list.
TRANSCRIPT_LINE_LIMIT = 5000
MESSAGE_LIMIT = 500

_M = TypeVar("_M", bound=models.Model)
_P = TypeVar("_P", bound=models.Model)

# ModelAdmin and the inlines are generic in django-stubs only: at runtime they cannot
# be subscripted, so give them a runtime stand-in that can.
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin
    _TabularInline = admin.TabularInline
else:

    class _ModelAdmin(admin.ModelAdmin, Generic[_M]):
        pass

    class _TabularInline(admin.TabularInline, Generic[_M, _P]):
        pass


_STATUS_ICONS: dict[str, str] = {
    Session.Status.OK: "yes",
    Session.Status.FAILED: "no",
    Message.Status.SENT: "yes",
    Message.Status.PARTIAL: "alert",
    Message.Status.FAILED: "no",
    Message.Status.NOT_SENT: "unknown",
}

_LINE_KINDS: dict[str, tuple[str, str]] = {
    TranscriptLine.Direction.CLIENT: ("client", "C:"),
    TranscriptLine.Direction.SERVER: ("server", "S:"),
    TranscriptLine.Direction.CONTENT: ("content", "D:"),
    TranscriptLine.Direction.INFO: ("info", "*"),
}


def timestamp(value: datetime | None) -> str:
    """A time to the second, in the current time zone: an audit log needs the seconds
    that the admin's default format leaves out."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return date_format(value, "Y-m-d H:i:s T" if timezone.is_aware(value) else "Y-m-d H:i:s")


def status_icon(value: str, label: str) -> SafeString:
    """The admin's yes/no/alert icon followed by the status label."""
    icon = _STATUS_ICONS.get(value, "unknown")
    return format_html(
        '<img src="{}" alt="{}" class="sockmail-status-icon"> {}',
        static(f"admin/img/icon-{icon}.svg"),
        value,
        label,
    )


class AuditLogAdmin(_ModelAdmin[_M]):
    """Read-only: the log is written by the recorder, never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)


@dataclass(frozen=True)
class _MessageRow:
    message: Message
    url: str
    status: SafeString


@dataclass(frozen=True)
class _LineRow:
    line: TranscriptLine
    kind: str  # CSS class suffix: client, server, server-error, content, info
    prefix: str


def _line_row(line: TranscriptLine) -> _LineRow:
    kind, prefix = _LINE_KINDS.get(line.direction, ("info", line.direction))
    if kind == "server" and line.text[:1] in ("4", "5"):
        kind = "server-error"
    return _LineRow(line, kind, prefix)


@admin.register(Session)
class SessionAdmin(AuditLogAdmin[Session]):
    list_display = (
        "started",
        "status_display",
        "endpoint_display",
        "security",
        "tls_version",
        "message_count",
        "sent_count",
    )
    list_filter = ("status", "security", ("started_at", admin.DateFieldListFilter))
    date_hierarchy = "started_at"
    search_fields = (
        "=host",
        "messages__envelope_from",
        "messages__recipients__address",
        "messages__message_id",
        "messages__subject",
    )
    show_full_result_count = False
    fieldsets = (
        (
            None,
            {"fields": ("started", "ended", "duration_display", "status_display", "error")},
        ),
        ("Connection", {"fields": ("host", "port", "security", "peer_address", "local_address")}),
        (
            "TLS",
            {
                "fields": (
                    "tls_version",
                    "tls_cipher",
                    "tls_peer_subject",
                    "tls_peer_issuer",
                    "tls_peer_not_before",
                    "tls_peer_not_after",
                    "tls_peer_fingerprint",
                )
            },
        ),
        ("Messages", {"fields": ("message_count", "sent_count", "messages_link")}),
    )
    readonly_fields = ("started", "ended", "duration_display", "status_display", "messages_link")

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Session) -> str:
        return timestamp(obj.started_at)

    @admin.display(description="ended", ordering="ended_at")
    def ended(self, obj: Session) -> str:
        return timestamp(obj.ended_at)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Session) -> SafeString:
        return status_icon(obj.status, obj.get_status_display())

    @admin.display(description="server", ordering="host")
    def endpoint_display(self, obj: Session) -> str:
        return obj.endpoint

    @admin.display(description="duration")
    def duration_display(self, obj: Session) -> str:
        duration = obj.duration
        return "" if duration is None else f"{duration.total_seconds():.3f} s"

    @admin.display(description="message list")
    def messages_link(self, obj: Session) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_sockmail_message_changelist",
            current_app=self.admin_site.name,
        )
        return format_html(
            '<a href="{}?session__id__exact={}">All messages of this session</a>', url, obj.pk
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Session | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(self._session_context(obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _session_context(self, session: Session) -> dict[str, Any]:
        messages = list(
            session.messages.order_by("position").prefetch_related("recipients")[:MESSAGE_LIMIT]
        )
        lines = list(session.lines.order_by("seq")[: TRANSCRIPT_LINE_LIMIT + 1])
        line_total = len(lines)
        if line_total > TRANSCRIPT_LINE_LIMIT:
            lines = lines[:TRANSCRIPT_LINE_LIMIT]
            line_total = session.lines.count()
        return {
            "sockmail_messages": [
                _MessageRow(
                    message,
                    reverse(
                        f"{self.admin_site.name}:django_sockmail_message_change",
                        args=[message.pk],
                        current_app=self.admin_site.name,
                    ),
                    status_icon(message.status, message.get_status_display()),
                )
                for message in messages
            ],
            "sockmail_messages_hidden": max(session.message_count - len(messages), 0),
            "sockmail_lines": [_line_row(line) for line in lines],
            "sockmail_lines_hidden": line_total - len(lines),
        }


class RecipientInline(_TabularInline[Recipient, Message]):
    model = Recipient
    fields = ("address", "accepted", "reply_code", "enhanced_status", "reply_text")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "recipients and the server's reply to each RCPT"

    def has_add_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Recipients are part of their message: whoever may see the message sees them.
        return self.admin_site.get_model_admin(Message).has_view_permission(request, obj)


@admin.register(Message)
class MessageAdmin(AuditLogAdmin[Message]):
    list_display = (
        "session_started_at",
        "status_display",
        "envelope_from",
        "subject",
        "recipient_count",
        "queue_id",
        "session_link",
    )
    list_filter = ("status", ("session__started_at", admin.DateFieldListFilter))
    search_fields = ("envelope_from", "recipients__address", "message_id", "subject", "queue_id")
    list_select_related = ("session",)
    show_full_result_count = False
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "session_link",
                    "position",
                    "status_display",
                    "subject",
                    "message_id",
                    "envelope_from",
                    "recipient_count",
                    "size",
                )
            },
        ),
        (
            "Server reply",
            {"fields": ("reply_code", "enhanced_status", "reply_text", "queue_id", "error")},
        ),
        ("Headers", {"fields": ("headers_display",)}),
    )
    readonly_fields = ("session_link", "status_display", "headers_display")
    inlines = (RecipientInline,)

    @admin.display(description="time", ordering="session__started_at")
    def session_started_at(self, obj: Message) -> str:
        return timestamp(obj.session.started_at)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Message) -> SafeString:
        return status_icon(obj.status, obj.get_status_display())

    @admin.display(description="session")
    def session_link(self, obj: Message) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_sockmail_session_change",
            args=[obj.session_id],
            current_app=self.admin_site.name,
        )
        return format_html('<a href="{}">{}</a>', url, obj.session)

    @admin.display(description="headers")
    def headers_display(self, obj: Message) -> SafeString:
        return format_html('<pre class="sockmail-headers">{}</pre>', obj.headers)
