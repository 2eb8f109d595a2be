"""One send through the installed wheel: python dist_smoke.py (in a clean virtual environment)

Run by scripts/check_dist.sh from a temporary directory holding ``smoke_settings.py``
(DJANGO_SETTINGS_MODULE) and a migrated SQLite database, with only the wheel and
aiosmtpd installed. Starts an aiosmtpd server on a free port in a thread, sends one
message with ``send_mail()`` through ``django_sockmail.backend.EmailBackend`` and checks
that the server got it and that the audit log recorded one Session with status "ok".
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import django


class Keep:
    """aiosmtpd handler: keeps each envelope it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: kept"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fail(why: str) -> None:
    print(f"  FAIL  {why}")
    sys.exit(1)


def main() -> None:
    from aiosmtpd.controller import Controller

    django.setup()
    from django.conf import settings
    from django.core.mail import send_mail
    from django.test.utils import override_settings

    import django_sockmail
    from django_sockmail.models import Session

    where = os.path.dirname(django_sockmail.__file__)
    if "site-packages" not in where:
        fail(f"django_sockmail imported from {where}, not from the installed wheel")
    print(f"  ok    django_sockmail {django_sockmail.__version__} imported from {where}")
    keep = Keep()
    controller = Controller(keep, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with override_settings(EMAIL_HOST="127.0.0.1", EMAIL_PORT=controller.port):
            sent = send_mail(
                "Built and installed",
                "One message through the installed wheel.\n",
                "sender@example.com",
                ["rcpt@example.com"],
            )
    finally:
        controller.stop()
    backend = settings.EMAIL_BACKEND
    if sent != 1 or len(keep.envelopes) != 1:
        fail(f"send_mail() returned {sent}; the server got {len(keep.envelopes)} message(s)")
    envelope = keep.envelopes[0]
    if envelope.rcpt_tos != ["rcpt@example.com"] or b"Built and installed" not in envelope.content:
        fail(f"the server got the wrong message: {envelope.rcpt_tos} {envelope.content[:200]!r}")
    print(f"  ok    send_mail() through {backend}: aiosmtpd on port {controller.port} got it")
    statuses = list(Session.objects.values_list("status", flat=True))
    if statuses != ["ok"]:
        fail(f"the audit log holds sessions with statuses {statuses}, not one 'ok'")
    print('  ok    the audit log recorded one Session with status "ok"')


if __name__ == "__main__":
    main()
