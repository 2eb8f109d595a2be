"""What the socket driver reports as a session unfolds (the source of every transcript)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .replies import Reply


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
    """Receives every step of a session, in order. Command text is already redacted."""

    def on_connecting(self, host: str, port: int) -> None: ...

    def on_connected(self, peer_address: str, local_address: str) -> None: ...

    def on_command(self, text: str) -> None: ...

    def on_reply(self, reply: Reply) -> None: ...

    def on_content(self, content: bytes) -> None: ...

    def on_tls(self, info: TLSInfo) -> None: ...

    def on_closed(self) -> None: ...

    def on_error(self, error: BaseException) -> None: ...
