"""The socket driver: connects, sets up TLS, and runs the exchanges of
:mod:`.protocol` over the wire, telling a listener everything that is said."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import math
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import protocol
from .envelope import Envelope
from .errors import (
    SMTPCommandError,
    SMTPConnectError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .events import NullListener, SessionListener, TLSInfo
from .pipeline import Pipeline, Step, Transaction, prepare
from .replies import Reply, ReplyParser
from .results import MessageOutcome

T = TypeVar("T")
_AddrInfo = tuple[Any, Any, int, str, Any]  # what socket.getaddrinfo() gives
# "opportunistic": STARTTLS when the server offers it, else carry on in cleartext.
# Only ever on request; "starttls" never falls back.
Security = Literal["none", "starttls", "ssl", "opportunistic"]


def default_port(security: Security) -> int:
    """The port a server with this security listens on: 465 for implicit TLS (RFC
    8314), 587 for submission with STARTTLS, else 25."""
    return {"ssl": 465, "starttls": 587}.get(security, 25)


RECV_SIZE = 65536
SEND_SIZE = 262144  # at most this much per send(): the rest waits while replies are read
# Transactions written ahead of their verdict. Enough to keep a long link busy; each is
# a message that a dropped connection could leave "unknown" (content sent, no verdict).
PIPELINE_WINDOW = 64
# Bytes queued ahead of the socket: a new transaction waits until the queue is below.
PIPELINE_QUEUE_BYTES = 1 << 20


@dataclass(frozen=True)
class Timeouts:
    """How long, in seconds, each step may take (None: as long as it takes).

    ``command`` bounds the wait for each reply to a command, ``data`` the writing of
    message content and the wait for the server's verdict on it (RFC 5321 §4.5.3.2
    gives servers longer there), ``deadline`` a whole :meth:`SMTPClient.open` or
    :meth:`SMTPClient.send_many` call, however many steps it takes.
    """

    connect: float | None = None  # the TCP connection (and the handshake of implicit TLS)
    greeting: float | None = None
    command: float | None = None
    data: float | None = None
    deadline: float | None = None

    @classmethod
    def every_step(cls, seconds: float | None) -> Timeouts:
        """The same limit for each step, as Django's ``EMAIL_TIMEOUT``; no deadline."""
        return cls(seconds, seconds, seconds, seconds)


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


# Servers, by (host, port), that have refused commands written behind the end of the
# data before its verdict (Haraka does, against SMTP smuggling): for the life of the
# process, they are not sent any, so the refusals do not repeat.
_REFUSE_BEHIND_DATA: set[tuple[str, int]] = set()


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


class _Source:
    """The caller's transactions, taken one at a time, one ahead when asked. An error
    raised by the caller's iterable is kept to be raised once the transactions in
    flight are finished."""

    def __init__(self, transactions: Iterable[Transaction]) -> None:
        self._iterator: Iterator[Transaction] | None = iter(transactions)
        self._next: Transaction | None = None  # taken ahead
        self._closed = False
        self.error: Exception | None = None

    def take(self) -> Transaction | None:
        if self._closed:
            return None  # one taken ahead, if any, stays unoffered
        self.prefetch()
        taken, self._next = self._next, None
        return taken

    def prefetch(self) -> None:
        if self._next is not None or self._iterator is None:
            return
        try:
            self._next = next(self._iterator, None)
        except Exception as exc:
            self.error = exc
        if self._next is None:
            self._iterator = None

    def close(self) -> None:
        """Take nothing more."""
        self._closed, self._iterator = True, None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def exhausted(self) -> bool:
        """Nothing more will be taken."""
        return self._closed or (self._iterator is None and self._next is None)

    def taken(self) -> list[Transaction]:
        """The transaction taken ahead and never offered, if any."""
        return [self._next] if self._next is not None else []

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _closing(reply: Reply) -> SMTPServerDisconnected:
    # RFC 5321 §3.8: a 421 reply means the server is shutting the session down.
    error = SMTPServerDisconnected(f"The server closed the session: {reply}")
    error.reply = reply
    return error


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:25``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        timeouts: Timeouts | None = None,
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
        self.timeouts = timeouts or Timeouts.every_step(timeout)
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
        self._sock: socket.socket | None = None
        self._new_connection_state()
        self._step = "connect"  # what the next wait is for, named in a timeout error
        self._step_timeout: float | None = None
        self._step_expires: float | None = None  # when the wait for this step ends
        self._expires: float | None = None  # the deadline of the call under way

    def _new_connection_state(self) -> None:
        """Start from nothing that belongs to a connection: a session opened again
        must not inherit the last one's parse error, unread replies, unsent bytes or
        capabilities (RFC 3207 §4.2 asks the same of a session after STARTTLS)."""
        self.capabilities = protocol.Capabilities()
        # RSET before the next transaction: the last one may have been left open on the
        # server (a broken-off pipeline; one at a time, a refusal ends with its own RSET).
        self._reset_needed = False
        self._content_written = False  # the last group written held message content
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self._outgoing = bytearray()  # written to the socket as it takes it
        self._sent = 0  # bytes written in the session
        self._retry_size = 0

    def __repr__(self) -> str:
        return f"<SMTPClient {host_port(self.host, self.port)} security={self.security}>"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def is_alive(self) -> bool:
        """Whether the session can still be used, judged without waiting: a server
        that closed an idle connection (with a 421, or without a word) has left its
        goodbye unread. Such a session is closed here, so it can be opened again."""
        sock = self._sock
        if sock is None:
            return False
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not pending and not _wait(sock, False, 0)[0] and not self._replies:
            return True
        try:
            self._receive(sock)
        except SMTPError:
            self.close()  # the end of the stream: closed while we were not looking
            return False
        if not self._replies:
            return True  # a TLS record that was not application data
        reply = self._replies.popleft()
        if reply.code == 421:
            self.close()
        else:  # a reply to nothing: out of step, unusable
            self._fail(SMTPOutOfStepError(f"The server sent a reply to no command: {reply}"))
        return False

    # Session steps

    def open(self, *, expires: float | None = None) -> None:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as configured.

        ``expires`` (a :func:`time.monotonic` time) is the deadline of a larger call
        this one is part of; without it the deadline of :class:`Timeouts` starts now."""
        self._start_deadline(expires)
        if self._sock is not None:
            self.close()
        self._new_connection_state()  # whatever the last session left ended with it
        try:
            self._connect()
            self._expect("the greeting", self.timeouts.greeting)
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

    def prepare(self, envelope: Envelope, content: bytes) -> Transaction:
        """A transaction for :meth:`send_many`. A message the server has said it cannot
        take (too large, needs SMTPUTF8) raises here, with ``error.outcome``; the
        session stays open."""
        return prepare(self.capabilities, envelope, content)

    def send(self, envelope: Envelope, content: bytes) -> MessageOutcome:
        """One mail transaction. Refusals come back in the outcome; a failure of the
        session itself (disconnect, timeout, garbage) raises, with the outcome so far
        attached to the error as ``error.outcome``."""
        transaction = self.prepare(envelope, content)
        for _ in self.send_many([transaction]):
            pass
        return transaction.outcome

    def send_many(
        self,
        transactions: Iterable[Transaction],
        *,
        stop: Callable[[], bool] | None = None,
        quit_after: bool = False,
        expires: float | None = None,
    ) -> Iterator[Transaction]:
        """Send each transaction, taken from ``transactions`` only when it can be
        written (or one ahead), and yield it once the server has given its verdict, in
        order. Once ``stop()`` is true no further transaction is offered (one taken
        ahead stays unoffered: ``transaction.offered`` is False).

        With ``quit_after`` the session ends with the batch: pipelined, QUIT goes out
        behind the last transaction (RFC 2920 lets it end a group), which saves the
        round trip of a QUIT of its own, and the connection is closed once it is
        answered. Whatever becomes of the QUIT itself, like :meth:`quit`, raises nothing.

        When the server offers PIPELINING, transactions overlap: the next one is
        written behind the content of the one before (and, with CHUNKING, without
        waiting at all, up to :data:`PIPELINE_WINDOW` ahead). If the session fails, every
        transaction taken and not yet yielded is settled (sent content without a
        verdict is UNKNOWN) and the error is raised with the oldest one's outcome as
        ``error.outcome``.
        """
        self._start_deadline(expires)
        chunking = self.chunking and self.capabilities.has("CHUNKING")
        if not (self.pipelining and self.capabilities.has("PIPELINING")):
            for transaction in transactions:
                if stop is not None and stop():
                    return
                self._send_one(transaction, chunking)
                yield transaction
            return
        pipeline = Pipeline(
            self.capabilities,
            chunking=chunking,
            reset_first=self._reset_needed,
            behind_data=(self.host, self.port) not in _REFUSE_BEHIND_DATA,
        )
        source = _Source(transactions)
        start = self._sent
        finished: list[Transaction] = []
        try:
            self._check_in_step()
            while True:
                # A refusal is reported before anything more is offered, so that the
                # caller can stop; otherwise the verdicts wait until the next
                # transaction is on its way, as the round trip is what costs.
                if any(not t.outcome.taken for t in finished):
                    yield from self._report(finished)
                if stop is not None and stop():
                    source.close()
                self._offer(pipeline, source)
                if (
                    quit_after
                    and source.exhausted
                    and pipeline.can_offer
                    and not pipeline.refused_behind_data
                ):
                    quit_after = False
                    self._queue(pipeline.offer_quit())
                self._send_ready()
                yield from self._report(finished)
                if not pipeline.awaiting:
                    break
                source.prefetch()  # e.g. render the next message while the server works
                self._receive_replies(pipeline, finished)
                if pipeline.quit_refused:  # behind the data: again after the verdict
                    quit_after, pipeline.quit_refused = True, False
            self._flush()
            self._reset_needed = pipeline.reset_needed
            if pipeline.quit_answered:
                self.close()
            source.check()
        except BaseException as exc:
            if exc is source.error:
                raise
            # A 421 raised here answered a transaction (one answering QUIT raises
            # nothing): the batch failed. Anything else with only the QUIT left is the
            # QUIT's own trouble: every transaction has its verdict.
            closing = isinstance(exc, SMTPServerDisconnected) and exc.reply is not None
            out_of_step = isinstance(exc, SMTPOutOfStepError)
            # (A QUIT answered by another command's reply is no trouble of its own.)
            quit_trouble = not (closing or out_of_step)
            if pipeline.only_quit_left and isinstance(exc, Exception) and quit_trouble:
                pipeline.abort(self._sent - start, server_closed=False)
                finished.extend(pipeline.take_confirmed())
                self._end_unanswered_quit(exc)
                yield from self._report(finished)
                source.check()
                return
            unsettled = pipeline.abort(
                self._sent - start, server_closed=closing, out_of_step=out_of_step
            )
            finished.extend(pipeline.take_confirmed())
            self._reset_needed = True
            for transaction in [*unsettled, *source.taken()]:
                outcome = transaction.outcome
                outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
            if isinstance(exc, SMTPError) and unsettled:
                exc.outcome = unsettled[0].outcome
            if isinstance(exc, GeneratorExit):  # dropped by the caller: out of step now
                if unsettled:
                    self.close()
                raise
            self._fail(exc)
            # Those that got their verdict before the failure are reported as such.
            yield from self._report(finished)
            raise
        finally:
            if not pipeline.behind_data:  # learnt, or known: see _REFUSE_BEHIND_DATA
                _REFUSE_BEHIND_DATA.add((self.host, self.port))

    def _offer(self, pipeline: Pipeline, source: _Source) -> None:
        """Offer what may be written now: first what the server refused for coming
        behind the end of the data, then what the caller gives."""
        while pipeline.can_offer and self._has_room(pipeline):
            if pipeline.refused_behind_data:
                if source.closed:  # the caller stopped: they stay unoffered
                    pipeline.refused_behind_data.clear()
                    return
                offered: Transaction | None = pipeline.refused_behind_data.pop(0)
            else:
                offered = source.take()
            if offered is None:
                return
            self._queue(pipeline.offer(offered))

    def _report(self, finished: list[Transaction]) -> Iterator[Transaction]:
        """Yield the transactions in ``finished``, taking each out as it goes."""
        while finished:
            transaction = finished.pop(0)
            self._reset_needed = True  # until the pipeline says otherwise at its end
            yield transaction

    def _receive_replies(self, pipeline: Pipeline, finished: list[Transaction]) -> None:
        """Wait for a reply, then take every reply that has come: what they call for
        (content after a 354) is queued, and the transactions whose verdicts are
        known to be their own go into ``finished`` (there as soon as known, whatever
        happens next)."""
        step = pipeline.next_step
        if step is Step.END or step is Step.EMPTY_END:
            self._expect("the reply to the message content", self.timeouts.data)
        else:
            self._expect(f"the reply to {step.value}", self.timeouts.command)
        reply = self._read_reply()
        while True:
            commands, _ = pipeline.receive(reply)
            finished.extend(pipeline.take_confirmed())
            if reply.code == 421 and reply is not pipeline.quit_reply:
                raise _closing(reply)
            self._queue(commands)
            if not self._replies:
                break
            reply = self._replies.popleft()
        if not pipeline.awaiting and not pipeline.quit_answered:
            self._check_nothing_more()
            pipeline.end_of_window()
            finished.extend(pipeline.take_confirmed())

    def _check_nothing_more(self) -> None:
        """Every command written has its reply. Anything more the server has already
        sent answers no command: the replies read may each have been another's.
        (One that is still on its way cannot be told; see the README.)"""
        sock = self._sock
        if sock is None:
            return
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not self._replies and (pending or _wait(sock, False, 0)[0]):
            try:
                self._receive(sock)
            except SMTPServerDisconnected:
                return  # closed after its last reply: that reply stands
            except SMTPProtocolError:
                return  # not a reply, so no shift: raised when a reply is next wanted
        extra = list(self._replies)
        if [r.code for r in extra] == [421] and not self._parser.in_reply:
            return  # the server closing (RFC 5321 §3.8): left for is_alive() to read
        if extra or self._parser.in_reply:
            said = f": {extra[0]}" if extra else ""
            raise SMTPOutOfStepError(f"The server sent a reply to no command{said}")

    def _send_ready(self) -> None:
        """Write what the socket takes now, without waiting."""
        if self._outgoing and self._sock is not None:
            self._send_some(self._sock)

    def _has_room(self, pipeline: Pipeline) -> bool:
        return (
            len(pipeline.in_flight) < PIPELINE_WINDOW and len(self._outgoing) < PIPELINE_QUEUE_BYTES
        )

    def _send_one(self, transaction: Transaction, chunking: bool) -> None:
        # Without PIPELINING: one command, one reply, one transaction at a time.
        outcome = transaction.outcome
        transaction.offered = True
        exchange = protocol.transaction(
            self.capabilities,
            transaction.envelope,
            transaction.content,
            outcome,
            reset_first=self._reset_needed,
            chunking=chunking,
        )
        transaction.content = b""  # the exchange holds it as long as it is needed
        try:
            self._run(exchange)
        except BaseException as exc:
            if isinstance(exc, SMTPOutOfStepError):
                outcome.settle_out_of_step(content_went_out=self._content_written)
            else:
                outcome.settle_unfinished(content_went_out=self._content_written)
            outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
            if isinstance(exc, SMTPError):
                exc.outcome = outcome
            self._fail(exc)
            raise
        self._reset_needed = False  # ended by its data, or by its own RSET

    def quit(self) -> None:
        """Say QUIT and close. Never raises: the server may already be gone."""
        if self._sock is None:
            return
        # QUIT has its own limit: the deadline of a call long over (a kept connection
        # left idle) must not cut the goodbye short.
        self._expires = None
        try:
            reply = self._run(protocol.quit())
            if reply.code != 221:  # a reply meant for a command before: they were shifted
                raise SMTPOutOfStepError(f"The server answered QUIT with {reply}: out of step")
        except Exception as exc:
            self._end_unanswered_quit(exc)
            return
        self.close()

    def _end_unanswered_quit(self, error: Exception) -> None:
        # A server that misbehaves is worth a record; one gone already is not: the
        # session is over either way.
        if isinstance(error, SMTPProtocolError):
            self.listener.on_error(error)
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
            self._expect("the connection", self.timeouts.connect)
            sock = self._open_socket()
        except TimeoutError as exc:
            what = "resolving" if isinstance(exc, _ResolverTimeout) else "connecting to"
            limit = self._step_timeout or self.timeouts.deadline
            raise SMTPTimeoutError(
                f"Timed out after {limit:g} s {what} {host_port(self.host, self.port)}"
                if limit is not None
                else f"Timed out {what} {host_port(self.host, self.port)}"
            ) from exc
        except OSError as exc:
            raise SMTPConnectError.without_reply(
                f"Could not connect to {host_port(self.host, self.port)}: {exc}"
            ) from exc
        sock.setblocking(False)  # every read and write goes through _pump()
        # We group commands into writes ourselves; Nagle's algorithm would only hold
        # back the second of two writes until the first is acknowledged.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.listener.on_connected(
            _format_address(sock.getpeername()), _format_address(sock.getsockname())
        )
        if self.security == "ssl":
            self._start_tls()

    def _open_socket(self) -> socket.socket:
        """A TCP connection to the first address of the host that answers, within the
        connect step's limit, name resolution included."""
        addresses = _resolve(self.host, self.port, self._wait_time()[0])
        error: OSError = OSError(f"{self.host} has no address")
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._wait_time()[0])
                sock.connect(address)
            except OSError as exc:  # TimeoutError too: the next address gets what is left
                sock.close()
                error = exc
                continue
            return sock
        raise error

    def _start_tls(self) -> None:
        assert self._sock is not None
        if self._parser.in_reply or self._replies or self._parser.error is not None:
            # STARTTLS response injection: whatever came with the 220 was sent before
            # TLS and must never be read as if it had come over TLS.
            raise SMTPProtocolError("The server sent data after its 220 reply to STARTTLS")
        context = self.ssl_context or create_ssl_context()
        # The handshake blocks, within the step's time (connect, or STARTTLS's command).
        self._sock.settimeout(self._wait_time()[0])
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=self.host)
        except TimeoutError as exc:
            raise SMTPTimeoutError("Timed out during the TLS handshake") from exc
        except ssl.SSLError as exc:
            raise SMTPTLSError(f"TLS with {host_port(self.host, self.port)} failed: {exc}") from exc
        except OSError as exc:
            raise SMTPServerDisconnected(
                f"Connection lost during the TLS handshake: {exc}"
            ) from exc
        self._sock.setblocking(False)
        self._parser = ReplyParser()
        assert isinstance(self._sock, ssl.SSLSocket)
        self.listener.on_tls(tls_info(self._sock))

    def _run(self, exchange: protocol.Exchange[T]) -> T:
        """Drive one exchange: send each group of commands, hand back their replies."""
        commands = next(exchange)
        while True:
            replies = self._exchange(commands)
            # A 421 (RFC 5321 §3.8: the server is shutting the session down) still
            # answers its command: the exchange notes it, then the session ends.
            closing = next((reply for reply in replies if reply.code == 421), None)
            try:
                commands = exchange.send(replies)
            except StopIteration as stop:
                if closing is not None:
                    raise _closing(closing) from None
                return stop.value  # type: ignore[no-any-return]
            if closing is not None:
                raise _closing(closing)

    def _exchange(self, commands: list[protocol.Command]) -> list[Reply]:
        self._content_written = False
        self._check_in_step()
        if any(cmd.is_content for cmd in commands):
            self._expect("the reply to the message content", self.timeouts.data)
        else:
            verb = commands[0].display.split(" ", 1)[0] or "a command"
            self._expect(f"the reply to {verb}", self.timeouts.command)
        self._queue(commands)
        self._flush()
        self._content_written = any(cmd.is_content for cmd in commands)
        replies = [self._read_reply() for _ in commands]
        if self._content_written:
            self._check_nothing_more()  # a verdict is believed only when nothing follows
        return replies

    def _check_in_step(self) -> None:
        # Anything the server said that answers no command means we are out of step:
        # each reply from now on would be taken for the wrong command.
        self._parser.check()
        if self._replies or self._parser.in_reply:
            raise SMTPOutOfStepError("The server sent a reply to no command")

    def _queue(self, commands: list[protocol.Command]) -> None:
        for cmd in commands:
            if cmd.display:  # BDAT has both a command line and content
                self.listener.on_command(cmd.display)
            if cmd.is_content:
                self.listener.on_content(cmd.content)
            self._outgoing += cmd.wire

    def _flush(self) -> None:
        """Write everything queued (reading replies meanwhile)."""
        while self._outgoing:
            self._pump()

    def _read_reply(self) -> Reply:
        """The next reply (writing what is queued meanwhile)."""
        while not self._replies:
            self._parser.check()  # what came after the last good reply was not SMTP
            self._pump()
        return self._replies.popleft()

    def _pump(self) -> None:
        """Move bytes both ways once: send what is queued, take in what has come.

        Writing and reading together means a server that stops reading until its
        replies are read can never block us, nor we it (RFC 2920 §3.1 deadlock).
        """
        sock = self._sock
        if sock is None:
            raise SMTPServerDisconnected("Not connected")
        if self._outgoing and self._send_some(sock):
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._receive(sock)  # decrypted bytes wait inside the TLS layer
            return
        timeout, doing = self._wait_time()
        readable, writable = _wait(sock, bool(self._outgoing), timeout)
        if not (readable or writable):
            if self._outgoing:
                doing = doing.replace(f"waiting for {self._step}", "sending to the server")
            raise SMTPTimeoutError(f"Timed out {doing}")
        if readable:
            self._receive(sock)

    def _expect(self, step: str, timeout: float | None) -> None:
        """Name what the waits from now on are for, and how long they may take in all:
        a reply trickled a byte at a time (a tarpit) is cut at the step's limit."""
        self._step, self._step_timeout = step, timeout
        self._restart_step_timer()

    def _restart_step_timer(self) -> None:
        timeout = self._step_timeout
        self._step_expires = None if timeout is None else time.monotonic() + timeout

    def _start_deadline(self, expires: float | None = None) -> None:
        if expires is not None:
            self._expires = expires
            return
        deadline = self.timeouts.deadline
        self._expires = None if deadline is None else time.monotonic() + deadline

    def _wait_time(self) -> tuple[float | None, str]:
        """How long the next wait may take, and what a timeout then would say."""
        now = time.monotonic()
        timeout, doing = None, f"waiting for {self._step}"
        if self._step_expires is not None:
            timeout = self._step_expires - now
            doing = f"after {self._step_timeout:g} s {doing}"
            if timeout <= 0:
                raise SMTPTimeoutError(f"Timed out {doing}")
        if self._expires is not None:
            left = self._expires - now
            if timeout is None or left < timeout:
                timeout = left
                doing = f"waiting for {self._step} (the deadline of {self.timeouts.deadline:g} s)"
                if left <= 0:
                    raise SMTPTimeoutError(f"Timed out {doing}")
        return timeout, doing

    def _send_some(self, sock: socket.socket) -> bool:
        # A TLS write that could not finish must be repeated with the same bytes.
        size = self._retry_size or min(len(self._outgoing), SEND_SIZE)
        try:
            sent = sock.send(self._outgoing[:size])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._retry_size = size if isinstance(sock, ssl.SSLSocket) else 0
            return False
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while sending: {exc}") from exc
        self._retry_size = 0
        del self._outgoing[:sent]
        self._sent += sent
        if sent:
            # The server is taking what we write: a long message over a slow link may
            # take longer than one step's limit, as long as it keeps moving.
            self._restart_step_timer()
        return sent > 0

    def _receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while reading: {exc}") from exc
        if not data:
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        for reply in self._parser.feed(data):
            self.listener.on_reply(reply)
            self._replies.append(reply)

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
