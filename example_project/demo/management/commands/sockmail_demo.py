"""``manage.py sockmail_demo``: send a few messages through django_sockmail to an
embedded SMTP server, print what was recorded, then serve the admin to browse it.

``--no-serve`` stops after the summary, ``--serve-only`` serves (the embedded SMTP
server too) without sending, ``--reset`` starts from an empty demo database: every
run adds its sessions to the same one."""

from __future__ import annotations

import shlex
import smtplib
import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection, send_mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import QuerySet
from django.test import override_settings
from django.test.utils import TestContextDecorator
from django.urls import reverse

from demo.smtp_server import REFUSED_DOMAIN, DemoSMTPServer
from django_sockmail import outcome_of
from django_sockmail.models import Session, TranscriptLine

SENDER = "demo@example.com"
DEMO_USERNAME = DEMO_PASSWORD = "demo"
DEFAULT_WEB_PORT = 8000
REPO_ROOT = Path(__file__).resolve().parents[4]  # example_project/demo/management/commands


# Django 6.1 configures mail with MAILERS (the EMAIL_* settings are deprecated there).
HAS_MAILERS = django.VERSION >= (6, 1)


def mail_server() -> tuple[str, int]:
    """Where the settings send mail: the default mailer's host and port on Django 6.1,
    EMAIL_HOST and EMAIL_PORT on 5.2."""
    if HAS_MAILERS:
        mailers: dict[str, Any] = settings.MAILERS
        options = mailers["default"]["OPTIONS"]
        return options["host"], int(options["port"])
    return settings.EMAIL_HOST, int(settings.EMAIL_PORT)


def mail_to(host: str, port: int) -> TestContextDecorator:
    """The settings, with mail sent to ``host``:``port`` instead, in each Django's terms."""
    if not HAS_MAILERS:
        return override_settings(EMAIL_HOST=host, EMAIL_PORT=port)
    mailers: dict[str, Any] = settings.MAILERS
    default = mailers["default"]
    options = {**default.get("OPTIONS", {}), "host": host, "port": port}
    return override_settings(MAILERS={**mailers, "default": {**default, "OPTIONS": options}})


def default_mailer() -> BaseEmailBackend:
    """A new instance of the default mailer: ``mailers.default`` on Django 6.1,
    ``get_connection()`` (the EMAIL_* settings) on 5.2."""
    if HAS_MAILERS:
        from django.core.mail import mailers  # type: ignore[attr-defined,unused-ignore]

        mailer: BaseEmailBackend = mailers.default
        return mailer
    return get_connection()


def demo_commands(*args: str) -> list[str]:
    """The commands that run the demo with ``args`` from the repository root: the
    script (which makes .venv first), and the interpreter running it now (.venv's
    when the script started it) with this manage.py."""
    python = Path(sys.executable)
    if python.is_relative_to(REPO_ROOT):
        python = python.relative_to(REPO_ROOT)
    return [
        shlex.join(["./scripts/demo.sh", *args]),
        shlex.join([str(python), "example_project/manage.py", "sockmail_demo", *args]),
    ]


class Command(BaseCommand):
    help = (
        "Send demo mail through django_sockmail to an embedded SMTP server, print the "
        "recorded SMTP sessions, then run the development server to browse them."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--no-serve",
            action="store_true",
            help="Stop after the summary instead of running the development server.",
        )
        mode.add_argument(
            "--serve-only",
            action="store_true",
            help="Send nothing: start the embedded SMTP server and the development server "
            "to browse what earlier runs recorded.",
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the demo database first and migrate afresh (every run adds its "
            "sessions to the same database).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=DEFAULT_WEB_PORT,
            help="Port for the development server.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        web_port: int = options["port"]
        if options["reset"]:
            self._delete_database()
        call_command("migrate", verbosity=0)
        self._ensure_demo_user()

        # The settings' port when it is free, so the settings tell the truth.
        with DemoSMTPServer("127.0.0.1", mail_server()[1]) as server:
            self.stdout.write(
                self.style.MIGRATE_HEADING(
                    f"Embedded SMTP server (aiosmtpd) listening on {server.host}:{server.port}"
                )
            )
            # Mail the site sends while it runs (password reset, ...) goes there too.
            with mail_to(server.host, server.port):
                if not options["serve_only"]:
                    known = set(Session.objects.values_list("pk", flat=True))
                    self._send_demo_mail(server)
                    self._print_sessions(Session.objects.exclude(pk__in=known).order_by("pk"))
                self._print_database()
                self._print_admin(web_port, serving=not options["no_serve"])
                if not options["no_serve"]:
                    call_command("runserver", f"127.0.0.1:{web_port}", use_reloader=False)

    def _delete_database(self) -> None:
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.sqlite3":
            raise CommandError("--reset deletes the demo's SQLite file; this database is none")
        connections["default"].close()
        path = Path(database["NAME"])
        path.unlink(missing_ok=True)
        self.stdout.write(f"Deleted the demo database {path}; migrating afresh.")

    def _ensure_demo_user(self) -> None:
        user, _ = User.objects.get_or_create(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = True
        user.set_password(DEMO_PASSWORD)  # reset on every run: the login stays demo / demo
        user.save()

    def _send_demo_mail(self, server: DemoSMTPServer) -> None:
        # Each message goes through the default mailer (mail_to() points it at server).
        def plain() -> str:
            sent = send_mail(
                "Welcome to django_sockmail",
                "Every SMTP session this backend opens is kept, command by command.",
                SENDER,
                ["alice@example.com"],
            )
            return f"sent {sent}"

        def with_cc_and_attachment() -> str:
            message = EmailMessage(
                "Monthly report",
                "The report is attached.",
                SENDER,
                to=["bob@example.com"],
                cc=["carol@example.com"],
            )
            message.attach("report.csv", "month,sent\n2025-01,3\n", "text/csv")
            return f"sent {message.send()}"

        def batch() -> str:
            messages = [
                EmailMessage(
                    f"Newsletter {n} of 3", f"Issue {n}.", SENDER, [f"reader{n}@example.com"]
                )
                for n in (1, 2, 3)
            ]
            return f"sent {default_mailer().send_messages(messages)}"

        def refused_recipient() -> str:
            message = EmailMessage(
                "One good address, one bad",
                "The server refuses the second recipient.",
                SENDER,
                to=["dave@example.com", f"nobody@{REFUSED_DOMAIN}"],
            )
            sent = message.send()
            # The backend leaves its verdict on the message.
            outcome = outcome_of(message)
            refused = ", ".join(
                f"{address} ({reply.code} {reply.text})"
                for address, reply in outcome.refused_recipients.items()
            )
            return f"sent {sent}, status {outcome.status}, refused: {refused}"

        steps: list[tuple[str, Callable[[], str]]] = [
            ("send_mail() to one recipient", plain),
            ("EmailMessage with cc and an attachment", with_cc_and_attachment),
            ("3 messages over one connection (send_messages)", batch),
            (f"a message with one recipient at {REFUSED_DOMAIN}", refused_recipient),
        ]
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Sending"))
        for number, (title, step) in enumerate(steps, 1):
            try:
                outcome = step()
            except smtplib.SMTPException as error:
                # A refusal is part of what the demo shows, not a reason to stop.
                outcome = self.style.WARNING(f"{type(error).__name__}: {error}")
            self.stdout.write(f"  {number}. {title}: {outcome}")
        received = server.received
        self.stdout.write(
            f"The embedded server received {len(received)} message(s): "
            + "; ".join(f"{m.queue_id} for {', '.join(m.rcpt_tos)}" for m in received)
        )

    def _print_sessions(self, sessions: QuerySet[Session]) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Recorded SMTP sessions"))
        for session in sessions.prefetch_related("messages__recipients"):
            self.stdout.write("")
            self.stdout.write(
                self.style.SUCCESS(f"Session {session.pk}: {session}")
                + f", {session.message_count} message(s), {session.sent_count} sent"
            )
            if session.error:
                self.stdout.write(self.style.ERROR(f"  {session.error}"))
            for line in session.iter_transcript_lines():
                text = line.text
                if line.direction == TranscriptLine.Direction.CONTENT:
                    # The header block is in the admin; here only its last line, the size.
                    text = text.rsplit("\n", 1)[-1]
                self.stdout.write(f"  {line.direction}: {text}")
            for message in session.messages.all():
                self.stdout.write(
                    f"  Message {message.position}: {message.subject!r}"
                    f" {message.get_status_display()}"
                    + (f", {message.reply}" if message.reply else "")
                    + (f", {message.error}" if message.error else "")
                )
                for recipient in message.recipients.all():
                    self.stdout.write(
                        f"    {recipient}" + (f" {recipient.reply}" if recipient.reply else "")
                    )

    def _print_database(self) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Demo database"))
        self.stdout.write(
            f"  {settings.DATABASES['default']['NAME']} keeps the sessions of every run: "
            f"{Session.objects.count()} SMTP session(s) so far."
        )
        self.stdout.write("  To start afresh (an empty database), run the demo with --reset:")
        self.stdout.write(f"    {demo_commands('--reset')[0]}")

    def _print_admin(self, web_port: int, *, serving: bool) -> None:
        url = f"http://127.0.0.1:{web_port}{reverse('admin:django_sockmail_session_changelist')}"
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Admin"))
        self.stdout.write(f"  {url}")
        self.stdout.write(f"  log in as {DEMO_USERNAME} / {DEMO_PASSWORD}")
        if not serving:
            port = [] if web_port == DEFAULT_WEB_PORT else ["--port", str(web_port)]
            script, manage = demo_commands("--serve-only", *port)
            self.stdout.write(
                "  To serve it, with the embedded SMTP server and without sending again, "
                "from the repository root:"
            )
            self.stdout.write(f"    {script}")
            self.stdout.write(f"  or, with this Python:\n    {manage}")
