"""A read-only admin for the audit log: sessions with their transcript, messages with
their recipients, and the recipient list that a page with too many to show links to.
Nothing can be added or changed here; superusers may delete.

The ModelAdmins only: the search is in :mod:`.admin_search`, the pagination in
:mod:`.admin_pagination`, the rows of the session page in :mod:`.admin_rows` and the
transcript download in :mod:`.transcript_text`. Everything the server said is hostile
input: it reaches the page only through auto-escaping templates and ``format_html``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from .admin_pagination import AuditLogChangeList, CappedCountPaginator
from .admin_rows import (
    MessageRow,
    first_recipients,
    line_row,
    message_row,
    recipient_outcome,
    status_icon,
)
from .admin_search import SEARCH_HELP_TEXT, messages_matching, sessions_matching
from .models import Message, Recipient, Session
from .transcript_text import timestamp, transcript_text

# The session page renders at most this many transcript lines and messages; the rest
# are counted, and the messages are a link away in the message list.
TRANSCRIPT_LINE_LIMIT = 5000
MESSAGE_LIMIT = 500
# The message page renders at most this many of its recipients (each a row of form
# fields: the costly part of the page), and the session page this many of all its
# messages' together, the first in message and RCPT order (room for a batch of
# MESSAGE_LIMIT messages to a few recipients each). The rest are counted, and each
# message's are a link away in the recipient list.
RECIPIENT_LIMIT = 500
SESSION_RECIPIENT_LIMIT = 2000
# The recipient list's filter for one message's recipients (the links above).
MESSAGE_FILTER = "message__id__exact"

# An address search lists the ids of the messages to that recipient in its query, up
# to this many (beyond, a subquery): see admin_search.
RECIPIENT_ID_LIMIT = 1000

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


class AuditLogAdmin(_ModelAdmin[_M]):
    """Read-only: the log is written by the recorder, never by hand.

    Built for tables of millions of rows: no full count (:class:`CappedCountPaginator`),
    no facet counts, no date hierarchy (it reads every row's date), sorting only by
    indexed columns, and searches that are index lookups.
    """

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_help_text = SEARCH_HELP_TEXT

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditLogChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)

    def recipient_list_url(self, message_id: int) -> str:
        """The recipient list, filtered to one message's recipients."""
        url = reverse(
            f"{self.admin_site.name}:django_sockmail_recipient_changelist",
            current_app=self.admin_site.name,
        )
        return f"{url}?{urlencode({MESSAGE_FILTER: message_id})}"


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
    # Each filter has an index that yields its rows newest first (see Session.Meta).
    list_filter = ("status", "security", ("started_at", admin.DateFieldListFilter))
    # Only the order that an index gives; sorting a million rows by anything else
    # would sort them all for each page.
    sortable_by = ("started",)
    # What is searched, for the reader; the admin shows its search box when this is set.
    # The search itself is get_search_results().
    search_fields = (
        "messages__envelope_from",
        "messages__recipients__address",
        "messages__message_id",
        "messages__queue_id",
        "messages__subject",
    )
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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Session], bool]:
        """Sessions with a message that matches: see :func:`.admin_search.sessions_matching`."""
        return sessions_matching(queryset, search_term, RECIPIENT_ID_LIMIT), False

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        return [
            path(
                "<path:object_id>/transcript/",
                self.admin_site.admin_view(self.transcript_view),
                name=f"{opts.app_label}_{opts.model_name}_transcript",
            ),
            *super().get_urls(),
        ]

    def transcript_view(self, request: HttpRequest, object_id: str) -> StreamingHttpResponse:
        """The transcript as a plain-text download, for whoever may view the session."""
        # Refused before the lookup: without the permission, a missing id and an
        # existing one answer alike, so ids cannot be probed for.
        if not self.has_view_permission(request):
            raise PermissionDenied
        session = self.get_object(request, unquote(object_id))
        if session is None:
            raise Http404("No such SMTP session.")
        if not self.has_view_permission(request, session):
            raise PermissionDenied
        response = StreamingHttpResponse(
            transcript_text(session), content_type="text/plain; charset=utf-8"
        )
        response["Content-Disposition"] = (
            f'attachment; filename="sockmail-session-{session.pk}.txt"'
        )
        # The text is the server's: never let a browser guess that it is HTML.
        response["X-Content-Type-Options"] = "nosniff"
        return response

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
        messages = list(session.messages.order_by("position")[:MESSAGE_LIMIT])
        recipients = first_recipients(session, messages, SESSION_RECIPIENT_LIMIT)
        lines = session.transcript_lines(limit=TRANSCRIPT_LINE_LIMIT)
        message_rows = [self._message_row(m, recipients.get(m.pk, [])) for m in messages]
        return {
            "sockmail_messages": message_rows,
            "sockmail_messages_hidden": max(session.message_count - len(messages), 0),
            "sockmail_recipients_shown": any(row.recipients for row in message_rows),
            "sockmail_recipients_hidden": sum(row.recipients_hidden for row in message_rows),
            "sockmail_lines": [line_row(line) for line in lines],
            "sockmail_lines_hidden": max(session.line_count - len(lines), 0),
            "sockmail_transcript_url": reverse(
                f"{self.admin_site.name}:django_sockmail_session_transcript",
                args=[session.pk],
                current_app=self.admin_site.name,
            ),
        }

    def _message_row(self, message: Message, recipients: list[Recipient]) -> MessageRow:
        url = reverse(
            f"{self.admin_site.name}:django_sockmail_message_change",
            args=[message.pk],
            current_app=self.admin_site.name,
        )
        return message_row(message, recipients, url, self.recipient_list_url(message.pk))


class _FirstRecipients(BaseInlineFormSet):  # type: ignore[type-arg]
    """A message's first RECIPIENT_LIMIT recipients, in RCPT order: the message page
    counts the rest and links to them."""

    def get_queryset(self) -> QuerySet[Recipient]:
        # Sliced once: each form indexes into this, so it must be evaluated only once.
        if not hasattr(self, "_first"):
            self._first = super().get_queryset()[:RECIPIENT_LIMIT]
        return self._first


class RecipientInline(_TabularInline[Recipient, Message]):
    model = Recipient
    fields = ("address", "accepted", "reply_code", "enhanced_status", "reply_text")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "recipients and the server's reply to each RCPT"
    formset = _FirstRecipients

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
    # status: (status, -id) index; the date: the session's started_at index.
    list_filter = ("status", ("session__started_at", admin.DateFieldListFilter))
    # What is searched, for the reader; the admin shows its search box when this is set.
    # The search itself is get_search_results().
    search_fields = ("envelope_from", "recipients__address", "message_id", "queue_id", "subject")
    # Each row shows its session: joined in, not fetched row by row.
    list_select_related = ("session",)
    ordering = ("-id",)
    # Newest first by id, or by the session's start (its index, then the join).
    sortable_by = ("session_started_at",)
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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        """Messages that match: see :func:`.admin_search.messages_matching`."""
        return messages_matching(queryset, search_term, RECIPIENT_ID_LIMIT), False

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Message | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(
                sockmail_recipients_hidden=max(obj.recipient_count - RECIPIENT_LIMIT, 0),
                sockmail_recipients_url=self.recipient_list_url(obj.pk),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

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


@admin.register(Recipient)
class RecipientAdmin(AuditLogAdmin[Recipient]):
    """Every recipient, newest first; a message's own (``?message__id__exact=``) in RCPT
    order. The message and session pages show the first few (:data:`RECIPIENT_LIMIT`,
    :data:`SESSION_RECIPIENT_LIMIT`) and link here for the rest."""

    list_display = ("address", "outcome", "reply", "message_link")
    list_display_links = None  # a row says all there is: no page of its own to go to
    # Each row shows its message: joined in, not fetched row by row.
    list_select_related = ("message",)
    sortable_by = ()

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # One message's recipients in RCPT order (the recorder writes them in that
        # order); the whole list newest first, like the others.
        return ("id",) if MESSAGE_FILTER in request.GET else ("-id",)

    def has_view_permission(self, request: HttpRequest, obj: Recipient | None = None) -> bool:
        # Recipients are part of their message: whoever may see the message sees them.
        message = obj.message if obj is not None else None
        return self.admin_site.get_model_admin(Message).has_view_permission(request, message)

    @admin.display(description="outcome")
    def outcome(self, obj: Recipient) -> SafeString:
        return recipient_outcome(obj)

    @admin.display(description="server reply to RCPT")
    def reply(self, obj: Recipient) -> str:
        return obj.reply

    @admin.display(description="message")
    def message_link(self, obj: Recipient) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_sockmail_message_change",
            args=[obj.message_id],
            current_app=self.admin_site.name,
        )
        return format_html('<a href="{}">{}</a>', url, obj.message)
