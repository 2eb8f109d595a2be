"""Mail transactions without I/O: one engine, a command at a time or pipelined.

A mail transaction is MAIL, a RCPT for each recipient, then DATA and the content (or,
with CHUNKING, ``BDAT n LAST`` and the content). Without PIPELINING the client writes
one command and waits for its reply (RFC 5321 §4.3). With PIPELINING it may write a
message's MAIL, every RCPT and DATA at once, and the next message's commands behind the
content of one before its verdict (RFC 2920 §3.1); with CHUNKING too, a transaction
never waits for anything (RFC 3030 §4). Both are modes of one
:class:`TransactionEngine`: it decides what to write next and matches each reply, in
order, to the command it answers, so every message and recipient gets its own outcome.
What a reply does to its transaction is the table :data:`TRANSITIONS`. The socket
driver in :mod:`.client` feeds the engine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from .data import normalize_line_endings
from .envelope import Envelope
from .errors import SMTPError, SMTPOutOfStepError
from .protocol import (
    Capabilities,
    Command,
    answers,
    bdat_command,
    check_message,
    command,
    content_command,
    mail_parameters,
    new_outcome,
    rcpt_parameters,
)
from .reply import Reply
from .results import MessageOutcome


class Step(Enum):
    """The states of a transaction: the command its next reply answers."""

    RSET = "RSET"  # before MAIL, when the transaction before may have been left open
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END = "end of data"  # the verdict on the content written after DATA's 354
    BDAT = "BDAT"  # the verdict on BDAT LAST and its content
    EMPTY_END = "empty end of data"  # ends a DATA the server should have refused
    ABANDON = "RSET after a refusal"  # one at a time: ends a transaction left open
    QUIT = "QUIT"  # behind the last transaction, when the session ends with the batch

    # Members are singletons compared by identity: hash them so, in C, not by name
    # (Enum.__hash__), for the lookup in TRANSITIONS on every reply.
    __hash__ = object.__hash__

    @property
    def command(self) -> str:
        """The command's name for :func:`.protocol.answers`."""
        return _ANSWERED_AS[self]

    @property
    def label(self) -> str:
        """What an error or a timeout calls the command."""
        return {Step.ABANDON: "RSET", Step.BDAT: "end of data"}.get(self, self.value)

    @property
    def is_verdict(self) -> bool:
        """The reply to this is the verdict on the content: the data timeout applies."""
        return self in _VERDICTS


_VERDICTS = frozenset({Step.END, Step.BDAT, Step.EMPTY_END})
_ANSWERED_AS = {step: step.value for step in Step} | {
    Step.END: "END",
    Step.BDAT: "END",
    Step.EMPTY_END: "END",
    Step.ABANDON: "RSET",
}


class Then(Enum):
    """What a reply does to its transaction."""

    GO_ON = "its next command"
    ENVELOPE_REFUSED = "nobody will take the message: none of it is delivered"
    SEND_CONTENT = "the content follows (DATA answered 354)"
    LEFT_OPEN = "refused, with the transaction left open on the server: RSET ends it"
    VERDICT = "the transaction is over"


def _kind(reply: Reply) -> str:
    code = reply.code
    return "354" if code == 354 else _KINDS.get(code // 100, "4xx/5xx")


_KINDS = {2: "2xx", 3: "3xx"}


# What a reply does to its transaction, by the step it answers and the kind of reply.
# Only what :func:`.protocol.answers` lets through is here: any other reply belongs to
# another command, and the session is out of step. The refusal of the last recipient
# when none was taken is ENVELOPE_REFUSED too (see _take).
TRANSITIONS: dict[tuple[Step, str], Then] = {
    (Step.RSET, "2xx"): Then.GO_ON,
    (Step.RSET, "4xx/5xx"): Then.GO_ON,  # a server that keeps no state has nothing to reset
    (Step.MAIL, "2xx"): Then.GO_ON,
    (Step.MAIL, "4xx/5xx"): Then.ENVELOPE_REFUSED,
    (Step.RCPT, "2xx"): Then.GO_ON,
    (Step.RCPT, "4xx/5xx"): Then.GO_ON,  # the others may still be taken
    (Step.DATA, "354"): Then.SEND_CONTENT,
    (Step.DATA, "4xx/5xx"): Then.LEFT_OPEN,
    # The end of the data ends the transaction whatever its verdict (RFC 5321 §4.1.1.4)
    (Step.END, "2xx"): Then.VERDICT,
    (Step.END, "4xx/5xx"): Then.VERDICT,
    # ... but a refused BDAT LAST does not (RFC 3030 §4.2).
    (Step.BDAT, "2xx"): Then.VERDICT,
    (Step.BDAT, "4xx/5xx"): Then.LEFT_OPEN,
    (Step.EMPTY_END, "2xx"): Then.VERDICT,
    (Step.EMPTY_END, "4xx/5xx"): Then.VERDICT,
    (Step.ABANDON, "2xx"): Then.VERDICT,
    (Step.ABANDON, "4xx/5xx"): Then.VERDICT,
}


@dataclass
class Transaction:
    """One message to send: its envelope, its content and the outcome being filled in."""

    envelope: Envelope
    content: bytes  # CRLF line endings; emptied once written, so a batch holds little
    outcome: MessageOutcome
    written_at: int = -1  # stream offset where the content ends, once queued
    offered: bool = False  # its commands were handed to the driver
    # One at a time: its commands not yet written, (step, recipient index, command).
    unwritten: deque[tuple[Step, int, Command]] = field(default_factory=deque)


def prepare(capabilities: Capabilities, envelope: Envelope, content: bytes) -> Transaction:
    """A transaction for ``content``, refused locally (raising, with ``error.outcome``)
    when the server has said it cannot take it."""
    content = normalize_line_endings(content)
    outcome = new_outcome(envelope, content)
    try:
        check_message(capabilities, envelope, content)
    except SMTPError as exc:
        outcome.error = str(exc)  # and the status stays NOT_SENT: never offered
        exc.outcome = outcome
        raise
    return Transaction(envelope, content, outcome)


def envelope_refusal(outcome: MessageOutcome) -> str:
    if outcome.mail_reply is not None and not outcome.mail_reply.is_positive:
        return f"sender refused: {outcome.mail_reply}"
    return "every recipient refused"


@dataclass
class _Awaited:
    step: Step
    transaction: Transaction | None  # None for QUIT
    index: int = 0  # which recipient, for RCPT
    behind_data: bool = False  # written behind an end of data still unanswered


class TransactionEngine:
    """Transactions in flight on one session, in the order they were written.

    :meth:`offer` gives the commands that start a transaction; :meth:`receive` takes
    each reply and gives what to write next, and the transaction it finished, if any.

    Pipelined (``pipelining=True``), a transaction's commands are written at once, and
    the next transaction may follow before the verdict on the one before. One at a time,
    each command waits for the reply to the one before, and a refusal stops the
    transaction where it is: nothing more of it is written.

    A transaction refused before its end may be left open on the server; RSET ends it.
    One at a time, the RSET follows at once (:attr:`Step.ABANDON`). Pipelined, the next
    transaction starts with it: the end of the data ends a transaction whatever its
    verdict (RFC 5321 §4.1.1.4), but a refused DATA or BDAT does not (RFC 3030 §4.2),
    and with CHUNKING the transactions still in flight may yet be refused.
    """

    def __init__(
        self,
        capabilities: Capabilities,
        *,
        chunking: bool,
        reset_first: bool,
        pipelining: bool = True,
        behind_data: bool = True,
    ) -> None:
        self.capabilities = capabilities
        self.pipelining = pipelining
        self.chunking = chunking
        # Whether the next transaction may be written behind the end of the data
        # before its verdict (RFC 2920 allows it; some servers refuse it, see
        # refused_behind_data). Behind BDAT LAST it always may (RFC 3030 §4.2).
        self.behind_data = behind_data
        self._enhanced = capabilities.has("ENHANCEDSTATUSCODES")
        # Finished since the last point where the replies were provably in step with
        # the commands: their verdicts may yet prove to be another command's reply.
        self._unconfirmed: deque[Transaction] = deque()
        self._confirmed: list[Transaction] = []
        # With CHUNKING, transactions are written a window at a time: none is added
        # once a reply to the window has been read, so that every reply of a window is
        # accounted for before its verdicts are believed.
        self._window_open = True
        # Transactions whose commands the server refused because they came behind the
        # end of the data before its verdict: never taken, to be offered again.
        self.refused_behind_data: list[Transaction] = []
        self._reset_next = reset_first  # the last transaction may have been left open
        self._awaited: deque[_Awaited] = deque()
        self.in_flight: deque[Transaction] = deque()  # offered, not yet finished
        # A DATA waits for its 354: nothing may be written until it comes (the content
        # must follow DATA directly), so no further transaction may be offered.
        self.waiting_for_data = False
        self.queued = 0  # bytes of commands and content handed to the driver
        self.quitting = False  # QUIT is written: nothing may follow
        self.quit_refused = False  # QUIT came behind the data and was refused for it
        self.quit_reply: Reply | None = None

    # What may happen next

    @property
    def next_step(self) -> Step:
        """What the next reply will answer."""
        return self._awaited[0].step

    @property
    def can_offer(self) -> bool:
        if self.waiting_for_data or self.quitting:
            return False
        if not self.pipelining or not self._awaited:
            return not self._awaited
        if self.chunking:
            return self._window_open
        return self.behind_data  # behind the end of the data only where the server takes it

    @property
    def awaiting(self) -> bool:
        """Some command written still has no reply."""
        return bool(self._awaited)

    @property
    def only_quit_left(self) -> bool:
        """QUIT is written and every transaction has its verdict: all that can still go
        wrong is the QUIT's own reply."""
        return self.quitting and not self.in_flight

    @property
    def quit_answered(self) -> bool:
        return self.quit_reply is not None

    @property
    def reset_needed(self) -> bool:
        """Whether the next transaction must start with RSET."""
        return self._reset_next or (self.chunking and bool(self.in_flight))

    # Commands out

    def offer(self, transaction: Transaction) -> list[Command]:
        """The commands that start ``transaction``: all of them, pipelined; else the
        first, the rest following the replies."""
        if not self._awaited:
            self._window_open = True
        plan = self._plan(transaction)
        transaction.offered = True
        self._reset_next = True  # until the transaction is known to have ended
        self.in_flight.append(transaction)
        if self.pipelining:
            return self._write(plan, transaction)
        transaction.unwritten = deque(plan[1:])
        return self._write(plan[:1], transaction)

    def offer_quit(self) -> list[Command]:
        """QUIT behind everything written: no transaction may follow it."""
        self._awaited.append(_Awaited(Step.QUIT, None, behind_data=self._data_unanswered()))
        self.quitting = True
        quit_ = command("QUIT")
        self.queued += len(quit_.wire)
        return [quit_]

    def _plan(self, transaction: Transaction) -> list[tuple[Step, int, Command]]:
        """(RSET,) MAIL, RCPT for each recipient, then DATA or BDAT LAST."""
        caps, envelope = self.capabilities, transaction.envelope
        plan = [(Step.RSET, 0, command("RSET"))] if self.reset_needed else []
        params = mail_parameters(caps, envelope, transaction.content)
        plan.append((Step.MAIL, 0, command("MAIL", f"FROM:<{envelope.sender}>{params}")))
        for i, recipient in enumerate(transaction.outcome.recipients):
            params = rcpt_parameters(caps, envelope, recipient.address)
            plan.append((Step.RCPT, i, command("RCPT", f"TO:<{recipient.address}>{params}")))
        if self.chunking:
            # If the envelope fails the server refuses the BDAT and throws the bytes
            # away (RFC 3030 §4.2): they are never delivered.
            plan.append((Step.BDAT, 0, bdat_command(transaction.content)))
        else:
            plan.append((Step.DATA, 0, command("DATA")))
        return plan

    def _write(
        self, items: list[tuple[Step, int, Command]], transaction: Transaction
    ) -> list[Command]:
        # The driver writes exactly what the engine gives, in order: so the engine
        # knows where in the stream each message's content ends.
        unanswered = self._data_unanswered()
        for step, index, cmd in items:
            behind = unanswered and step not in _VERDICTS
            self._awaited.append(_Awaited(step, transaction, index, behind))
            if step is Step.DATA:
                self.waiting_for_data = True
            self.queued += len(cmd.wire)
            if cmd.is_content:
                transaction.written_at = self.queued
                transaction.content = b""  # the command holds the bytes until written
        return [cmd for _, _, cmd in items]

    def _data_unanswered(self) -> bool:
        # Commands written now follow the end of a DATA transaction's content whose
        # verdict has not come yet.
        if self.chunking or not self._awaited:
            return False
        return any(a.step is Step.END for a in self._awaited)

    # Replies in

    def receive(self, reply: Reply) -> tuple[list[Command], Transaction | None]:
        """Match ``reply`` to the oldest command without one.

        A server that sends a reply too many shifts every later reply onto the wrong
        command; that shows as soon as a reply cannot answer its command (a 354 to
        anything but DATA, a completion to DATA, a reply to nothing), and raises
        SMTPOutOfStepError: the session is out of step and must end.
        """
        if not self._awaited:
            raise SMTPOutOfStepError(f"The server sent a reply to no command: {reply}")
        self._window_open = False
        awaited = self._awaited.popleft()
        if awaited.behind_data and self._refused_as_early(awaited, reply):
            self._refused_behind_data(awaited)
            return [], None
        if not answers(_ANSWERED_AS[awaited.step], reply, enhanced=self._enhanced):
            label = awaited.step.label
            raise SMTPOutOfStepError(f"The server answered {label} with {reply}: out of step")
        transaction = awaited.transaction
        if transaction is None:  # QUIT: the session is over, every reply in step
            self.quit_reply = reply
            self._confirm()
            return [], None
        if awaited.step is Step.DATA:
            self.waiting_for_data = False
        then = _take(awaited, reply, transaction.outcome)
        return self._follow(then, awaited.step, transaction)

    def _follow(
        self, then: Then, step: Step, transaction: Transaction
    ) -> tuple[list[Command], Transaction | None]:
        outcome = transaction.outcome
        if then is Then.GO_ON:  # pipelined, the rest of it is written already
            return (self._write_next(transaction) if transaction.unwritten else []), None
        if then is Then.SEND_CONTENT:
            return self._after_354(transaction), None
        if then is Then.VERDICT:
            if step in (Step.BDAT, Step.ABANDON):
                self._reset_next = False  # ended: accepted whole, or by its RSET
            return [], self._finish(transaction)
        if not outcome.envelope_accepted:
            outcome.error = envelope_refusal(outcome)
        if then is Then.ENVELOPE_REFUSED and self.pipelining:
            return [], None  # the rest of it is written: the replies to it follow
        if not self.pipelining:
            return self._abandon(transaction), None
        self._reset_next = True  # left open: the next starts with RSET
        return [], self._finish(transaction)

    def _write_next(self, transaction: Transaction) -> list[Command]:
        return self._write([transaction.unwritten.popleft()], transaction)

    def _after_354(self, transaction: Transaction) -> list[Command]:
        # Only DATA is answered 354: every reply before it answered its own command.
        self._confirm()
        # What follows the 354 ends the transaction, so the next needs no RSET.
        self._reset_next = False
        if not transaction.outcome.envelope_accepted:
            # The server took DATA although nobody can receive the message: end it with
            # no content at all (RFC 2920 §3.1).
            transaction.outcome.error = envelope_refusal(transaction.outcome)
            end = Command(b".\r\n", ". (ends the DATA the server should have refused)")
            return self._write([(Step.EMPTY_END, 0, end)], transaction)
        content = content_command(transaction.content)
        return self._write([(Step.END, 0, content)], transaction)

    def _abandon(self, transaction: Transaction) -> list[Command]:
        """One at a time: end a transaction left open with RSET, at once, so the
        session is ready for the next."""
        transaction.unwritten.clear()
        transaction.content = b""
        return self._write([(Step.ABANDON, 0, command("RSET"))], transaction)

    def _finish(self, transaction: Transaction) -> Transaction:
        # Replies come in order, so the finished transaction is always the oldest.
        finished = self.in_flight.popleft()
        assert finished is transaction
        transaction.content = b""
        transaction.outcome.settle()
        self._unconfirmed.append(transaction)
        return transaction

    # Points where the verdicts stand

    def _confirm(self) -> None:
        self._confirmed.extend(self._unconfirmed)
        self._unconfirmed.clear()

    def end_of_window(self) -> None:
        """Every command written has its reply, and the driver found nothing more
        from the server: the verdicts so far stand."""
        assert not self._awaited
        self._confirm()

    def take_confirmed(self) -> list[Transaction]:
        """The finished transactions whose verdicts are known to be their own, in
        order, each given once."""
        confirmed, self._confirmed = self._confirmed, []
        return confirmed

    # Servers that refuse commands behind the data

    def _refused_as_early(self, awaited: _Awaited, reply: Reply) -> bool:
        """A server that refuses commands written behind the end of the data (Haraka
        3.3.4, against SMTP smuggling) answers each "503 bad sequence of commands".
        Only a 503 to a transaction's first command says so: after a MAIL answered
        otherwise, a 503 to its RCPT is about that MAIL."""
        if reply.code != 503:
            return False
        transaction = awaited.transaction
        if transaction is None or transaction in self.refused_behind_data:
            return True  # QUIT, or the rest of a transaction refused so
        return awaited.step in (Step.RSET, Step.MAIL)

    def _refused_behind_data(self, awaited: _Awaited) -> None:
        """The server refused a command for coming behind the end of the data before
        its verdict (some do, against SMTP smuggling). Nothing written from there on
        was taken: those transactions are offered again, each after the verdict on
        the one before."""
        self.behind_data = False
        transaction = awaited.transaction
        if transaction is None:  # the QUIT: said again once the verdicts are in
            self.quitting, self.quit_refused = False, True
            return
        if transaction not in self.refused_behind_data:
            self.refused_behind_data.append(transaction)
            self.in_flight.remove(transaction)
            transaction.outcome.reset_replies()
            transaction.offered = False
            # The content of a DATA never answered 354 was never written: still here.
        if awaited.step is Step.DATA:
            self.waiting_for_data = False

    # The end of a session that broke

    def abort(
        self, sent: int, *, server_closed: bool, out_of_step: bool = False
    ) -> list[Transaction]:
        """The session broke: settle every transaction not yet confirmed, oldest first.

        ``sent`` counts the bytes of :attr:`queued` that went out. A message whose
        whole content was written but whose verdict never came may have been queued:
        UNKNOWN (RFC 1047), unless the server said it was closing (421), which answers
        in order, so nothing after it was taken. The rest were not accepted.

        ``out_of_step``: the replies stopped matching the commands (a reply too many,
        or one that cannot answer its command). Every verdict since the last point
        where they provably matched may be another command's reply: a message whose
        content went out is UNKNOWN whatever it was told, and one whose content
        never left cannot have been delivered (NOT_SENT).
        """
        if not out_of_step:
            self._confirm()  # the verdicts read stand: nothing says they moved
        settled = [*self._unconfirmed, *self.in_flight]
        for transaction in settled:
            written = 0 <= transaction.written_at <= sent
            if out_of_step:
                transaction.outcome.settle_out_of_step(content_went_out=written)
            else:
                transaction.outcome.settle_unfinished(
                    content_went_out=written and not server_closed
                )
            transaction.content = b""
            transaction.unwritten.clear()
        self._unconfirmed.clear()
        self.in_flight.clear()
        self._awaited.clear()
        return settled


def _take(awaited: _Awaited, reply: Reply, outcome: MessageOutcome) -> Then:
    """Write ``reply`` into the outcome, where the command it answers belongs, and say
    what it does to the transaction: the table's transition, except that once the last
    recipient is answered an envelope nobody took ends the transaction."""
    step = awaited.step
    if step is Step.MAIL:
        outcome.mail_reply = reply
    elif step is Step.RCPT:
        outcome.recipients[awaited.index].reply = reply
        if awaited.index == len(outcome.recipients) - 1 and not outcome.envelope_accepted:
            return Then.ENVELOPE_REFUSED
    elif step is Step.DATA:
        outcome.data_reply = reply
        if reply.code != 354:
            outcome.error = f"DATA refused: {reply}"
    elif step is Step.END or (step is Step.BDAT and outcome.envelope_accepted):
        # (END follows a 354 only when the envelope was taken, else EMPTY_END does)
        outcome.final_reply = reply
        if not reply.is_positive:
            outcome.error = f"message refused: {reply}"
    elif step is Step.BDAT:
        return Then.LEFT_OPEN  # whatever BDAT got, nobody took the message
    return TRANSITIONS[step, _kind(reply)]
