"""What the socket driver reports as a session unfolds (the source of every transcript)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .reply import Reply


@dataclass(frozen=True)
class TLSInfo:
    version: str
    cipher: str
    peer_subject: str = ""
    peer_issuer: str = ""
    peer_not_before: str = ""
    peer_not_after: str = ""
    peer_fingerprint_sha256: str = ""


class SessionListener(Protocol):
    """Receives every step of a session, in order. Command text is already redacted.

    The methods do nothing by default, so a listener implements only what it needs.
    """

    def on_connecting(self, host: str, port: int) -> None:
        return None

    def on_connected(self, peer_address: str, local_address: str) -> None:
        return None

    def on_command(self, text: str) -> None:
        return None

    def on_reply(self, reply: Reply) -> None:
        return None

    def on_content(self, content: bytes) -> None:
        """The message content was sent (CRLF-normalised, before dot-stuffing)."""
        return None

    def on_tls(self, info: TLSInfo) -> None:
        return None

    def on_closed(self) -> None:
        return None

    def on_error(self, error: BaseException) -> None:
        return None


class NullListener(SessionListener):
    """Ignores everything: for a client whose caller keeps no transcript."""
