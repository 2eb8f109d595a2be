"""``manage.py sockmail_demo``: send a few messages through django_sockmail to an
embedded SMTP server, print what was recorded, then serve the admin to browse it."""

from __future__ import annotations

import smtplib
from argparse import ArgumentParser
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection, send_mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db.models import QuerySet
from django.test import override_settings
from django.urls import reverse

from demo.smtp_server import REFUSED_DOMAIN, DemoSMTPServer
from django_sockmail import outcome_of
from django_sockmail.models import Session, TranscriptLine

BACKEND = "django_sockmail.backend.EmailBackend"
SENDER = "demo@example.com"
DEMO_USERNAME = DEMO_PASSWORD = "demo"


class Command(BaseCommand):
    help = (
        "Send demo mail through django_sockmail to an embedded SMTP server, print the "
        "recorded SMTP sessions, then run the development server to browse them."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Stop after the summary instead of running the development server.",
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="Port for the development server."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        web_port: int = options["port"]
        call_command("migrate", verbosity=0)
        self._ensure_demo_user()

        # The settings' EMAIL_PORT when it is free, so the settings tell the truth.
        with DemoSMTPServer("127.0.0.1", settings.EMAIL_PORT) as server:
            self.stdout.write(
                self.style.MIGRATE_HEADING(
                    f"Embedded SMTP server (aiosmtpd) listening on {server.host}:{server.port}"
                )
            )
            # Mail the site sends while it runs (password reset, ...) goes there too.
            with override_settings(EMAIL_HOST=server.host, EMAIL_PORT=server.port):
                known = set(Session.objects.values_list("pk", flat=True))
                self._send_demo_mail(server)
                self._print_sessions(Session.objects.exclude(pk__in=known).order_by("pk"))
                self._print_admin(web_port, serving=not options["no_serve"])
                if not options["no_serve"]:
                    call_command("runserver", f"127.0.0.1:{web_port}", use_reloader=False)

    def _ensure_demo_user(self) -> None:
        user, _ = User.objects.get_or_create(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = True
        user.set_password(DEMO_PASSWORD)  # reset on every run: the login stays demo / demo
        user.save()

    def _send_demo_mail(self, server: DemoSMTPServer) -> None:
        def connection() -> BaseEmailBackend:
            return get_connection(BACKEND, host=server.host, port=server.port)

        def plain() -> str:
            sent = send_mail(
                "Welcome to django_sockmail",
                "Every SMTP session this backend opens is kept, command by command.",
                SENDER,
                ["alice@example.com"],
                connection=connection(),
            )
            return f"sent {sent}"

        def with_cc_and_attachment() -> str:
            message = EmailMessage(
                "Monthly report",
                "The report is attached.",
                SENDER,
                to=["bob@example.com"],
                cc=["carol@example.com"],
                connection=connection(),
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
            return f"sent {connection().send_messages(messages)}"

        def refused_recipient() -> str:
            message = EmailMessage(
                "One good address, one bad",
                "The server refuses the second recipient.",
                SENDER,
                to=["dave@example.com", f"nobody@{REFUSED_DOMAIN}"],
                connection=connection(),
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

    def _print_admin(self, web_port: int, *, serving: bool) -> None:
        url = f"http://127.0.0.1:{web_port}{reverse('admin:django_sockmail_session_changelist')}"
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Admin"))
        self.stdout.write(f"  {url}")
        self.stdout.write(f"  log in as {DEMO_USERNAME} / {DEMO_PASSWORD}")
        if not serving:
            self.stdout.write("  (start it with: python example_project/manage.py runserver)")
