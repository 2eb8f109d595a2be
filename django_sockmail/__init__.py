"""django_sockmail: send Django's mail over a hand-written SMTP client and keep the
transcript of every session."""

__version__ = "0.1.0"

from .smtp.envelope import DSN

__all__ = ["DSN"]
