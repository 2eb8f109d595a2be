"""The socket driver: connects, sets up TLS, authenticates, and runs the exchanges of
:mod:`.protocol` and the mail transactions of :mod:`.transactions` over a
:class:`.connection.Connection`, telling a listener everything that is said."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from . import protocol
from .connection import Connection, host_port
from .envelope import Envelope
from .errors import (
    SMTPCommandError,
    SMTPConnectError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPTLSError,
)
from .events import NullListener, SessionListener
from .reply import Reply
from .results import MessageOutcome
from .transactions import Transaction, TransactionEngine, prepare

__all__ = ["SMTPClient", "Security", "Timeouts", "create_ssl_context", "default_port", "host_port"]

T = TypeVar("T")
# "opportunistic": STARTTLS when the server offers it, else carry on in cleartext.
# Only ever on request; "starttls" never falls back.
Security = Literal["none", "starttls", "ssl", "opportunistic"]


def default_port(security: Security) -> int:
    """The port a server with this security listens on: 465 for implicit TLS (RFC
    8314), 587 for submission with STARTTLS, else 25."""
    return {"ssl": 465, "starttls": 587}.get(security, 25)


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


# Servers, by (host, port), that have refused commands written behind the end of the
# data before its verdict (Haraka does, against SMTP smuggling): for the life of the
# process, they are not sent any, so the refusals do not repeat.
_REFUSE_BEHIND_DATA: set[tuple[str, int]] = set()


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

    def has_next(self) -> bool:
        """:meth:`take` will give a transaction."""
        if self._closed:
            return False
        self.prefetch()
        return self._next is not None

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


def _quit_may_follow(engine: TransactionEngine, source: _Source) -> bool:
    """Nothing more will be offered, and QUIT may be written now."""
    return source.exhausted and engine.can_offer and not engine.refused_behind_data


def _closing(reply: Reply) -> SMTPServerDisconnected:
    # RFC 5321 §3.8: a 421 reply means the server is shutting the session down.
    error = SMTPServerDisconnected(f"The server closed the session: {reply}")
    error.reply = reply
    return error


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
        self._conn: Connection | None = None  # made by open(), dropped by close()
        self._last_capabilities = protocol.Capabilities()

    def __repr__(self) -> str:
        return f"<SMTPClient {host_port(self.host, self.port)} security={self.security}>"

    @property
    def capabilities(self) -> protocol.Capabilities:
        """What the server offered in its EHLO reply; once closed, what the last
        session's server offered (for a report of what was learnt before a failure)."""
        conn = self._conn
        return conn.capabilities if conn is not None else self._last_capabilities

    @property
    def is_open(self) -> bool:
        return self._conn is not None and self._conn.sock is not None

    @property
    def is_encrypted(self) -> bool:
        return self._conn is not None and self._conn.is_encrypted

    def is_alive(self) -> bool:
        """Whether the session can still be used, judged without waiting: a server
        that closed an idle connection (with a 421, or without a word) has left its
        goodbye unread. Such a session is closed here, so it can be opened again."""
        conn = self._conn
        if conn is None or conn.sock is None:
            return False
        if not conn.replies and not conn.has_unread():
            return True
        try:
            conn.receive()
        except SMTPError:
            self.close()  # the end of the stream: closed while we were not looking
            return False
        if not conn.replies:
            return True  # a TLS record that was not application data
        reply = conn.replies.popleft()
        if reply.code == 421:
            self.close()
        else:  # a reply to nothing: out of step, unusable
            self._fail(SMTPOutOfStepError(f"The server sent a reply to no command: {reply}"))
        return False

    # Opening: connection, greeting, EHLO, STARTTLS, AUTH

    def open(self, *, expires: float | None = None) -> None:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as configured.

        ``expires`` (a :func:`time.monotonic` time) is the deadline of a larger call
        this one is part of; without it the deadline of :class:`Timeouts` starts now."""
        if self._conn is not None:
            self.close()
        # Whatever the last session left ended with it: a new connection starts empty.
        conn = self._conn = Connection(self.listener, self.timeouts.deadline)
        conn.start_deadline(expires)
        try:
            self.listener.on_connecting(self.host, self.port)
            conn.expect("the connection", self.timeouts.connect)
            conn.connect(self.host, self.port)
            if self.security == "ssl":
                self._start_tls(conn)
            conn.expect("the greeting", self.timeouts.greeting)
            greeting = conn.read_reply()
            if greeting.code != 220:
                raise SMTPConnectError(greeting)
            self._hello(conn)
            if self.username:
                self._check_auth_is_safe(conn)
                self._run(protocol.authenticate(conn.capabilities, self._credentials))
        except BaseException as exc:
            self._fail(exc)
            raise

    def _hello(self, conn: Connection) -> None:
        """EHLO, then STARTTLS as configured and EHLO again over TLS."""
        name = self.local_hostname or self._default_local_hostname(conn)
        conn.capabilities = self._run(protocol.hello(name))
        offered = conn.capabilities.has("STARTTLS")
        if not (self.security == "starttls" or (self.security == "opportunistic" and offered)):
            return
        # With "starttls" a missing STARTTLS or a refusal raises here, before any AUTH
        # or MAIL: never a silent cleartext session.
        try:
            self._run(protocol.starttls(conn.capabilities))
        except SMTPCommandError:
            if self.security != "opportunistic":
                raise
            return
        self._start_tls(conn)
        # RFC 3207 §4.2: forget everything learnt before TLS and ask again.
        conn.capabilities = self._run(protocol.hello(name))

    def _start_tls(self, conn: Connection) -> None:
        conn.start_tls(self.ssl_context or create_ssl_context(), self.host, self.port)

    def _check_auth_is_safe(self, conn: Connection) -> None:
        # Credentials in cleartext can be read by anyone on the path; on loopback
        # there is no path. Anything else needs TLS or the user's explicit consent.
        if conn.is_encrypted or self.allow_cleartext_auth:
            return
        assert conn.sock is not None
        if not is_loopback(conn.sock.getpeername()[0]):
            raise SMTPNotSupportedError(
                f"Refusing to send credentials to {self.host} over an unencrypted "
                "connection: use EMAIL_USE_TLS or EMAIL_USE_SSL, or set "
                "SOCKMAIL['ALLOW_CLEARTEXT_AUTH'] = True"
            )

    def _default_local_hostname(self, conn: Connection) -> str:
        # Like smtplib: the FQDN when it looks like one, else the address literal.
        fqdn = _fqdn()
        if "." in fqdn and fqdn.isascii():
            return fqdn
        assert conn.sock is not None
        address = conn.sock.getsockname()[0]
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"

    # Mail transactions

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

        When the server offers PIPELINING, transactions overlap: the next one is
        written behind the content of the one before (and, with CHUNKING, without
        waiting at all, up to :data:`PIPELINE_WINDOW` ahead). Otherwise each command
        waits for the reply to the one before.

        With ``quit_after`` the session ends with the batch: pipelined, QUIT goes out
        behind the last transaction (RFC 2920 lets it end a group), which saves the
        round trip of a QUIT of its own, and the connection is closed once it is
        answered. Whatever becomes of the QUIT itself, like :meth:`quit`, raises nothing.

        If the session fails, every transaction taken and not yet yielded is settled
        (sent content without a verdict is UNKNOWN) and the error is raised with the
        oldest one's outcome as ``error.outcome``.
        """
        conn = self._live()
        conn.start_deadline(expires)
        engine = self._engine(conn)
        source = _Source(transactions)
        finished: list[Transaction] = []
        start = conn.sent
        try:
            yield from self._converse(conn, engine, source, finished, stop, quit_after)
        except BaseException as exc:
            if exc is source.error:
                raise
            yield from self._broken(exc, conn, engine, source, finished, conn.sent - start)
        finally:
            if not engine.behind_data:  # learnt, or known: see _REFUSE_BEHIND_DATA
                _REFUSE_BEHIND_DATA.add((self.host, self.port))

    def _engine(self, conn: Connection) -> TransactionEngine:
        caps = conn.capabilities
        return TransactionEngine(
            caps,
            pipelining=self.pipelining and caps.has("PIPELINING"),
            chunking=self.chunking and caps.has("CHUNKING"),
            reset_first=conn.reset_needed,
            behind_data=(self.host, self.port) not in _REFUSE_BEHIND_DATA,
        )

    def _converse(
        self,
        conn: Connection,
        engine: TransactionEngine,
        source: _Source,
        finished: list[Transaction],
        stop: Callable[[], bool] | None,
        quit_after: bool,
    ) -> Iterator[Transaction]:
        """Offer, write, read and report until every command written has its reply."""
        quit_after = quit_after and engine.pipelining  # else quit() says it on its own
        conn.check_in_step()
        while True:
            # A refusal is reported before anything more is offered, so that the
            # caller can stop; otherwise the verdicts wait until the next transaction
            # is on its way, as the round trip is what costs.
            if any(not t.outcome.taken for t in finished):
                yield from self._report(conn, finished)
            if stop is not None and stop():
                source.close()
            self._offer(conn, engine, source)
            if quit_after and _quit_may_follow(engine, source):
                quit_after = False
                conn.queue(engine.offer_quit())
            conn.send_ready()
            yield from self._report(conn, finished)
            if not engine.awaiting:
                break
            source.prefetch()  # e.g. render the next message while the server works
            self._receive_replies(conn, engine, finished)
            if engine.quit_refused:  # behind the data: again after the verdict
                quit_after, engine.quit_refused = True, False
        conn.flush()
        conn.reset_needed = engine.reset_needed
        if engine.quit_answered:
            self.close()
        source.check()

    def _offer(self, conn: Connection, engine: TransactionEngine, source: _Source) -> None:
        """Offer what may be written now."""
        while engine.can_offer and self._has_room(conn, engine):
            offered = self._next_to_offer(conn, engine, source)
            if offered is None:
                return
            conn.queue(engine.offer(offered))

    @staticmethod
    def _next_to_offer(
        conn: Connection, engine: TransactionEngine, source: _Source
    ) -> Transaction | None:
        """First what the server refused for coming behind the end of the data, then
        what the caller gives."""
        if engine.refused_behind_data and source.closed:
            engine.refused_behind_data.clear()  # the caller stopped: they stay unoffered
        if not (engine.refused_behind_data or source.has_next()):
            return None
        if not engine.awaiting:
            conn.check_in_step()  # its reply will be the next: none may be waiting
        if engine.refused_behind_data:
            return engine.refused_behind_data.pop(0)
        return source.take()

    @staticmethod
    def _has_room(conn: Connection, engine: TransactionEngine) -> bool:
        return len(engine.in_flight) < PIPELINE_WINDOW and len(conn.outgoing) < PIPELINE_QUEUE_BYTES

    def _receive_replies(
        self, conn: Connection, engine: TransactionEngine, finished: list[Transaction]
    ) -> None:
        """Wait for a reply, then take every reply that has come: what they call for
        (the next command, content after a 354) is queued, and the transactions whose
        verdicts are known to be their own go into ``finished`` (there as soon as
        known, whatever happens next)."""
        step = engine.next_step
        if step.is_verdict:
            conn.expect("the reply to the message content", self.timeouts.data)
        else:
            conn.expect(f"the reply to {step.label}", self.timeouts.command)
        reply = conn.read_reply()
        while True:
            commands, _ = engine.receive(reply)
            finished.extend(engine.take_confirmed())
            if reply.code == 421 and reply is not engine.quit_reply:
                raise _closing(reply)
            if commands:  # every command written before has its reply: none may be left
                conn.check_in_step()
            conn.queue(commands)
            if not conn.replies:
                break
            reply = conn.replies.popleft()
        if not engine.awaiting and not engine.quit_answered:
            conn.check_nothing_more()
            engine.end_of_window()
            finished.extend(engine.take_confirmed())

    def _report(self, conn: Connection, finished: list[Transaction]) -> Iterator[Transaction]:
        """Yield the transactions in ``finished``, taking each out as it goes."""
        while finished:
            transaction = finished.pop(0)
            conn.reset_needed = True  # until the engine says otherwise at its end
            yield transaction

    def _broken(
        self,
        exc: BaseException,
        conn: Connection,
        engine: TransactionEngine,
        source: _Source,
        finished: list[Transaction],
        sent: int,
    ) -> Iterator[Transaction]:
        """The batch failed with ``exc``: settle what has no verdict, report what has,
        and raise ``exc`` (or, when only the QUIT behind the batch failed, nothing)."""
        # A 421 raised here answered a transaction (one answering QUIT raises
        # nothing): the batch failed. Anything else with only the QUIT left is the
        # QUIT's own trouble: every transaction has its verdict. (A QUIT answered by
        # another command's reply is no trouble of its own.)
        closing = isinstance(exc, SMTPServerDisconnected) and exc.reply is not None
        out_of_step = isinstance(exc, SMTPOutOfStepError)
        if engine.only_quit_left and isinstance(exc, Exception) and not closing | out_of_step:
            engine.abort(sent, server_closed=False)
            finished.extend(engine.take_confirmed())
            self._end_unanswered_quit(exc)
            yield from self._report(conn, finished)
            source.check()
            return
        unsettled = engine.abort(sent, server_closed=closing, out_of_step=out_of_step)
        finished.extend(engine.take_confirmed())
        conn.reset_needed = True
        for transaction in [*unsettled, *source.taken()]:
            outcome = transaction.outcome
            outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SMTPError) and unsettled:
            exc.outcome = unsettled[0].outcome
        if isinstance(exc, GeneratorExit):  # dropped by the caller: out of step now
            if unsettled:
                self.close()
            raise exc
        self._fail(exc)
        # Those that got their verdict before the failure are reported as such.
        yield from self._report(conn, finished)
        raise exc

    # Closing

    def quit(self) -> None:
        """Say QUIT and close. Never raises: the server may already be gone."""
        conn = self._conn
        if conn is None or conn.sock is None:
            self.close()
            return
        # QUIT has its own limit: the deadline of a call long over (a kept connection
        # left idle) must not cut the goodbye short.
        conn.expires = None
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
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._last_capabilities = conn.capabilities
        if conn.sock is not None:
            conn.close()
            self.listener.on_closed()

    def _fail(self, error: BaseException) -> None:
        self.listener.on_error(error)
        self.close()

    # Exchanges of protocol, a group of commands at a time

    def _live(self) -> Connection:
        conn = self._conn
        if conn is None or conn.sock is None:
            raise SMTPServerDisconnected("Not connected")
        return conn

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
        conn = self._live()
        conn.check_in_step()
        verb = commands[0].display.split(" ", 1)[0] or "a command"
        conn.expect(f"the reply to {verb}", self.timeouts.command)
        conn.queue(commands)
        conn.flush()
        return [conn.read_reply() for _ in commands]
