"""Mail transactions back to back, without I/O (RFC 2920 §3.1, RFC 3030 §4).

With PIPELINING a client may write a message's MAIL, every RCPT and DATA at once,
and the content of one message may be followed by the next message's commands without
waiting for its reply. With CHUNKING too, a transaction never waits for anything: MAIL,
RCPT and ``BDAT n LAST`` with the content go out together, and so do the transactions
after it. A :class:`Pipeline` decides what to write next and matches each reply, in
order, to the command it answers, so every message and recipient gets its own outcome.
The socket driver in :mod:`.client` feeds it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
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
    envelope_refusal,
    mail_parameters,
    new_outcome,
    rcpt_parameters,
)
from .replies import Reply
from .results import MessageOutcome


@dataclass
class Transaction:
    """One message to send: its envelope, its content and the outcome being filled in."""

    envelope: Envelope
    content: bytes  # CRLF line endings; emptied once written, so a batch holds little
    outcome: MessageOutcome
    written_at: int = -1  # stream offset where the content ends, once queued
    offered: bool = False  # its commands were handed to the driver
    behind_data: bool = False  # written behind an end of data still unanswered


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


class Step(Enum):
    """What a reply in the pipeline answers."""

    RSET = "RSET"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END = "end of data"  # the final reply: after the content or to BDAT LAST
    EMPTY_END = "empty end of data"  # ends a DATA the server should have refused
    QUIT = "QUIT"  # behind the last transaction, when the session ends with the batch

    @property
    def command(self) -> str:
        """The command's name for :func:`.protocol.answers`."""
        return "END" if self in (Step.END, Step.EMPTY_END) else self.value


@dataclass
class _Awaited:
    step: Step
    transaction: Transaction | None  # None for QUIT
    index: int = 0  # which recipient, for RCPT
    behind_data: bool = False  # written behind an end of data still unanswered


class Pipeline:
    """Transactions in flight on one session, in the order they were written.

    :meth:`offer` gives the commands that start a transaction; :meth:`receive` takes
    each reply and gives what to write next (the content once DATA has its 354), and
    the transaction it finished, if any.

    A transaction starts with RSET only when the one before may have left the server
    mid-transaction: the end of the data ends a transaction whatever its verdict
    (RFC 5321 §4.1.1.4), but a refused DATA or BDAT does not (RFC 3030 §4.2), and
    with CHUNKING the transactions still in flight may yet be refused.
    """

    def __init__(
        self,
        capabilities: Capabilities,
        *,
        chunking: bool,
        reset_first: bool,
        behind_data: bool = True,
    ) -> None:
        self.capabilities = capabilities
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

    @property
    def next_step(self) -> Step:
        """What the next reply will answer."""
        return self._awaited[0].step

    @property
    def can_offer(self) -> bool:
        if self.waiting_for_data or self.quitting:
            return False
        if self.chunking:
            return self._window_open or not self._awaited
        # Behind the end of the data only where the server takes it.
        return self.behind_data or not self._awaited

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

    def offer_quit(self) -> list[Command]:
        """QUIT behind everything written: no transaction may follow it."""
        self._awaited.append(_Awaited(Step.QUIT, None, behind_data=self._data_unanswered()))
        self.quitting = True
        quit_ = command("QUIT")
        self.queued += len(quit_.wire)
        return [quit_]

    @property
    def reset_needed(self) -> bool:
        """Whether the next transaction must start with RSET."""
        return self._reset_next or (self.chunking and bool(self.in_flight))

    def offer(self, transaction: Transaction) -> list[Command]:
        caps, envelope, outcome = self.capabilities, transaction.envelope, transaction.outcome
        transaction.offered = True
        if not self._awaited:
            self._window_open = True
        transaction.behind_data = self._data_unanswered()
        commands: list[Command] = []
        if self.reset_needed:
            commands.append(command("RSET"))
            self._await(Step.RSET, transaction)
        self._reset_next = True  # until the transaction is known to have ended
        params = mail_parameters(caps, envelope, transaction.content)
        commands.append(command("MAIL", f"FROM:<{envelope.sender}>{params}"))
        self._await(Step.MAIL, transaction)
        for i, recipient in enumerate(outcome.recipients):
            address = recipient.address
            params = rcpt_parameters(caps, envelope, address)
            commands.append(command("RCPT", f"TO:<{address}>{params}"))
            self._await(Step.RCPT, transaction, i)
        if self.chunking:
            # If the envelope fails the server refuses the BDAT and throws the bytes
            # away (RFC 3030 §4.2): they are never delivered.
            commands.append(bdat_command(transaction.content))
            self._await(Step.END, transaction)
        else:
            commands.append(command("DATA"))
            self._await(Step.DATA, transaction)
            self.waiting_for_data = True
        self.in_flight.append(transaction)
        return self._written(commands, transaction)

    def receive(self, reply: Reply) -> tuple[list[Command], Transaction | None]:
        """Match ``reply`` to the oldest command without one.

        A server that sends a reply too many shifts every later reply onto the wrong
        command; that shows as soon as a reply cannot answer its command (a 354 to
        anything but DATA, a completion to DATA, a reply to nothing), and raises
        SMTPProtocolError: the session is out of step and must end.
        """
        if not self._awaited:
            raise SMTPOutOfStepError(f"The server sent a reply to no command: {reply}")
        self._window_open = False
        awaited = self._awaited.popleft()
        step = awaited.step
        if awaited.behind_data and self._refused_as_early(awaited, reply):
            return self._refused_behind_data(awaited, reply)
        if not answers(step.command, reply, enhanced=self._enhanced):
            raise SMTPOutOfStepError(f"The server answered {step.value} with {reply}: out of step")
        if awaited.transaction is None:  # QUIT: the session is over, every reply in step
            self.quit_reply = reply
            self._confirm()
            return [], None
        transaction, outcome = awaited.transaction, awaited.transaction.outcome
        if step is Step.MAIL:
            outcome.mail_reply = reply
        elif step is Step.RCPT:
            outcome.recipients[awaited.index].reply = reply
        elif step is Step.DATA:
            outcome.data_reply = reply
            self.waiting_for_data = False
            return self._after_data(transaction, reply)
        elif step is Step.END:
            # After DATA the end was settled by the 354; a BDAT LAST refused (or sent
            # for an envelope nobody took) leaves the transaction open.
            if self.chunking:
                self._reset_next = not (outcome.envelope_accepted and reply.is_positive)
            if outcome.envelope_accepted:
                outcome.final_reply = reply
                if not reply.is_positive:
                    outcome.error = f"message refused: {reply}"
            else:
                outcome.error = envelope_refusal(outcome)  # whatever BDAT got: no one took it
            return [], self._finish(transaction)
        elif step is Step.EMPTY_END:
            return [], self._finish(transaction)
        return [], None

    def _after_data(
        self, transaction: Transaction, reply: Reply
    ) -> tuple[list[Command], Transaction | None]:
        outcome = transaction.outcome
        if reply.code == 354:
            # Only DATA is answered 354: every reply before it answered its own command.
            self._confirm()
        if reply.code != 354:  # the transaction may still be open: RSET before the next
            outcome.error = (
                f"DATA refused: {reply}" if outcome.envelope_accepted else envelope_refusal(outcome)
            )
            return [], self._finish(transaction)
        # What follows the 354 ends the transaction, so the next needs no RSET.
        self._reset_next = False
        if not outcome.envelope_accepted:
            # The server took DATA although nobody can receive the message: end it with
            # no content at all (RFC 2920 §3.1).
            outcome.error = envelope_refusal(outcome)
            self._await(Step.EMPTY_END, transaction)
            end = Command(b".\r\n", ". (ends the DATA the server should have refused)")
            return self._written([end], transaction), None
        self._await(Step.END, transaction)
        return self._written([content_command(transaction.content)], transaction), None

    def _finish(self, transaction: Transaction) -> Transaction:
        # Replies come in order, so the finished transaction is always the oldest.
        finished = self.in_flight.popleft()
        assert finished is transaction
        transaction.content = b""
        transaction.outcome.settle()
        self._unconfirmed.append(transaction)
        return transaction

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

    def _data_unanswered(self) -> bool:
        # Commands written now follow the end of a DATA transaction's content whose
        # verdict has not come yet.
        return not self.chunking and any(a.step is Step.END for a in self._awaited)

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

    def _refused_behind_data(
        self, awaited: _Awaited, reply: Reply
    ) -> tuple[list[Command], Transaction | None]:
        """The server refused a command for coming behind the end of the data before
        its verdict (some do, against SMTP smuggling). Nothing written from there on
        was taken: those transactions are offered again, each after the verdict on
        the one before."""
        self.behind_data = False
        transaction = awaited.transaction
        if transaction is None:  # the QUIT: said again once the verdicts are in
            self.quitting, self.quit_refused = False, True
            return [], None
        if transaction not in self.refused_behind_data:
            self.refused_behind_data.append(transaction)
            self.in_flight.remove(transaction)
            transaction.outcome.reset_replies()
            transaction.offered = False
            # The content of a DATA never answered 354 was never written: still here.
        if awaited.step is Step.DATA:
            self.waiting_for_data = False
        return [], None

    def abort(
        self, sent: int, *, server_closed: bool, out_of_step: bool = False
    ) -> list[Transaction]:
        """The session broke: settle every transaction not yet confirmed, oldest first.

        ``sent`` counts the bytes of :attr:`queued` that went out. A message whose
        whole content was written but whose verdict never came may
        have been queued: UNKNOWN (RFC 1047), unless the server said it was closing
        (421), which answers in order, so nothing after it was taken. The rest were
        not accepted.

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
        self._unconfirmed.clear()
        self.in_flight.clear()
        self._awaited.clear()
        return settled

    def _written(self, commands: list[Command], transaction: Transaction) -> list[Command]:
        # The driver writes exactly what the pipeline gives, in order: so the pipeline
        # knows where in the stream each message's content ends.
        for cmd in commands:
            self.queued += len(cmd.wire)
            if cmd.is_content:
                transaction.written_at = self.queued
                transaction.content = b""  # the command holds the bytes until written
        return commands

    def _await(self, step: Step, transaction: Transaction, index: int = 0) -> None:
        behind = transaction.behind_data and step is not Step.END
        self._awaited.append(_Awaited(step, transaction, index, behind))
