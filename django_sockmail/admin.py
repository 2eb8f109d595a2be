"""A read-only admin for the audit log: sessions with their transcript, messages with
their recipients, and the recipient list that a page with too many to show links to.
Nothing can be added or changed here; superusers may delete.

Everything the server said is hostile input: it reaches the page only through
auto-escaping templates and ``format_html``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections, models, router
from django.db.models import F, Func, Q, QuerySet, Value
from django.db.models.lookups import Exact, IStartsWith
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.templatetags.static import static
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from .models import (
    SUBJECT_KEY_LENGTH,
    Message,
    Recipient,
    Session,
    TranscriptLine,
    subject_key,
)
from .plaintext import printable

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
# to this many (beyond, a subquery): see _search().
RECIPIENT_ID_LIMIT = 1000

SEARCH_HELP_TEXT = (
    "An address (envelope sender or recipient, any case) or a Message-ID (with or "
    "without <>), exactly; a queue id, exactly; or the beginning of the subject, in any "
    "case. Each is an index lookup, so there is no search for a word inside a text."
)

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
    Session.Status.TIMED_OUT: "no",
    Message.Status.SENT: "yes",
    Message.Status.PARTIAL: "alert",
    Message.Status.DEFERRED: "alert",
    Message.Status.FAILED: "no",
    Message.Status.NOT_SENT: "unknown",
    Message.Status.UNKNOWN: "alert",
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


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that never counts a whole table.

    The stock paginator counts every row that the list shows, on every page view: a
    scan of the whole table (or of an index of it) that grows with the table. This one
    counts at most ``count_limit + 1`` rows, in a sliced subquery that works on every
    database; past the limit it reports ``count_limit`` rows (so the last page is a
    full one), sets ``capped``, and the list reads "more than ``count_limit``". Pages
    beyond the limit are not offered: a filter or a search narrows the list instead.
    """

    count_limit = 10_000

    @cached_property
    def _counted(self) -> int:
        object_list = self.object_list
        limit = self.count_limit
        if isinstance(object_list, QuerySet):
            # Without ORDER BY the database may count along any index that fits the
            # filter; the LIMIT lets it stop at limit + 1 rows.
            return object_list.order_by()[: limit + 1].count()
        return len(object_list)

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.count_limit)

    @property
    def capped(self) -> bool:
        """Whether there are more rows than ``count`` says."""
        return self._counted > self.count_limit


class _CountedAsText:
    """A change list as the stock pagination template sees it: everything as it is,
    except the result count, which reads "more than N"."""

    def __init__(self, changelist: ChangeList, result_count: str) -> None:
        self._changelist = changelist
        self.result_count = result_count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._changelist, name)


class AuditLogChangeList(ChangeList):
    """The change list of the audit log, for the templates in
    ``admin/django_sockmail/`` that show a capped count as "more than N"."""

    @property
    def count_capped(self) -> bool:
        return bool(getattr(self.paginator, "capped", False))

    @property
    def for_pagination(self) -> ChangeList | _CountedAsText:
        if not self.count_capped:
            return self
        limit = number_format(self.paginator.count, force_grouping=True)
        return _CountedAsText(self, f"more than {limit}")


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


@dataclass(frozen=True)
class _RecipientRow:
    recipient: Recipient
    outcome: SafeString


@dataclass(frozen=True)
class _MessageRow:
    message: Message
    url: str
    status: SafeString
    recipients: list[_RecipientRow]  # the first of them: see SESSION_RECIPIENT_LIMIT
    recipients_hidden: int
    recipients_url: str  # all of them, in the recipient list


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


@dataclass(frozen=True)
class _Search:
    """What a search term matches: ``messages``, a condition on the message table alone,
    and, rarely, ``recipients`` too many to list in it (see :func:`_search`)."""

    messages: Q
    recipients: QuerySet[Recipient] | None = None


def _search(term: str) -> _Search:
    """The messages that a search term matches (see :data:`SEARCH_HELP_TEXT`).

    Each alternative is an index lookup (see the indexes of
    :class:`~django_sockmail.models.Message` and :class:`~django_sockmail.models.Recipient`),
    and all of them are conditions on the message table, so their OR is one (a bitmap
    OR on PostgreSQL). That leaves the database free to choose: find the few matches
    first, or, when a term matches many messages (a sender of every twentieth), walk the
    list in its order and stop after a page. An address is looked up among the
    recipients beforehand (one query) and the ids of their messages go into the
    condition; an address with more than :data:`RECIPIENT_ID_LIMIT` messages is left
    as a subquery, for the callers to unite with the rest (``UNION ALL``: still index
    lookups, and nothing made DISTINCT).
    """
    bare = _unbracketed(term)
    ids = sorted({bare, f"<{bare}>"})
    match = _exactly(Q(message_id__in=ids), "message_id", *ids) | _exactly(
        Q(queue_id=term), "queue_id", term
    )
    # The subject index holds the subject's first SUBJECT_KEY_LENGTH characters; a
    # longer term is checked against the whole subject among the rows that it finds.
    subject = Q(IStartsWith(subject_key(), term[:SUBJECT_KEY_LENGTH]))
    if len(term) > SUBJECT_KEY_LENGTH:
        subject &= Q(subject__istartswith=term)
    match |= subject
    if "@" not in bare:
        return _Search(match)
    match |= Q(envelope_from__iexact=bare)
    recipients = Recipient.objects.filter(address__iexact=bare).order_by()
    message_ids = list(recipients.values_list("message_id", flat=True)[: RECIPIENT_ID_LIMIT + 1])
    if len(message_ids) > RECIPIENT_ID_LIMIT:
        return _Search(match, recipients)
    if message_ids:
        match |= Q(pk__in=message_ids)
    return _Search(match)


def _exactly(condition: Q, field: str, *values: str) -> Q:
    """``condition`` (an index lookup of ``field``), and on MySQL and MariaDB, whose
    default collations ignore case, a byte comparison among the rows it finds: queue
    ids and Message-IDs are case-sensitive (``abc123`` is not ``ABC123``)."""
    if connections[router.db_for_read(Message)].vendor != "mysql":
        return condition
    same = Q()
    for value in values:
        same |= Q(Exact(_Bytes(F(field)), _Bytes(Value(value))))
    return condition & same


class _Bytes(Func):
    """A string as bytes, on MySQL and MariaDB: compared byte for byte."""

    template = "CAST(%(expressions)s AS BINARY)"
    output_field = models.CharField()


def _unbracketed(term: str) -> str:
    return term[1:-1] if term.startswith("<") and term.endswith(">") else term


def transcript_header(session: Session) -> list[str]:
    """The lines above the conversation in a transcript download."""
    security = session.get_security_display()
    rows = [
        ("Server", f"{session.endpoint} ({security})"),
        ("Peer", session.peer_address),
        ("Local", session.local_address),
        ("Started", timestamp(session.started_at)),
        ("Ended", timestamp(session.ended_at)),
    ]
    duration = session.duration
    if duration is not None:
        rows.append(("Duration", f"{duration.total_seconds():.3f} s"))
    if session.tls_version:
        rows += [
            ("TLS", f"{session.tls_version} {session.tls_cipher}".strip()),
            ("Certificate subject", session.tls_peer_subject),
            ("Certificate issuer", session.tls_peer_issuer),
            (
                "Certificate valid",
                f"{session.tls_peer_not_before} to {session.tls_peer_not_after}",
            ),
            ("Certificate SHA-256", session.tls_peer_fingerprint),
        ]
    else:
        rows.append(("TLS", "none"))
    rows += [
        ("Status", session.get_status_display()),
        ("Error", session.error),
        ("Messages", f"{session.message_count} ({session.sent_count} sent)"),
    ]
    return [
        f"SMTP session {session.pk}",
        *(f"{label}: {printable(value)}" for label, value in rows if value),
    ]


def transcript_line(offset_ms: float, direction: str, text: str) -> str:
    """One line of the conversation, e.g. ``+12.345ms C: EHLO client.example.org``;
    the continuation lines of a multi-line text (the header block) are indented."""
    _, prefix = _LINE_KINDS.get(direction, ("info", direction))
    lead = f"+{offset_ms:.3f}ms {prefix} "
    first, *rest = printable(text).split("\n")
    indent = " " * len(lead)
    return "\n".join([lead + first, *(indent + line for line in rest)])


def transcript_text(session: Session) -> Iterator[str]:
    """The whole transcript as plain text, a piece at a time: the header, a blank line,
    then every line of the conversation, a stored chunk (up to a thousand lines) to a
    piece, read a few chunks to a query: memory does not grow with the transcript."""
    yield "\n".join(transcript_header(session)) + "\n\n"
    for chunk in session.iter_transcript_chunks():
        lines = chunk.decoded()
        yield "".join(transcript_line(x.offset_ms, x.direction, x.text) + "\n" for x in lines)


def _recipient_outcome(recipient: Recipient) -> SafeString:
    """The admin's icon and a word for what became of a recipient."""
    if recipient.reply_code is None:
        icon, outcome = "unknown", "not offered"
    elif recipient.accepted:
        icon, outcome = "yes", "accepted"
    else:
        icon, outcome = "no", "refused"
    return format_html(
        '<img src="{}" alt="" class="sockmail-status-icon"> {}',
        static(f"admin/img/icon-{icon}.svg"),
        outcome,
    )


def _first_recipients(session: Session, messages: list[Message]) -> dict[int, list[Recipient]]:
    """The first SESSION_RECIPIENT_LIMIT recipients of ``messages`` (a session's first,
    in order), in message and RCPT order, by message id: one query however many there
    are."""
    if not messages:
        return {}
    recipients = (
        Recipient.objects.using(session._state.db)
        .filter(message__session=session, message__position__lte=messages[-1].position)
        .order_by("message__position", "id")[:SESSION_RECIPIENT_LIMIT]
    )
    by_message: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in recipients:
        by_message[recipient.message_id].append(recipient)
    return by_message


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
        """Sessions with a message that matches (see :func:`_search`): ``id IN
        (SELECT session_id FROM message WHERE ...)``, a semi-join that the database may
        drive from the matching messages (few) or from the sessions in list order
        (many), and that makes nothing DISTINCT. (``EXISTS(messages) OR
        EXISTS(recipients)`` could only test the sessions one by one, all of them when
        the term is rare.)"""
        term = search_term.strip()
        if not term:
            return queryset, False
        search = _search(term)
        session_ids = Message.objects.filter(search.messages).order_by().values("session_id")
        if search.recipients is not None:
            session_ids = session_ids.union(
                search.recipients.values("message__session_id"), all=True
            )
        return queryset.filter(pk__in=session_ids), False

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
        recipients = _first_recipients(session, messages)
        lines = session.transcript_lines(limit=TRANSCRIPT_LINE_LIMIT)
        message_rows = [self._message_row(m, recipients.get(m.pk, [])) for m in messages]
        return {
            "sockmail_messages": message_rows,
            "sockmail_messages_hidden": max(session.message_count - len(messages), 0),
            "sockmail_recipients_shown": any(row.recipients for row in message_rows),
            "sockmail_recipients_hidden": sum(row.recipients_hidden for row in message_rows),
            "sockmail_lines": [_line_row(line) for line in lines],
            "sockmail_lines_hidden": max(session.line_count - len(lines), 0),
            "sockmail_transcript_url": reverse(
                f"{self.admin_site.name}:django_sockmail_session_transcript",
                args=[session.pk],
                current_app=self.admin_site.name,
            ),
        }

    def _message_row(self, message: Message, recipients: list[Recipient]) -> _MessageRow:
        return _MessageRow(
            message,
            reverse(
                f"{self.admin_site.name}:django_sockmail_message_change",
                args=[message.pk],
                current_app=self.admin_site.name,
            ),
            status_icon(message.status, message.get_status_display()),
            [_RecipientRow(r, _recipient_outcome(r)) for r in recipients],
            max(message.recipient_count - len(recipients), 0),
            self.recipient_list_url(message.pk),
        )


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
        """Messages that match (see :func:`_search`): a condition on the message table,
        no join, nothing DISTINCT."""
        term = search_term.strip()
        if not term:
            return queryset, False
        search = _search(term)
        if search.recipients is None:
            return queryset.filter(search.messages), False
        message_ids = (
            Message.objects.filter(search.messages)
            .order_by()
            .values("pk")
            .union(search.recipients.values("message_id"), all=True)
        )
        return queryset.filter(pk__in=message_ids), False

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
        return _recipient_outcome(obj)

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
