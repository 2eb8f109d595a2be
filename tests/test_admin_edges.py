"""The admin at its edges: a message to thousands of recipients (its page and its
session's show the first few, count the rest and link to them in the recipient list),
and the transcript download refused alike for a missing and an existing session to
whoever may not view sessions."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_sockmail import admin as sockmail_admin
from django_sockmail.admin import MESSAGE_FILTER, RECIPIENT_LIMIT, SESSION_RECIPIENT_LIMIT
from django_sockmail.admin_pagination import CappedCountPaginator
from django_sockmail.models import Message, Recipient, Session
from tests.test_admin_scale import explain, fill, sockmail_sql
from tests.toolkit import STARTED

pytestmark = pytest.mark.django_db

RECIPIENTS = reverse("admin:django_sockmail_recipient_changelist")


def session_with(*recipient_counts: int) -> Session:
    """A session with a message to each of ``recipient_counts`` recipients, made row by
    row as the recorder would: addresses ``r<j>@m<position>.example``, every seventh
    refused."""
    session = Session.objects.create(
        host="mail.example.com",
        port=587,
        started_at=STARTED,
        status=Session.Status.OK,
        message_count=len(recipient_counts),
        sent_count=len(recipient_counts),
    )
    messages = Message.objects.bulk_create(
        Message(
            session=session,
            position=position,
            envelope_from="news@example.org",
            subject=f"Newsletter {position}",
            status=Message.Status.PARTIAL,
            recipient_count=count,
        )
        for position, count in enumerate(recipient_counts, start=1)
    )
    Recipient.objects.bulk_create(
        Recipient(
            message=message,
            address=f"r{j}@m{message.position}.example",
            accepted=j % 7 != 6,
            reply_code=250 if j % 7 != 6 else 550,
            reply_text="2.1.5 Ok" if j % 7 != 6 else "5.1.1 No such user",
        )
        for message in messages
        for j in range(message.recipient_count)
    )
    return session


def addresses(content: str, position: int) -> list[int]:
    """The j of each ``r<j>@m<position>.example`` on a page, in order, once each."""
    seen = re.findall(rf"\br(\d+)@m{position}\.example", content)
    return [int(j) for j in dict.fromkeys(seen)]


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Small caps, for the tests that need not render hundreds of rows to make a point:
    (RECIPIENT_LIMIT, SESSION_RECIPIENT_LIMIT)."""
    monkeypatch.setattr(sockmail_admin, "RECIPIENT_LIMIT", 5)
    monkeypatch.setattr(sockmail_admin, "SESSION_RECIPIENT_LIMIT", 8)
    return 5, 8


def recipient_list_url(message: Message) -> str:
    return f"{RECIPIENTS}?{MESSAGE_FILTER}={message.pk}"


def assert_lists_all_recipients_of(client: Client, message: Message) -> None:
    """The recipient list filtered to ``message`` has its recipients, and no other."""
    response = client.get(RECIPIENTS, {MESSAGE_FILTER: str(message.pk)})
    assert response.status_code == 200
    cl = response.context["cl"]
    assert cl.result_count == message.recipient_count
    page = list(cl.result_list)
    assert {r.message_id for r in page} == {message.pk}
    # One message's recipients in the order they were given (RCPT order).
    assert [r.address for r in page] == [
        f"r{j}@m{message.position}.example" for j in range(len(page))
    ]
    assert page == list(message.recipients.order_by("id")[: len(page)])


def test_the_message_page_shows_the_first_recipients_and_links_to_the_rest(
    admin_client: Client,
) -> None:
    session = session_with(RECIPIENT_LIMIT + 250, 3)
    big, other = session.messages.order_by("position")

    response = admin_client.get(reverse("admin:django_sockmail_message_change", args=[big.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert addresses(content, 1) == list(range(RECIPIENT_LIMIT))
    assert addresses(content, 2) == []
    assert "250 more recipients not shown" in content
    link = f'<a href="{html.escape(recipient_list_url(big))}">all {RECIPIENT_LIMIT + 250}'
    assert link in content
    assert_lists_all_recipients_of(admin_client, big)
    assert_lists_all_recipients_of(admin_client, other)


def test_a_message_with_as_many_recipients_as_the_cap_shows_them_all_without_a_note(
    admin_client: Client, limits: tuple[int, int]
) -> None:
    cap, _ = limits
    full, over = (session_with(n).messages.get() for n in (cap, cap + 1))

    content = admin_client.get(
        reverse("admin:django_sockmail_message_change", args=[full.pk])
    ).content.decode()
    assert addresses(content, 1) == list(range(cap))
    assert "not shown" not in content
    assert MESSAGE_FILTER not in content

    content = admin_client.get(
        reverse("admin:django_sockmail_message_change", args=[over.pk])
    ).content.decode()
    assert addresses(content, 1) == list(range(cap))
    assert "1 more recipient not shown" in content
    assert html.escape(recipient_list_url(over)) in content


def test_the_message_page_needs_as_many_queries_for_thousands_of_recipients(
    admin_client: Client, limits: tuple[int, int]
) -> None:
    cap, _ = limits
    small, big = (session_with(n).messages.get() for n in (2, 3000))
    url = reverse("admin:django_sockmail_message_change", args=[small.pk])
    admin_client.get(url)  # what the admin caches (the content types)

    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(reverse("admin:django_sockmail_message_change", args=[big.pk]))

    assert len(addresses(response.content.decode(), 1)) == cap
    assert len(many.captured_queries) == len(few.captured_queries)
    [read] = [q["sql"] for q in many.captured_queries if "sockmail_recipient" in q["sql"]]
    assert f"LIMIT {cap}" in read


def recipient_table(content: str) -> str:
    table = content.split('<table class="sockmail-table sockmail-recipients">', 1)[1]
    return table.split("</table>", 1)[0]


def message_table(content: str) -> str:
    return content.split('<fieldset class="module sockmail-messages">', 1)[1].split(
        '<table class="sockmail-table sockmail-recipients">', 1
    )[0]


def test_the_session_page_shows_the_first_recipients_and_links_to_the_rest(
    admin_client: Client,
) -> None:
    # The first message's recipients fill all but ten places, the second has ten shown
    # and twenty more, the third none shown and five more.
    session = session_with(SESSION_RECIPIENT_LIMIT - 10, 30, 5)
    first, second, third = session.messages.order_by("position")

    response = admin_client.get(reverse("admin:django_sockmail_session_change", args=[session.pk]))

    content = response.content.decode()
    table = recipient_table(content)
    assert table.count('<tr class="sockmail-recipient">') == SESSION_RECIPIENT_LIMIT
    assert addresses(table, 1) == list(range(SESSION_RECIPIENT_LIMIT - 10))
    assert addresses(table, 2) == list(range(10))
    assert addresses(table, 3) == []
    # Each message with recipients not shown has a row that counts them and links to them.
    hidden = re.findall(
        r'<tr class="sockmail-recipients-hidden">.*?<a href="([^"]+)">(\d+) more recipients? '
        r"of message (\d+)</a>",
        table,
        re.DOTALL,
    )
    assert hidden == [
        (html.escape(recipient_list_url(second)), "20", "2"),
        (html.escape(recipient_list_url(third)), "5", "3"),
    ]
    assert "25 more recipients not shown" in content
    # The message table's recipient column too: the same recipients, then the link.
    messages = message_table(content)
    assert addresses(messages, 1) == list(range(SESSION_RECIPIENT_LIMIT - 10))
    assert addresses(messages, 2) == list(range(10))
    assert f'<a href="{html.escape(recipient_list_url(second))}">and 20 more</a>' in messages
    assert f'<a href="{html.escape(recipient_list_url(third))}">5 more</a>' in messages
    assert recipient_list_url(first) not in html.unescape(content)
    for message in (first, second, third):
        assert_lists_all_recipients_of(admin_client, message)


def test_the_session_page_needs_as_many_queries_for_thousands_of_recipients(
    admin_client: Client, limits: tuple[int, int]
) -> None:
    _, cap = limits
    small = session_with(1, 1)
    big = session_with(3000, 2000)
    admin_client.get(reverse("admin:django_sockmail_session_change", args=[small.pk]))

    with CaptureQueriesContext(connection) as few:
        admin_client.get(reverse("admin:django_sockmail_session_change", args=[small.pk]))
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(reverse("admin:django_sockmail_session_change", args=[big.pk]))

    table = recipient_table(response.content.decode())
    assert table.count('<tr class="sockmail-recipient">') == cap
    assert len(many.captured_queries) == len(few.captured_queries)
    [read] = [q["sql"] for q in many.captured_queries if "sockmail_recipient" in q["sql"]]
    assert f"LIMIT {cap}" in read


def test_the_session_page_reads_no_recipient_of_a_message_it_does_not_show(
    admin_client: Client, limits: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cap = limits
    monkeypatch.setattr(sockmail_admin, "MESSAGE_LIMIT", 2)
    session = session_with(3, 2, 3000)  # the third message is past the limit

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(
            reverse("admin:django_sockmail_session_change", args=[session.pk])
        )

    content = response.content.decode()
    assert "1 more message not shown" in content
    assert (addresses(content, 1), addresses(content, 2), addresses(content, 3)) == (
        [0, 1, 2],
        [0, 1],
        [],
    )
    [read] = [q["sql"] for q in queries.captured_queries if "sockmail_recipient" in q["sql"]]
    assert f"LIMIT {cap}" in read
    with connection.cursor() as cursor:  # what the query fetched: the five shown, no more
        cursor.execute(read)
        assert len(cursor.fetchall()) == 5


def test_the_recipient_list_is_read_only_and_seen_by_whoever_may_see_messages(
    client: Client, django_user_model: type[User]
) -> None:
    message = session_with(3).messages.get()
    clerk = django_user_model.objects.create_user(username="clerk", password="x", is_staff=True)
    client.force_login(clerk)
    assert client.get(recipient_list_url(message)).status_code == 403

    clerk.user_permissions.add(
        Permission.objects.get(content_type__app_label="django_sockmail", codename="view_message")
    )
    client.force_login(clerk)
    assert_lists_all_recipients_of(client, message)

    recipient = message.recipients.first()
    assert recipient is not None
    change = reverse("admin:django_sockmail_recipient_change", args=[recipient.pk])
    assert client.post(change, {"address": "evil@example.net"}).status_code == 403
    delete = reverse("admin:django_sockmail_recipient_delete", args=[recipient.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    boss = django_user_model.objects.create_superuser(username="boss", password="x")
    client.force_login(boss)
    assert client.get(reverse("admin:django_sockmail_recipient_add")).status_code == 403
    assert client.post(change, {"address": "evil@example.net"}).status_code == 403
    assert list(message.recipients.values_list("address", flat=True)) == [
        f"r{j}@m1.example" for j in range(3)
    ]


def test_the_recipient_list_needs_as_many_queries_however_many_rows(
    admin_client: Client,
) -> None:
    # Built like the other lists for millions of rows (see test_admin_scale.py): a
    # capped count, a page, each row's message joined in; nothing grows with the rows.
    fill(10)
    message = Message.objects.order_by("id").first()
    assert message is not None
    lists: tuple[dict[str, str], ...] = ({}, {MESSAGE_FILTER: str(message.pk)})
    few = []
    for params in lists:
        with CaptureQueriesContext(connection) as queries:
            few.append((admin_client.get(RECIPIENTS, params), queries))
    fill(490)

    for params, (few_rows, few_queries) in zip(lists, few, strict=True):
        with CaptureQueriesContext(connection) as many_queries:
            many_rows = admin_client.get(RECIPIENTS, params)

        assert len(many_queries) == len(few_queries), params
        count, page = sockmail_sql(many_queries)
        assert f"LIMIT {CappedCountPaginator.count_limit + 1}" in count
        assert "INNER JOIN " in page  # each row's message
        if params:  # the message's two recipients, in RCPT order: one page
            assert list(few_rows.context["cl"].result_list) == list(
                many_rows.context["cl"].result_list
            )
            assert [r.address for r in many_rows.context["cl"].result_list] == [
                f"{name}0@example.net" for name in ("to", "cc")
            ]
        else:  # a full page, newest first
            assert page.endswith("LIMIT 100"), page
            assert list(many_rows.context["cl"].result_list) == list(
                Recipient.objects.order_by("-id")[:100]
            )


@pytest.mark.postgresql
def test_a_message_s_recipients_are_read_through_an_index(admin_client: Client) -> None:
    # The recipient list filtered to a message, and the session page's first
    # recipients: index lookups however many recipients the log holds.
    fill(150)
    session = Session.objects.get(messages__queue_id="Q75")
    message = session.messages.get()

    with CaptureQueriesContext(connection) as queries:
        admin_client.get(RECIPIENTS, {MESSAGE_FILTER: str(message.pk)})
        admin_client.get(reverse("admin:django_sockmail_session_change", args=[session.pk]))

    reads = [sql for sql in sockmail_sql(queries) if '"django_sockmail_recipient"' in sql]
    assert len(reads) == 3, reads  # the list's count and page; the session page's
    for sql in reads:
        used = explain(sql)
        assert not [u for u in used if u[0] == "Seq Scan"], (sql, used)
        assert any("message_id" in condition for _, condition in used), (sql, used)


# The transcript download without the permission to view sessions


@pytest.fixture
def clerk(client: Client, django_user_model: type[User]) -> Client:
    """Staff, with the permission to view messages but not sessions."""
    user = django_user_model.objects.create_user(username="clerk", password="x", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="django_sockmail", codename="view_message")
    )
    client.force_login(user)
    return client


def answer(client: Client, url: str) -> tuple[Any, list[str]]:
    """The response to a GET of ``url`` and its queries, without their literal values
    (the time the login session is checked against)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    return response, [re.sub(r"'[^']*'", "?", q["sql"]) for q in queries.captured_queries]


def test_a_missing_and_an_existing_session_are_refused_alike(clerk: Client) -> None:
    session = session_with(1)
    missing = session.pk + 1000
    transcript = "admin:django_sockmail_session_transcript"
    answer(clerk, reverse(transcript, args=[missing]))  # what is cached per process

    existing_response, existing_sql = answer(clerk, reverse(transcript, args=[session.pk]))
    missing_response, missing_sql = answer(clerk, reverse(transcript, args=[missing]))

    assert existing_response.status_code == missing_response.status_code == 403
    assert existing_response.content == missing_response.content
    # Refused before any lookup: the same queries (the user's), none of the audit log.
    assert existing_sql == missing_sql
    assert not [sql for sql in existing_sql if "django_sockmail_" in sql]
    # As Django's own change view answers.
    for pk in (session.pk, missing):
        url = reverse("admin:django_sockmail_session_change", args=[pk])
        assert clerk.get(url).status_code == 403
