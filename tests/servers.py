"""SMTP peers for the tests: a real aiosmtpd server, and a scripted server of our own
for the faults no real server produces on demand."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import django
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.conf import settings
from django.core.mail import get_connection
from django.test import override_settings

from django_sockmail.backend import EmailBackend
from django_sockmail.conf import MAIL_OPTIONS
from tests.instances import free_port


class Address(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Peer:
    """An address with no test server behind it (a closed port, a name that never
    resolves), for :func:`backend_for`."""

    host: str
    port: int


BACKEND = "django_sockmail.backend.EmailBackend"
MAILER_ALIAS = "test-server"  # the MAILERS entry backend_for() makes on Django 6.1


def uses_mailers() -> bool:
    """Whether the settings configure mail with MAILERS: on Django 6.1, unless a test
    takes it away to run on the deprecated EMAIL_* settings (``email_settings``), where
    the EMAIL_* settings and get_connection(backend) are refused while it is defined."""
    return django.VERSION >= (6, 1) and hasattr(settings, "MAILERS")


def backend_for(server: Address, **options: Any) -> EmailBackend:
    """Our backend pointed at a test server, as its Django makes it for a project: with
    MAILERS (Django 6.1) from an entry whose OPTIONS are ``options`` (``mailers[alias]``);
    else by ``get_connection(backend, **options)``, the EMAIL_* settings filling in."""
    options = {"host": server.host, "port": server.port, **options}
    options.setdefault("timeout", 5)  # a server that never answers fails the test, not hangs it
    if uses_mailers():
        from django.core.mail import mailers  # type: ignore[attr-defined,unused-ignore]

        entry = {"BACKEND": BACKEND, "OPTIONS": options}
        with override_settings(MAILERS={MAILER_ALIAS: entry}):
            backend = mailers[MAILER_ALIAS]
    else:
        backend = get_connection(BACKEND, **options)
    assert isinstance(backend, EmailBackend)
    return backend


def mail_to(server: Address, **options: Any) -> override_settings:
    """Settings under which Django's default mailer is our backend pointed at
    ``server``, with ``options``: with MAILERS (Django 6.1) its "default" entry; else
    EMAIL_BACKEND and the EMAIL_* settings that give those options."""
    options = {"host": server.host, "port": server.port, **options}
    options.setdefault("timeout", 5)
    if uses_mailers():
        return override_settings(MAILERS={"default": {"BACKEND": BACKEND, "OPTIONS": options}})
    email = {MAIL_OPTIONS[name].setting: value for name, value in options.items()}
    return override_settings(EMAIL_BACKEND=BACKEND, **email)


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
    ehlo_names: list[str] = field(default_factory=list)
    data_reply: str = "250 2.0.0 Ok: queued as Q{n}"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:  # fmt: skip
        self.ehlo_names.append(hostname)
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
    # handled=False: aiosmtpd then answers a refusal itself (535) instead of staying silent.
    return AuthResult(success=ok, handled=False)


class SMTPServer:
    """aiosmtpd on 127.0.0.1 and a free port, in its own thread."""

    def __init__(self, host: str = "127.0.0.1", **kwargs: Any) -> None:
        self.handler = RecordingHandler()
        self.host = host
        self.port = free_port()
        kwargs.setdefault("enable_SMTPUTF8", True)
        self.controller = Controller(self.handler, hostname=self.host, port=self.port, **kwargs)

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

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes, as after a BDAT command."""
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_side=True)

    def take_message(self, verdict: bytes = b"250 ok\r\n") -> bytes:
        """Accept one plain MAIL, RCPT, DATA transaction; answer its end with ``verdict``."""
        self.expect(b"MAIL", b"250 ok\r\n")
        self.expect(b"RCPT", b"250 ok\r\n")
        self.expect(b"DATA", b"354 go\r\n")
        data = self.read_data()
        self.send(verdict)
        return data

    def expect(self, prefix: bytes, reply: bytes) -> bytes:
        line = self.readline()
        assert line.upper().startswith(prefix.upper()), (line, prefix)
        self.send(reply)
        return line


Script = Callable[[Conversation], None]
MakeServer = Callable[..., "SMTPServer"]  # the make_smtpd fixture
Scripted = Callable[[Script], "ScriptedServer"]  # the scripted fixture


def server_context(cert: Any) -> ssl.SSLContext:
    """A server-side TLS context presenting ``cert`` (a trustme.LeafCert)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


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


# Helpers for the TLS, AUTH and error tests (tests/test_tls.py, test_auth.py, test_errors.py)


def note_mail_from(server: SMTPServer) -> list[str]:
    """Make a running aiosmtpd ``server`` note the address of every MAIL FROM it gets
    from now on, accepted or not, so a test can show that no transaction was started."""
    seen: list[str] = []

    async def handle_MAIL(smtp: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:  # fmt: skip
        seen.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    # aiosmtpd collects the handle_* hooks of its handler for each new connection.
    setattr(server.handler, "handle_MAIL", handle_MAIL)  # noqa: B010
    return seen


def note_peer_certificates(server: SMTPServer) -> list[dict[str, Any]]:
    """Make a running aiosmtpd ``server`` note the client certificate (``getpeercert()``)
    of every STARTTLS handshake from now on (an empty dict when none was presented)."""
    seen: list[dict[str, Any]] = []

    def handle_STARTTLS(smtp: Any, session: Any, envelope: Any) -> bool:
        seen.append(dict(session.ssl.get("peercert") or {}))
        return True

    setattr(server.handler, "handle_STARTTLS", handle_STARTTLS)  # noqa: B010
    return seen


class Action:
    """Something a :class:`Responder` does instead of replying."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


DROP = Action("drop")  # close the connection without a reply
STALL = Action("stall")  # say nothing until the client gives up and closes

Answer = bytes | Action

DEFAULT_REPLIES: dict[str, bytes] = {
    "GREETING": b"220 scripted.test ESMTP\r\n",
    "EHLO": b"250-scripted.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
    "HELO": b"250 scripted.test\r\n",
    "STARTTLS": b"220 2.0.0 Ready to start TLS\r\n",
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "END": b"250 2.0.0 Ok: queued as SCRIPTED1\r\n",  # the reply to the end of the data
    "RSET": b"250 2.0.0 Ok\r\n",
    "NOOP": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}
UNKNOWN_COMMAND = b"502 5.5.2 Command not recognized\r\n"


@dataclass
class Responder:
    """A script for :class:`ScriptedServer`: a permissive SMTP server that answers each
    command by its verb from ``replies`` (or :data:`DEFAULT_REPLIES`).

    A list answers the verb's first use with its first item, and so on; its last item
    repeats. ``"GREETING"`` is the first reply and ``"END"`` the reply to the end of the
    data (and to each ``BDAT``, whose chunk is read as a whole message). Any ``421``
    reply closes the connection after it is sent; a ``220`` reply to
    STARTTLS starts TLS with ``tls_context``. Because everything else is accepted, a
    client that goes on when it should stop is seen doing so in ``ScriptedServer.lines``.
    """

    replies: dict[str, Answer | list[Answer]] = field(default_factory=dict)
    tls_context: ssl.SSLContext | None = None
    messages: list[bytes] = field(default_factory=list)  # the content of each message
    finished: threading.Event = field(default_factory=threading.Event)
    _uses: dict[str, int] = field(default_factory=dict)

    def answer(self, key: str) -> Answer:
        configured = self.replies.get(key, DEFAULT_REPLIES.get(key, UNKNOWN_COMMAND))
        if not isinstance(configured, list):
            return configured
        uses = self._uses.get(key, 0)
        self._uses[key] = uses + 1
        return configured[min(uses, len(configured) - 1)]

    def wait(self, timeout: float = 5.0) -> None:
        """Wait until a conversation is over, so it has read all the client sent."""
        assert self.finished.wait(timeout), "the scripted conversation did not end"

    def __call__(self, conversation: Conversation) -> None:
        try:
            self._converse(conversation)
        finally:
            self.finished.set()

    def _converse(self, conversation: Conversation) -> None:
        if self._reply(conversation, "GREETING") is None:
            return
        while True:
            line = conversation.readline()
            verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
            known = verb in self.replies or verb in DEFAULT_REPLIES
            key = verb if known and verb not in ("GREETING", "END") else "?"
            if verb == "BDAT":  # RFC 3030: the chunk follows the command line
                self.messages.append(conversation.read_exact(int(line.split()[1])))
                key = "END"
            sent = self._reply(conversation, key)
            if sent is None or verb == "QUIT":
                return
            if verb == "STARTTLS" and sent.startswith(b"220"):
                assert self.tls_context is not None, "STARTTLS accepted without tls_context"
                conversation.start_tls(self.tls_context)
            if verb == "DATA" and sent.startswith(b"354"):
                self.messages.append(conversation.read_data())
                if self._reply(conversation, "END") is None:
                    return

    def _reply(self, conversation: Conversation, key: str) -> bytes | None:
        """Answer; None when the conversation is over."""
        answer = self.answer(key)
        if answer is DROP:
            return None
        if answer is STALL:
            while conversation.sock.recv(65536):
                pass
            return None
        assert isinstance(answer, bytes)
        conversation.send(answer)
        return None if answer.startswith(b"421") else answer


def replying_authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                           auth_data: Any) -> AuthResult:  # fmt: skip
    """Like :func:`authenticator`, but a refusal is answered: ``AuthResult`` defaults to
    ``handled=True``, which makes aiosmtpd send no reply at all to wrong credentials."""
    result = authenticator(server, session, envelope, mechanism, auth_data)
    return AuthResult(success=result.success, handled=False)
