"""SMTP peers for the tests: a real aiosmtpd server, and a scripted server of our own
for the faults no real server produces on demand."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


@dataclass
class RecordingHandler:
    """Keeps every message; refuses recipients whose domain is ``refused.test``."""

    messages: list[Received] = field(default_factory=list)
    sessions: int = 0
    data_reply: str = "250 2.0.0 Ok: queued as Q{n}"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:  # fmt: skip
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:  # fmt: skip
        if address.endswith("@refused.test"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                list(envelope.mail_options),
            )
        )
        return self.data_reply.format(n=len(self.messages))


USERS = {"alice": "correct horse battery staple"}


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:  # fmt: skip
    ok = isinstance(auth_data, LoginPassword) and (
        USERS.get(auth_data.login.decode()) == auth_data.password.decode()
    )
    return AuthResult(success=ok)


class SMTPServer:
    """aiosmtpd on 127.0.0.1 and a free port, in its own thread."""

    def __init__(self, **kwargs: Any) -> None:
        self.handler = RecordingHandler()
        self.host = "127.0.0.1"
        self.port = free_port()
        kwargs.setdefault("enable_SMTPUTF8", True)
        self.controller = Controller(
            self.handler, hostname=self.host, port=self.port, **kwargs
        )

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller._thread is not None:  # stopping twice is harmless
            self.controller.stop()


class Conversation:
    """What a scripted server's script gets: read client lines, send raw replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        self.received.append(line)
        return line

    def read_data(self) -> bytes:
        """The message content after a 354, up to and without the ``.`` line."""
        lines = []
        while (line := self.readline()) != b".":
            lines.append(line)
        return b"\r\n".join(lines)

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_side=True)

    def expect(self, prefix: bytes, reply: bytes) -> bytes:
        line = self.readline()
        assert line.upper().startswith(prefix), (line, prefix)
        self.send(reply)
        return line


Script = Callable[[Conversation], None]


class ScriptedServer:
    """Accepts connections on loopback and runs ``script`` for each, in a thread.

    Whatever the client sent is kept in ``conversations`` for the test to inspect.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port: int = self.listener.getsockname()[1]
        self.conversations: list[Conversation] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conversation = Conversation(sock)
            self.conversations.append(conversation)
            try:
                self.script(conversation)
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            except BaseException as exc:  # a failed assertion in the script
                self.errors.append(exc)
            finally:
                conversation.sock.close()

    @property
    def lines(self) -> list[bytes]:
        return [line for c in self.conversations for line in c.received]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            # Wakes the blocked accept(); closing the socket alone does not.
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
