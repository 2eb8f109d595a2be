"""The Django email backend: settings in, EmailMessages to envelopes, the client's
outcomes to return values, exceptions and audit records. No SMTP logic lives here."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from . import signals
from .conf import MailConfig, conf, mail_config, require_app_installed
from .outcomes import attach_outcome, outcome_of
from .rendering import render
from .smtp.client import (
    Security,
    SMTPClient,
    Timeouts,
    create_ssl_context,
    host_port,
)
from .smtp.envelope import Envelope, make_envelope
from .smtp.errors import (
    SMTPDataError,
    SMTPError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from .smtp.protocol import new_outcome
from .smtp.results import DEFERRED, NOT_SENT, UNKNOWN, MessageOutcome
from .smtp.transactions import Transaction
from .transcript import INFO, MessageRecord, Transcript, header_block

logger = logging.getLogger("django_sockmail")


class EmailBackend(BaseEmailBackend):
    """A drop-in replacement for ``django.core.mail.backends.smtp.EmailBackend``.

    After ``send_messages()`` each message carries its outcome, read with
    :func:`django_sockmail.outcome_of` (:class:`~django_sockmail.MessageOutcome`:
    status, per-recipient replies, queue id). Whatever exception stops a batch
    carries ``sent_messages``, ``unsent_messages`` and ``unknown_messages`` (see
    :meth:`send_messages`), so a retry never sends one twice. Every message handed
    over has a record in the session's audit log, those never offered as not sent,
    saying why.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Fail closed where no system check runs (gunicorn, uwsgi, Celery workers): a
        # switch that is not True or False (sockmail.E009), the audit log's tables
        # (sockmail.E002); mail_config() refuses a port or timeout the socket would
        # misread (sockmail.E010).
        conf.check_switches()
        require_app_installed()
        self.fail_silently = fail_silently
        # Django 6.1 passes the MAILERS alias, with OPTIONS as keyword arguments;
        # without one, the EMAIL_* settings fill in what was not given.
        self.alias: str | None = kwargs.get("alias")
        given = {
            "host": host,
            "port": port,
            "username": username,
            "password": password,
            "use_tls": use_tls,
            "use_ssl": use_ssl,
            "timeout": timeout,
            "ssl_keyfile": ssl_keyfile,
            "ssl_certfile": ssl_certfile,
        }
        self._configure(mail_config(self.alias, given))
        self.connection: SMTPClient | None = None
        self._call_expires: float | None = None  # the deadline of the call under way
        self._transcript: Transcript | None = None
        self._lock = threading.RLock()

    def _configure(self, config: MailConfig) -> None:
        """Take what to connect with, as Django's SMTP backend keeps it: in attributes."""
        self.host, self.port = config.host, config.port
        self.username, self.password = config.username, config.password
        self.use_tls, self.use_ssl = config.use_tls, config.use_ssl
        self.timeout = config.timeout
        self.ssl_keyfile, self.ssl_certfile = config.ssl_keyfile, config.ssl_certfile

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {host_port(self.host, self.port)} user={self.username!r}>"

    @property
    def security(self) -> Security:
        if self.use_ssl:
            return "ssl"
        if self.use_tls:
            return "starttls"
        return "opportunistic" if conf.OPPORTUNISTIC_TLS else "none"

    @property
    def timeouts(self) -> Timeouts:
        """Each step's limit: SOCKMAIL["TIMEOUTS"], else this backend's timeout."""
        given = conf.TIMEOUTS
        steps = {
            step: given.get(step, self.timeout)
            for step in ("connect", "greeting", "command", "data")
        }
        return Timeouts(**steps, deadline=given.get("deadline"))

    def _client(self, listener: Transcript) -> SMTPClient:
        token_source = conf.OAUTH2_TOKEN
        token = token_source(self.username) if token_source and self.username else ""
        if conf.DANGEROUSLY_SKIP_TLS_VERIFICATION and self.security != "none":
            logger.warning(
                "TLS certificate verification is OFF for %s:%s "
                "(SOCKMAIL['DANGEROUSLY_SKIP_TLS_VERIFICATION'])",
                self.host,
                self.port,
            )
            listener.add_line(INFO, "TLS certificate verification is disabled by settings")
        return SMTPClient(
            self.host,
            int(self.port),
            security=self.security,
            timeouts=self.timeouts,
            local_hostname=conf.LOCAL_HOSTNAME,
            ssl_context=self.ssl_context if self.security != "none" else None,
            # Like Django's backend: log in only with a user and a password (or token).
            username=self.username if self.username and (self.password or token) else "",
            password=self.password or "",
            oauth2_token=token,
            auth_mechanism=conf.AUTH_MECHANISM,
            allow_cleartext_auth=conf.ALLOW_CLEARTEXT_AUTH,
            pipelining=conf.PIPELINING,
            chunking=conf.CHUNKING,
            listener=listener,
        )

    def open(self) -> bool | None:
        """Open a session. True if it opened one, False if one was open already,
        None if it failed silently."""
        return self._open(())

    def _open(self, waiting: Sequence[tuple[EmailMessage, Envelope]]) -> bool | None:
        """:meth:`open`, for a batch: a session that fails to open records each
        message ``waiting`` for it as never offered."""
        with self._lock:
            if self.connection is not None:
                return False
            transcript = Transcript(
                host=self.host,
                port=int(self.port),
                # An opportunistic session is "none" until TLS is up.
                security=self.security if self.security != "opportunistic" else "none",
                content_mode=conf.STORE_CONTENT,
                content_max_bytes=conf.CONTENT_MAX_BYTES,
            )
            self._transcript = transcript  # the session's from its start, for _keep
            try:
                client = self._client(transcript)
                client.open(expires=self._call_expires)
            except Exception as exc:  # a failed session is recorded too
                if not transcript.error:
                    transcript.on_error(exc)
                why = f"the session could not be opened: {_described(exc)}"
                _Progress(waiting, self._keep).keep_unoffered(why)
                self._transcript = None
                self._record(transcript)
                # Like Django's backend: fail_silently covers OSError (so SMTPError,
                # or an unreadable EMAIL_SSL_CERTFILE), not programming errors.
                if self.fail_silently and isinstance(exc, OSError):
                    return None
                raise
            self.connection = client
            return True

    def close(self) -> None:
        """QUIT and close the session, then record it. Never raises."""
        with self._lock:
            client, transcript = self.connection, self._transcript
            self.connection, self._transcript = None, None
            if client is not None:
                client.quit()
            if transcript is not None:
                self._record(transcript)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send each message; return how many the server accepted.

        Whatever error stops the batch is raised as its own type (an SMTPError when
        the session fails, Django's ``BadHeaderError``, a ValueError, for a message
        that cannot be rendered), with three lists of the messages given, in order:
        ``error.sent_messages`` the server took, ``error.unsent_messages`` it never
        took (safe to send again) and ``error.unknown_messages``, which went out
        whole without a verdict (sending them again may deliver them twice).
        """
        if not email_messages:
            return 0
        try:
            # Bad addresses are the caller's error: refuse them before anything is sent.
            batch = [(m, e) for m in email_messages if (e := self._envelope(m)) is not None]
        except Exception as exc:
            _say_what_was_sent(exc, sent=[], unsent=list(email_messages), unknown=[])
            raise
        for message, envelope in batch:
            attach_outcome(message, new_outcome(envelope, b""))
        messages = [m for m, _ in batch]
        with self._lock:
            try:
                self._call_expires = self._deadline()
                self._send_batch(batch)
            except Exception as exc:
                # Say exactly which messages the server took, so a retry sends no duplicate.
                _say_what_was_sent(
                    exc,
                    sent=[m for m in messages if _outcome(m).taken],
                    unsent=[m for m in messages if not _outcome(m).taken and _status(m) != UNKNOWN],
                    unknown=[m for m in messages if _status(m) == UNKNOWN],
                )
                raise
            finally:
                self._call_expires = None
        return sum(_outcome(m).taken for m in messages)

    def _deadline(self) -> float | None:
        """When the call under way must end (TIMEOUTS["deadline"]), opening included."""
        deadline = self.timeouts.deadline
        return None if deadline is None else time.monotonic() + deadline

    def _send_batch(self, batch: list[tuple[EmailMessage, Envelope]]) -> None:
        kept_open = self.connection is not None  # by the caller, across calls
        if kept_open:
            self._revive(batch)
        elif self._open(batch) is None:
            return  # failed silently
        try:
            if self.connection is None:
                return
            try:
                # A session opened for this batch alone says QUIT behind its last message.
                self._deliver(self.connection, batch, quit_after=not kept_open)
            except SMTPServerDisconnected as exc:
                # A kept connection the server closed just as we began: nothing was
                # taken, so once more, on a new connection.
                if not kept_open or isinstance(exc, TimeoutError) or not _untouched(batch):
                    raise
                self._revive(batch)
                if self.connection is None:
                    return
                self._deliver(self.connection, batch, quit_after=False)
        finally:
            if not kept_open or self.connection is None:
                self.close()

    def _revive(self, waiting: Sequence[tuple[EmailMessage, Envelope]]) -> None:
        """Reopen a kept connection that the server has closed (idle timeout, 421):
        the old session is recorded as it ended, and a new one begins."""
        if self.connection is not None and self.connection.is_alive():
            return
        self.close()
        self._open(waiting)

    def _deliver(
        self, client: SMTPClient, batch: list[tuple[EmailMessage, Envelope]], *, quit_after: bool
    ) -> None:
        """Hand the messages to the client one by one, rendering each only when the
        client is about to take it, and follow each to the server's verdict. Like
        Django's backend, the first message refused ends the batch (unless
        fail_silently); the ones already on their way are still followed to their
        verdict. Each message gets its record in the session, in the order given:
        one never offered (the session ended, the batch stopped, or it could not be
        rendered) as not sent, saying why."""
        delivery = _Delivery(self, client, batch)
        try:
            for transaction in client.send_many(
                delivery.transactions(),
                stop=delivery.stopped,
                quit_after=quit_after,
                expires=self._call_expires,
            ):
                delivery.settle(transaction)
        except Exception as exc:
            delivery.break_off(exc)
            if not client.is_open:
                self.connection = None  # the session is over; close() records it
            if not (isinstance(exc, SMTPError) and self.fail_silently):
                raise
            return
        delivery.finish()

    def _failed(self, message: EmailMessage, outcome: MessageOutcome, error: SMTPError) -> None:
        signals.send(
            signals.message_failed, type(self), message=message, outcome=outcome, error=error
        )

    def _keep(self, message: EmailMessage, record: MessageRecord) -> None:
        transcript = self._transcript
        assert transcript is not None
        attach_outcome(message, record.outcome)
        transcript.add_message(record)
        # Every WRITE_EVERY messages, or sooner when what it holds passes a byte budget
        # (a server's long replies), the open session goes to the database and leaves
        # memory; unrecorded, it only leaves memory.
        if not transcript.needs_writing(conf.WRITE_EVERY):
            return
        if conf.RECORD_SESSIONS:
            from .recorder import write_so_far  # the models need the app registry ready

            write_so_far(transcript)
        else:
            transcript.forget()

    @staticmethod
    def _envelope(message: EmailMessage) -> Envelope | None:
        recipients = message.recipients()
        if not recipients:
            return None
        # Per-message delivery status notification requests (RFC 3461), if any.
        dsn = getattr(message, "sockmail_dsn", None)
        return make_envelope(message.from_email, recipients, dsn)

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context; override it in a subclass for a private CA and the like,
        as with Django's backend."""
        return create_ssl_context(
            self.ssl_certfile,
            self.ssl_keyfile,
            cafile=conf.SSL_CAFILE,
            verify=not conf.DANGEROUSLY_SKIP_TLS_VERIFICATION,
        )

    def _record(self, transcript: Transcript) -> None:
        if not conf.RECORD_SESSIONS:
            return
        from .recorder import record  # the models need the app registry ready

        record(transcript)


@dataclass
class _Delivery:
    """One batch on its way through one client (EmailBackend._deliver): the messages
    rendered as the client asks for them, each followed to its verdict."""

    backend: EmailBackend
    client: SMTPClient
    batch: list[tuple[EmailMessage, Envelope]]
    progress: _Progress = field(init=False)
    # By id() of each transaction handed to the client: its position in the batch.
    handed: dict[int, tuple[int, Transaction]] = field(default_factory=dict)
    refusals: list[SMTPError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.progress = _Progress(self.batch, self.backend._keep)

    def stopped(self) -> bool:
        """A message was refused, which ends the batch (unless fail_silently)."""
        return bool(self.refusals) and not self.backend.fail_silently

    def transactions(self) -> Iterator[Transaction]:
        for position, (message, envelope) in enumerate(self.batch):
            if self.stopped():
                return
            transaction = self._prepare(position, message, envelope)
            if transaction is not None:
                self.handed[id(transaction)] = (position, transaction)
                yield transaction

    def _prepare(
        self, position: int, message: EmailMessage, envelope: Envelope
    ) -> Transaction | None:
        """The message rendered, as a transaction; None when the client refuses it
        before sending anything (too large, needs SMTPUTF8), which is kept as such."""
        try:
            mime, content = render(message)
        except Exception as exc:  # a newline in a header: the caller's to fix
            self.progress.unrendered = (position, exc)
            raise
        try:
            transaction = self.client.prepare(envelope, content)
        except SMTPError as exc:
            assert exc.outcome is not None
            self.progress.keep(position, _record(message, mime, content, exc.outcome))
            self._refused(message, exc.outcome, exc)
            return None
        attach_outcome(message, transaction.outcome)
        self.progress.rendered[position] = _record(message, mime, content, transaction.outcome)
        return transaction

    def settle(self, transaction: Transaction) -> None:
        """A transaction the client has settled: keep its record, and say how it went."""
        position, _ = self.handed.pop(id(transaction))
        message, outcome = self.batch[position][0], self.progress.keep(position).outcome
        if outcome.taken:
            sender = type(self.backend)
            signals.send(signals.message_sent, sender, message=message, outcome=outcome)
        else:
            self._refused(message, outcome, _refusal(outcome))

    def _refused(self, message: EmailMessage, outcome: MessageOutcome, error: SMTPError) -> None:
        self.refusals.append(error)
        self.backend._failed(message, outcome, error)

    def break_off(self, exc: Exception) -> None:
        """The batch ended with ``exc``: keep the records of the messages handed over
        (settled by the client: unknown, failed, not sent), then of those never
        offered."""
        for position, transaction in self.handed.values():
            if transaction.offered:
                record = self.progress.keep(position)
                if isinstance(exc, SMTPError):
                    self.backend._failed(self.batch[position][0], record.outcome, exc)
        # An SMTPError from the client ended the session; anything else (a message
        # that could not be rendered) stopped the batch.
        ended = (
            "the session ended first" if isinstance(exc, SMTPError) else "the batch stopped first"
        )
        self.progress.keep_unoffered(f"{ended}: {_described(exc)}")

    def finish(self) -> None:
        """Every verdict is in: a refusal that stopped the batch is raised, once the
        messages never offered are kept."""
        if self.stopped():
            first = self.refusals[0]
            self.progress.keep_unoffered(f"a message before it was refused: {_described(first)}")
            raise first


@dataclass
class _Progress:
    """A batch on its way through one session, so that each of its messages gets one
    record there (EmailBackend._keep), in the order given."""

    batch: Sequence[tuple[EmailMessage, Envelope]]
    _keep: Callable[[EmailMessage, MessageRecord], None]
    # By position in the batch: the records of the messages handed to the client and
    # not kept yet, made when each was rendered; those kept; the one that could not be.
    rendered: dict[int, MessageRecord] = field(default_factory=dict)
    kept: set[int] = field(default_factory=set)
    unrendered: tuple[int, Exception] | None = None

    def keep(self, position: int, record: MessageRecord | None = None) -> MessageRecord:
        """Keep the record of the message at ``position``: ``record``, or the one made
        when it was rendered."""
        if record is None:
            record = self.rendered.pop(position)
        self._keep(self.batch[position][0], record)
        self.kept.add(position)
        return record

    def keep_unoffered(self, why: str) -> None:
        """Keep a record of each message not kept yet, none of which was offered: not
        sent, saying why. (Every message before them was offered and is kept.)"""
        for position, (message, envelope) in enumerate(self.batch):
            if position in self.kept:
                continue
            record = self.rendered.pop(position, None) or _unrendered(message, envelope)
            reason = why
            if self.unrendered is not None and self.unrendered[0] == position:
                reason = f"it could not be rendered: {_described(self.unrendered[1])}"
            record.outcome.error = f"never offered: {reason}"  # its status: not sent
            self.keep(position, record)


def _unrendered(message: EmailMessage, envelope: Envelope) -> MessageRecord:
    """The record of a message never rendered: what is known without rendering it."""
    outcome = new_outcome(envelope, b"")
    outcome.sha256 = ""  # no content was made, so none has a digest
    message_id = next(
        (str(v) for k, v in message.extra_headers.items() if k.lower() == "message-id"), ""
    )
    return MessageRecord(outcome=outcome, message_id=message_id, subject=str(message.subject))


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _say_what_was_sent(
    error: Exception,
    *,
    sent: list[EmailMessage],
    unsent: list[EmailMessage],
    unknown: list[EmailMessage],
) -> None:
    """Attach the three lists to ``error``, whatever its type (every exception takes
    attributes; SMTPError declares these)."""
    vars(error).update(sent_messages=sent, unsent_messages=unsent, unknown_messages=unknown)


def _untouched(batch: list[tuple[EmailMessage, Envelope]]) -> bool:
    """No message of the batch got a verdict but a 421 (or none at all), so sending
    all of them again can deliver none twice."""
    return all(
        _status(m) == NOT_SENT
        or (_status(m) == DEFERRED and getattr(_outcome(m).failure_reply, "code", 0) == 421)
        for m, _ in batch
    )


def _outcome(message: EmailMessage) -> MessageOutcome:
    """What send_messages() left on a message (each one in a batch has one)."""
    return outcome_of(message)


def _status(message: EmailMessage) -> str:
    return _outcome(message).status


def _record(
    message: EmailMessage, mime: Any, content: bytes, outcome: MessageOutcome
) -> MessageRecord:
    return MessageRecord(
        outcome=outcome,
        message_id=str(mime.get("Message-ID", "")),
        subject=str(message.subject),
        headers=header_block(content),
    )


def _refusal(outcome: MessageOutcome) -> SMTPError:
    """The smtplib-style exception for a message the server did not take."""
    if outcome.mail_reply is not None and not outcome.mail_reply.is_positive:
        return SMTPSenderRefused(outcome.mail_reply, outcome.sender)
    if not any(r.accepted for r in outcome.recipients):
        return SMTPRecipientsRefused(outcome.refused_recipients)
    reply = outcome.final_reply or outcome.data_reply
    assert reply is not None
    return SMTPDataError(reply)
