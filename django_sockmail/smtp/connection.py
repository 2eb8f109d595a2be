"""One connection's wire: the socket, the bytes waiting to go out, the replies come in,
and how long each wait may take. :meth:`.client.SMTPClient.open` makes a
:class:`Connection` and ``close()`` drops it, so nothing of one connection survives
into the next by accident: not a parse error, an unread reply, unsent bytes, the
capabilities, nor a deadline (RFC 3207 §4.2 asks the same of a session after STARTTLS).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from .errors import (
    SMTPConnectError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .events import SessionListener, TLSInfo
from .protocol import Capabilities, Command
from .replies import ReplyParser
from .reply import Reply

_AddrInfo = tuple[Any, Any, int, str, Any]  # what socket.getaddrinfo() gives

RECV_SIZE = 65536
SEND_SIZE = 262144  # at most this much per send(): the rest waits while replies are read


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:25``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """The state of one connection, and the moving of bytes both ways on it."""

    def __init__(self, listener: SessionListener, deadline: float | None) -> None:
        self.listener = listener
        self.deadline = deadline  # seconds a call may take in all (Timeouts.deadline)
        self.sock: socket.socket | None = None
        self.capabilities = Capabilities()
        self.parser = ReplyParser()
        self.replies: deque[Reply] = deque()  # read, not yet taken
        self.outgoing = bytearray()  # written to the socket as it takes it
        self.sent = 0  # bytes written on the connection
        self._retry_size = 0  # a TLS write that could not finish, to repeat
        # RSET before the next transaction: the last one may have been left open on the
        # server (a session broken off mid-transaction).
        self.reset_needed = False
        self.step = "connect"  # what the next wait is for, named in a timeout error
        self.step_timeout: float | None = None
        self._step_expires: float | None = None  # when the wait for this step ends
        self.expires: float | None = None  # the deadline of the call under way

    # Time

    def start_deadline(self, expires: float | None = None) -> None:
        """The call under way ends at ``expires`` (a :func:`time.monotonic` time), or
        ``deadline`` seconds from now."""
        if expires is None and self.deadline is not None:
            expires = time.monotonic() + self.deadline
        self.expires = expires

    def expect(self, step: str, timeout: float | None) -> None:
        """Name what the waits from now on are for, and how long they may take in all:
        a reply trickled a byte at a time (a tarpit) is cut at the step's limit."""
        self.step, self.step_timeout = step, timeout
        self._restart_step_timer()

    def _restart_step_timer(self) -> None:
        timeout = self.step_timeout
        self._step_expires = None if timeout is None else time.monotonic() + timeout

    def wait_time(self) -> tuple[float | None, str]:
        """How long the next wait may take, and what a timeout then would say."""
        now = time.monotonic()
        timeout, doing = None, f"waiting for {self.step}"
        if self._step_expires is not None:
            timeout = self._step_expires - now
            doing = f"after {self.step_timeout:g} s {doing}"
            if timeout <= 0:
                raise SMTPTimeoutError(f"Timed out {doing}")
        if self.expires is not None:
            left = self.expires - now
            if timeout is None or left < timeout:
                timeout = left
                doing = f"waiting for {self.step} (the deadline of {self.deadline:g} s)"
                if left <= 0:
                    raise SMTPTimeoutError(f"Timed out {doing}")
        return timeout, doing

    # Connecting

    def connect(self, host: str, port: int) -> None:
        """A TCP connection to the first address of ``host`` that answers, within the
        connect step's limit, name resolution included."""
        try:
            sock = self._open_socket(host, port)
        except TimeoutError as exc:
            what = "resolving" if isinstance(exc, _ResolverTimeout) else "connecting to"
            limit = self.step_timeout or self.deadline
            after = f" after {limit:g} s" if limit is not None else ""
            raise SMTPTimeoutError(f"Timed out{after} {what} {host_port(host, port)}") from exc
        except OSError as exc:
            raise SMTPConnectError.without_reply(
                f"Could not connect to {host_port(host, port)}: {exc}"
            ) from exc
        sock.setblocking(False)  # every read and write goes through pump()
        # We group commands into writes ourselves; Nagle's algorithm would only hold
        # back the second of two writes until the first is acknowledged.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.listener.on_connected(
            _format_address(sock.getpeername()), _format_address(sock.getsockname())
        )

    def _open_socket(self, host: str, port: int) -> socket.socket:
        addresses = _resolve(host, port, self.wait_time()[0])
        error: OSError = OSError(f"{host} has no address")
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.wait_time()[0])
                sock.connect(address)
            except OSError as exc:  # TimeoutError too: the next address gets what is left
                sock.close()
                error = exc
                continue
            return sock
        raise error

    def start_tls(self, context: ssl.SSLContext, host: str, port: int) -> None:
        """The TLS handshake, within the step's time; then a parser for what comes
        over TLS."""
        assert self.sock is not None
        if self.parser.in_reply or self.replies or self.parser.error is not None:
            # STARTTLS response injection: whatever came with the 220 was sent before
            # TLS and must never be read as if it had come over TLS.
            raise SMTPProtocolError("The server sent data after its 220 reply to STARTTLS")
        self.sock.settimeout(self.wait_time()[0])  # the handshake blocks
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        except TimeoutError as exc:
            raise SMTPTimeoutError("Timed out during the TLS handshake") from exc
        except ssl.SSLError as exc:
            raise SMTPTLSError(f"TLS with {host_port(host, port)} failed: {exc}") from exc
        except OSError as exc:
            raise SMTPServerDisconnected(
                f"Connection lost during the TLS handshake: {exc}"
            ) from exc
        self.sock.setblocking(False)
        self.parser = ReplyParser()
        assert isinstance(self.sock, ssl.SSLSocket)
        self.listener.on_tls(tls_info(self.sock))

    @property
    def is_encrypted(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # Commands out, replies in

    def queue(self, commands: list[Command]) -> None:
        """Queue ``commands`` to be written, telling the listener."""
        for cmd in commands:
            if cmd.display:  # BDAT has both a command line and content
                self.listener.on_command(cmd.display)
            if cmd.is_content:
                self.listener.on_content(cmd.content)
            self.outgoing += cmd.wire

    def flush(self) -> None:
        """Write everything queued (reading replies meanwhile)."""
        while self.outgoing:
            self.pump()

    def send_ready(self) -> None:
        """Write what the socket takes now, without waiting."""
        if self.outgoing and self.sock is not None:
            self._send_some(self.sock)

    def read_reply(self) -> Reply:
        """The next reply (writing what is queued meanwhile)."""
        while not self.replies:
            self.parser.check()  # what came after the last good reply was not SMTP
            self.pump()
        return self.replies.popleft()

    def pump(self) -> None:
        """Move bytes both ways once: send what is queued, take in what has come.

        Writing and reading together means a server that stops reading until its
        replies are read can never block us, nor we it (RFC 2920 §3.1 deadlock).
        """
        sock = self.sock
        if sock is None:
            raise SMTPServerDisconnected("Not connected")
        if self.outgoing and self._send_some(sock):
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            self.receive()  # decrypted bytes wait inside the TLS layer
            return
        timeout, doing = self.wait_time()
        readable, writable = _wait(sock, bool(self.outgoing), timeout)
        if not (readable or writable):
            if self.outgoing:
                doing = doing.replace(f"waiting for {self.step}", "sending to the server")
            raise SMTPTimeoutError(f"Timed out {doing}")
        if readable:
            self.receive()

    def _send_some(self, sock: socket.socket) -> bool:
        # A TLS write that could not finish must be repeated with the same bytes.
        size = self._retry_size or min(len(self.outgoing), SEND_SIZE)
        try:
            sent = sock.send(self.outgoing[:size])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._retry_size = size if isinstance(sock, ssl.SSLSocket) else 0
            return False
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while sending: {exc}") from exc
        self._retry_size = 0
        del self.outgoing[:sent]
        self.sent += sent
        if sent:
            # The server is taking what we write: a long message over a slow link may
            # take longer than one step's limit, as long as it keeps moving.
            self._restart_step_timer()
        return sent > 0

    def receive(self) -> None:
        """Read what has come, parse it into replies, tell the listener of each."""
        assert self.sock is not None
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while reading: {exc}") from exc
        if not data:
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        for reply in self.parser.feed(data):
            self.listener.on_reply(reply)
            self.replies.append(reply)

    def has_unread(self) -> bool:
        """The server has sent something not read yet (judged without waiting)."""
        sock = self.sock
        if sock is None:
            return False
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        return bool(pending) or _wait(sock, False, 0)[0]

    # Replies to no command

    def check_in_step(self) -> None:
        """Before a command whose reply would be the next: anything the server said
        that answers no command means we are out of step, and each reply from now on
        would be taken for the wrong command."""
        self.parser.check()
        if self.replies or self.parser.in_reply:
            raise SMTPOutOfStepError("The server sent a reply to no command")

    def check_nothing_more(self) -> None:
        """Every command written has its reply. Anything more the server has already
        sent answers no command: the replies read may each have been another's.
        (One that is still on its way cannot be told; see the README.)"""
        if not self.replies and self.has_unread():
            try:
                self.receive()
            except SMTPServerDisconnected:
                return  # closed after its last reply: that reply stands
            except SMTPProtocolError:
                return  # not a reply, so no shift: raised when a reply is next wanted
        extra = list(self.replies)
        if [r.code for r in extra] == [421] and not self.parser.in_reply:
            return  # the server closing (RFC 5321 §3.8): left for is_alive() to read
        if extra or self.parser.in_reply:
            said = f": {extra[0]}" if extra else ""
            raise SMTPOutOfStepError(f"The server sent a reply to no command{said}")


def _wait(sock: socket.socket, want_write: bool, timeout: float | None) -> tuple[bool, bool]:
    """Wait until ``sock`` can be read (or written, when wanted): (readable, writable),
    both False when ``timeout`` passed first."""
    if not hasattr(select, "poll"):  # Windows
        r, w, _ = select.select([sock], [sock] if want_write else [], [], timeout)
        return bool(r), bool(w)
    poller = select.poll()  # unlike select(), not limited to descriptors below 1024
    poller.register(sock, select.POLLIN | (select.POLLOUT if want_write else 0))
    events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
    flags = events[0][1] if events else 0
    # An error or hang-up shows up as a failed or empty recv().
    readable = bool(flags & (select.POLLIN | select.POLLERR | select.POLLHUP))
    return readable, bool(flags & select.POLLOUT)


class _ResolverTimeout(TimeoutError):
    pass


def _resolve(host: str, port: int, timeout: float | None) -> list[_AddrInfo]:
    """``getaddrinfo()`` within ``timeout``. It takes no timeout of its own and cannot
    be interrupted: a hung resolver would hold the caller for as long as the system's
    resolver retries. So it asks in a thread and stops waiting at the limit (the
    thread ends when the resolver answers)."""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    else:  # an address literal: no resolver involved
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answer: list[list[_AddrInfo] | BaseException] = []
    done = threading.Event()

    def ask() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=ask, name=f"sockmail resolve {host}", daemon=True).start()
    if not done.wait(timeout):
        raise _ResolverTimeout(f"Timed out resolving {host}")
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return host_port(str(address[0]), address[1])
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
