"""The audit log in a real browser, as a person uses it: log in through the admin's
form, find the session, read its transcript, download it.

The browser is Debian's Chromium at /usr/bin/chromium (scripts/browser.sh installs it)
driven by Playwright; Playwright's own browser download is never used. Without either
the module is skipped.

``SOCKMAIL_SCREENSHOTS=1`` also saves the screenshots the docs and README show (docs/screenshots/).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.mail import EmailMessage
from django.test import override_settings
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from django_sockmail.models import Session
from tests.servers import USERS, SMTPServer, authenticator, backend_for
from tests.test_auth import secret_forms

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        f"no {CHROMIUM}: install Debian's chromium package (scripts/browser.sh does)",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:
    pytest.skip(
        "playwright is not installed: it is in the test extra (pip install -e '.[test]')",
        allow_module_level=True,
    )

# Headless as root, and nothing that reaches out to the network: this machine's
# network is closed, and Chromium's background connections would only be refused.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
USERNAME, PASSWORD = "auditor", "s3cret-pass"
SMTP_USER = "alice"
SMTP_PASSWORD = USERS[SMTP_USER]
# A line of the downloaded transcript: "+12.345ms C: EHLO ..."
DOWNLOADED_LINE = re.compile(r"\+\d+\.\d{3}ms (C|S): (.*)")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    """pytest-django's live server, also serving the admin's CSS and JavaScript.

    tests/settings.py sets no STATIC_URL (no other test needs one), and without it
    Django's live server fails every request; its default static handler serves
    STATIC_ROOT, which nothing collects into, so the pages would come unstyled. This
    fixture has the name pytest-django looks for, so each test still gets the
    transactional database and the ALLOWED_HOSTS entry that its own would give.
    """
    with override_settings(STATIC_URL="/static/"):
        server = LiveServer("localhost", start=False)
        # Files from each app's static/ folder, as runserver serves them.
        server.thread.static_handler = StaticFilesHandler
        server.start()
        yield server
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio event loop running in this thread while it
    # is started. Django then takes every ORM call made here (the test's own, and the
    # database teardown) for one made from async code and refuses it with
    # SynchronousOnlyOperation. They are plain synchronous calls made between browser
    # steps, and the live server answers in a thread of its own, so allow them.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=15_000
            )
            yield browser
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in a context of its own: no cookies, so nobody is logged in."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(5_000)  # a missing element fails in seconds, not 30
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save the page for the docs and the README, only when asked (normal runs do not)."""
    if os.environ.get("SOCKMAIL_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / name, full_page=full_page)


def test_a_person_reads_and_downloads_a_session_transcript(
    live_server: LiveServer, make_smtpd: Callable[..., SMTPServer], page: Page, tmp_path: Path
) -> None:
    server = make_smtpd(authenticator=authenticator, auth_require_tls=False)
    backend = backend_for(server, username=SMTP_USER, password=SMTP_PASSWORD)
    report = EmailMessage(
        "Quarterly report", "Numbers.", "billing@example.org", ["alice@example.org"]
    )
    lunch = EmailMessage(
        "Lunch?", "At noon?", "billing@example.org", ["bob@example.org", "x@refused.test"]
    )
    assert backend.send_messages([report, lunch]) == 2
    assert [m.rcpt_tos for m in server.messages] == [["alice@example.org"], ["bob@example.org"]]
    session = Session.objects.get()
    User.objects.create_superuser(USERNAME, "auditor@example.org", PASSWORD)

    page.goto(live_server.url + reverse("admin:index"))
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_server.url + reverse("admin:index"))

    page.locator("#content-main").get_by_role("link", name="SMTP sessions").click()
    expect(page).to_have_url(live_server.url + reverse("admin:django_sockmail_session_changelist"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(server.host)
    screenshot(page, "session-list.png")

    rows.get_by_role("link").first.click()
    session_url = reverse("admin:django_sockmail_session_change", args=[session.pk])
    expect(page).to_have_url(live_server.url + session_url)
    transcript = page.locator(".sockmail-transcript")
    client_lines = transcript.locator(".sockmail-line-client .sockmail-text")
    server_lines = transcript.locator(".sockmail-line-server .sockmail-text")
    refusals = transcript.locator(".sockmail-line-server-error .sockmail-text")
    expect(client_lines.filter(has_text=re.compile(r"^EHLO "))).to_be_visible()
    expect(client_lines.filter(has_text="MAIL FROM:<billing@example.org>").first).to_be_visible()
    expect(client_lines.filter(has_text="RCPT TO:<x@refused.test>")).to_be_visible()
    expect(server_lines.filter(has_text=re.compile(r"^250 ")).first).to_be_visible()
    expect(refusals).to_have_text(["550 5.1.1 No such user here"])
    expect(page.locator(".sockmail-refused")).to_contain_text(["x@refused.test (550)"])
    screenshot(page, "session-page.png", full_page=True)
    page_lines = [
        (row.locator(".sockmail-prefix").inner_text(), row.locator(".sockmail-text").inner_text())
        for row in transcript.locator(
            "tr.sockmail-line-client, tr.sockmail-line-server, tr.sockmail-line-server-error"
        ).all()
    ]

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download transcript").click()
    download = download_info.value
    assert download.suggested_filename == f"sockmail-session-{session.pk}.txt"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    text = saved.read_text(encoding="utf-8")

    downloaded_lines = [
        (f"{m[1]}:", m[2]) for line in text.splitlines() if (m := DOWNLOADED_LINE.fullmatch(line))
    ]
    # The same conversation as on the page, line for line.
    assert downloaded_lines == page_lines
    said = [f"{prefix} {line}" for prefix, line in downloaded_lines]
    assert any(line.startswith("C: EHLO ") for line in said)
    assert sum(line.startswith("C: MAIL FROM:<billing@example.org>") for line in said) == 2
    assert "S: 550 5.1.1 No such user here" in said
    assert any(line.startswith("C: AUTH ") for line in said)  # so the check below means something
    for secret in secret_forms(SMTP_PASSWORD):
        assert secret not in text
        assert secret not in page.content()


def test_an_anonymous_visitor_is_sent_to_the_login_page(
    live_server: LiveServer, smtpd: SMTPServer, page: Page
) -> None:
    backend = backend_for(smtpd)
    EmailMessage(
        "Private", "body", "from@example.org", ["to@example.org"], connection=backend
    ).send()
    session = Session.objects.get()
    login = re.compile(re.escape(live_server.url + reverse("admin:login")) + r"\?next=")

    page.goto(live_server.url + reverse("admin:django_sockmail_session_change", args=[session.pk]))

    expect(page).to_have_url(login)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert "MAIL FROM" not in page.content()

    # The download too: a redirect to the login page, not the transcript.
    page.goto(
        live_server.url + reverse("admin:django_sockmail_session_transcript", args=[session.pk])
    )
    expect(page).to_have_url(login)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert "MAIL FROM" not in page.content()
