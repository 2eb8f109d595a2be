"""The socket driver: connects, sets up TLS, and runs the exchanges of
:mod:`.protocol` over the wire, telling a listener everything that is said."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import socket
import ssl
from collections import deque
from typing import Literal, TypeVar

from . import protocol
from .data import normalize_line_endings
from .envelope import Envelope
from .errors import (
    SMTPCommandError,
    SMTPConnectError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .events import NullListener, SessionListener, TLSInfo
from .replies import Reply, ReplyParser
from .results import UNKNOWN, MessageOutcome

T = TypeVar("T")
# "opportunistic": STARTTLS when the server offers it, else carry on in cleartext.
# Only ever on request; "starttls" never falls back.
Security = Literal["none", "starttls", "ssl", "opportunistic"]
RECV_SIZE = 65536


@functools.cache
def _fqdn() -> str:
    # getfqdn() may wait on DNS; like Django's DNS_NAME, ask once per process.
    return socket.getfqdn()


def create_ssl_context(
    certfile: str | None = None,
    keyfile: str | None = None,
    cafile: str | None = None,
    *,
    verify: bool = True,
) -> ssl.SSLContext:
    """A verifying client context, at least TLS 1.2, with an optional client
    certificate. It trusts the system store (so SSL_CERT_FILE/SSL_CERT_DIR apply),
    or only ``cafile`` when one is given. ``verify=False`` checks nothing at all."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile)
        except OSError as exc:  # missing, unreadable or not a certificate and key
            message = f"Could not load the client certificate {certfile!r}: {exc}"
            raise SMTPTLSError(message) from exc
    return context


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _name(parts: object) -> str:
    # getpeercert() gives ((("commonName", "x"),), ...): flatten it to "commonName=x, ..."
    if not isinstance(parts, tuple):
        return ""
    return ", ".join(f"{k}={v}" for rdn in parts for (k, v) in rdn)


def tls_info(sock: ssl.SSLSocket) -> TLSInfo:
    cert = sock.getpeercert() or {}
    der = sock.getpeercert(binary_form=True)
    cipher = sock.cipher()
    return TLSInfo(
        version=sock.version() or "",
        cipher=cipher[0] if cipher else "",
        peer_subject=_name(cert.get("subject")),
        peer_issuer=_name(cert.get("issuer")),
        peer_not_before=str(cert.get("notBefore", "")),
        peer_not_after=str(cert.get("notAfter", "")),
        peer_fingerprint_sha256=hashlib.sha256(der).hexdigest() if der else "",
    )


class SMTPClient:
    """One SMTP session: ``open()``, any number of ``send()``, then ``quit()``.

    Every failure of the session closes the socket, is reported to the listener, and
    raises a subclass of :class:`smtplib.SMTPException`. A message refused locally
    (too large, needs SMTPUTF8) raises too, but leaves the session open.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "none",
        timeout: float | None = None,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        username: str = "",
        password: str = "",
        oauth2_token: str = "",
        auth_mechanism: str = "",
        allow_cleartext_auth: bool = False,
        pipelining: bool = True,
        chunking: bool = True,
        listener: SessionListener | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self.username = username
        self._credentials = protocol.Credentials(
            username, password, oauth2_token, mechanism=auth_mechanism
        )
        self.allow_cleartext_auth = allow_cleartext_auth
        self.pipelining = pipelining  # used when the server offers PIPELINING
        self.chunking = chunking  # likewise CHUNKING: BDAT instead of DATA
        self.listener: SessionListener = listener or NullListener()
        self.capabilities = protocol.Capabilities()
        # RSET before a transaction that follows a completed one, for a clean slate; a
        # refused transaction already ended with RSET.
        self._reset_needed = False
        self._content_written = False  # the last group written held message content
        self._sock: socket.socket | None = None
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()

    def __repr__(self) -> str:
        return f"<SMTPClient {self.host}:{self.port} security={self.security}>"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    # Session steps

    def open(self) -> None:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as configured."""
        try:
            self._connect()
            greeting = self._read_reply()
            if greeting.code != 220:
                raise SMTPConnectError(greeting)
            name = self.local_hostname or self._default_local_hostname()
            self.capabilities = self._run(protocol.hello(name))
            if self.security == "starttls" or (
                self.security == "opportunistic" and self.capabilities.has("STARTTLS")
            ):
                # With "starttls" a missing STARTTLS or a refusal raises here, before
                # any AUTH or MAIL: never a silent cleartext session.
                try:
                    self._run(protocol.starttls(self.capabilities))
                except SMTPCommandError:
                    if self.security != "opportunistic":
                        raise
                else:
                    self._start_tls()
                    # RFC 3207 §4.2: forget everything learnt before TLS and ask again.
                    self.capabilities = self._run(protocol.hello(name))
            if self.username:
                self._check_auth_is_safe()
                self._run(protocol.authenticate(self.capabilities, self._credentials))
        except BaseException as exc:
            self._fail(exc)
            raise

    def send(self, envelope: Envelope, content: bytes) -> MessageOutcome:
        """One mail transaction. Refusals come back in the outcome; a failure of the
        session itself (disconnect, timeout, garbage) raises, with the outcome so far
        attached to the error as ``error.outcome``."""
        content = normalize_line_endings(content)
        outcome = protocol.new_outcome(envelope, content)
        try:
            protocol.check_message(self.capabilities, envelope, content)
        except SMTPError as exc:  # refused locally: nothing was offered to the server
            outcome.error = str(exc)
            exc.outcome = outcome
            raise
        exchange = protocol.transaction(
            self.capabilities,
            envelope,
            content,
            outcome,
            reset_first=self._reset_needed,
            pipelining=self.pipelining and self.capabilities.has("PIPELINING"),
            chunking=self.chunking and self.capabilities.has("CHUNKING"),
        )
        try:
            self._run(exchange)
        except BaseException as exc:
            outcome.settle()
            if self._content_written and outcome.final_reply is None:
                outcome.status = UNKNOWN  # the server may have queued it
            outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
            if isinstance(exc, SMTPError):
                exc.outcome = outcome
            self._fail(exc)
            raise
        self._reset_needed = outcome.final_reply is not None
        return outcome

    def quit(self) -> None:
        """Say QUIT and close. Never raises: the server may already be gone."""
        if self._sock is None:
            return
        try:
            self._run(protocol.quit())
        except SMTPProtocolError as exc:  # the server misbehaved: worth a record
            self.listener.on_error(exc)
        except Exception:  # gone already: the session is over either way
            pass
        self.close()

    def close(self) -> None:
        """Close the socket without a QUIT."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.close()
        self.listener.on_closed()

    # The wire

    def _connect(self) -> None:
        self.listener.on_connecting(self.host, self.port)
        try:
            sock = socket.create_connection((self.host, self.port), self.timeout)
        except TimeoutError as exc:
            raise SMTPTimeoutError(f"Timed out connecting to {self.host}:{self.port}") from exc
        except OSError as exc:
            raise SMTPConnectError.without_reply(
                f"Could not connect to {self.host}:{self.port}: {exc}"
            ) from exc
        self._sock = sock
        self.listener.on_connected(
            _format_address(sock.getpeername()), _format_address(sock.getsockname())
        )
        if self.security == "ssl":
            self._start_tls()

    def _start_tls(self) -> None:
        assert self._sock is not None
        if self._parser.in_reply or self._replies or self._parser.error is not None:
            # STARTTLS response injection: whatever came with the 220 was sent before
            # TLS and must never be read as if it had come over TLS.
            raise SMTPProtocolError("The server sent data after its 220 reply to STARTTLS")
        context = self.ssl_context or create_ssl_context()
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=self.host)
        except TimeoutError as exc:
            raise SMTPTimeoutError("Timed out during the TLS handshake") from exc
        except ssl.SSLError as exc:
            raise SMTPTLSError(f"TLS with {self.host}:{self.port} failed: {exc}") from exc
        except OSError as exc:
            raise SMTPServerDisconnected(
                f"Connection lost during the TLS handshake: {exc}"
            ) from exc
        self._parser = ReplyParser()
        assert isinstance(self._sock, ssl.SSLSocket)
        self.listener.on_tls(tls_info(self._sock))

    def _run(self, exchange: protocol.Exchange[T]) -> T:
        """Drive one exchange: send each group of commands, hand back their replies."""
        try:
            commands = next(exchange)
            while True:
                commands = exchange.send(self._exchange(commands))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _exchange(self, commands: list[protocol.Command]) -> list[Reply]:
        # Anything the server said that answers no command means we are out of step:
        # each reply from now on would be taken for the wrong command.
        self._parser.check()
        if self._replies or self._parser.in_reply:
            raise SMTPProtocolError("The server sent a reply to no command")
        self._content_written = False
        for cmd in commands:
            if cmd.display:  # BDAT has both a command line and content
                self.listener.on_command(cmd.display)
            if cmd.is_content:
                self.listener.on_content(cmd.content)
        self._write(b"".join(cmd.wire for cmd in commands))
        self._content_written = any(cmd.is_content for cmd in commands)
        replies = [self._read_reply() for _ in commands]
        for reply in replies:
            if reply.code == 421:
                # RFC 5321 §3.8: the server is shutting the session down.
                error = SMTPServerDisconnected(f"The server closed the session: {reply}")
                error.reply = reply
                raise error
        return replies

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            raise SMTPServerDisconnected("Not connected")
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise SMTPTimeoutError("Timed out sending to the server") from exc
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while sending: {exc}") from exc

    def _read_reply(self) -> Reply:
        while not self._replies:
            if self._sock is None:
                raise SMTPServerDisconnected("Not connected")
            try:
                data = self._sock.recv(RECV_SIZE)
            except TimeoutError as exc:
                raise SMTPTimeoutError("Timed out waiting for the server's reply") from exc
            except OSError as exc:
                raise SMTPServerDisconnected(f"Connection lost while reading: {exc}") from exc
            if not data:
                raise SMTPServerDisconnected("Connection unexpectedly closed")
            for reply in self._parser.feed(data):
                self.listener.on_reply(reply)
                self._replies.append(reply)
        return self._replies.popleft()

    @property
    def is_encrypted(self) -> bool:
        return isinstance(self._sock, ssl.SSLSocket)

    def _check_auth_is_safe(self) -> None:
        # Credentials in cleartext can be read by anyone on the path; on loopback
        # there is no path. Anything else needs TLS or the user's explicit consent.
        if self.is_encrypted or self.allow_cleartext_auth:
            return
        assert self._sock is not None
        if not is_loopback(self._sock.getpeername()[0]):
            raise SMTPNotSupportedError(
                f"Refusing to send credentials to {self.host} over an unencrypted "
                "connection: use EMAIL_USE_TLS or EMAIL_USE_SSL, or set "
                "SOCKMAIL['ALLOW_CLEARTEXT_AUTH'] = True"
            )

    def _default_local_hostname(self) -> str:
        # Like smtplib: the FQDN when it looks like one, else the address literal.
        fqdn = _fqdn()
        if "." in fqdn and fqdn.isascii():
            return fqdn
        assert self._sock is not None
        address = self._sock.getsockname()[0]
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"

    def _fail(self, error: BaseException) -> None:
        self.listener.on_error(error)
        self.close()
