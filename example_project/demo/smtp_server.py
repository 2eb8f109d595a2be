"""The demo's own SMTP server: aiosmtpd on a loopback port, keeping what it receives
in memory, refusing every recipient at a ``.invalid`` domain (RFC 2606)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

REFUSED_DOMAIN = "nowhere.invalid"


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    queue_id: str


class MemoryHandler:
    """aiosmtpd handler: accepts mail for every domain but ``.invalid`` ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # hooks run on the controller's thread
        self._received: list[ReceivedMessage] = []

    @property
    def received(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._received)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain == "invalid" or domain.endswith(".invalid"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            queue_id = f"DEMO{len(self._received) + 1:04d}"
            self._received.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=envelope.original_content or b"",
                    queue_id=queue_id,
                )
            )
        # Postfix's wording, so the audit log shows a queue id.
        return f"250 2.0.0 Ok: queued as {queue_id}"


def free_port(host: str, preferred: int = 0) -> int:
    """``preferred`` when nothing listens there, else a port the OS picks.

    Chosen by binding first because not every aiosmtpd Controller accepts port 0.
    """
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the server will (asyncio's default): a port in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError(f"no free port on {host}")


class DemoSMTPServer:
    """An aiosmtpd server on its own thread; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = free_port(host, port)
        self.handler = MemoryHandler()
        # A fixed server name: the default, socket.getfqdn(), can stall on a machine
        # without working DNS.
        self._controller = Controller(
            self.handler,
            hostname=host,
            port=self.port,
            server_hostname="sockmail-demo.localhost",
            ready_timeout=10.0,
        )

    @property
    def received(self) -> list[ReceivedMessage]:
        return self.handler.received

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> DemoSMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
