"""Signals for integrations. Receivers run after the fact and can never break sending:
they are called with ``send_robust`` and their exceptions are logged.

- ``session_recorded(sender=Session, session, transcript)``: a session was written
  to the audit log.
- ``message_sent(sender=EmailBackend, message, outcome)``: the server accepted a
  message (``outcome.status`` is "sent", or "partial" when some recipients were
  refused; ``outcome.recipients`` holds each recipient's reply).
- ``message_failed(sender=EmailBackend, message, outcome, error)``: the server did
  not take a message, or the session ended before it could.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_sockmail")

session_recorded = Signal()
message_sent = Signal()
message_failed = Signal()


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal``; log, never raise, what a receiver raises."""
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("A django_sockmail signal receiver failed: %r", receiver, exc_info=result)
