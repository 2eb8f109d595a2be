"""Transactions back to back (RFC 2920, RFC 3030), driven with scripted replies: what
goes out in each write, and which reply lands on which message and recipient."""

from __future__ import annotations

import pytest

from django_sockmail.smtp import protocol
from django_sockmail.smtp.envelope import make_envelope
from django_sockmail.smtp.errors import SMTPOutOfStepError
from django_sockmail.smtp.protocol import answers
from django_sockmail.smtp.results import DEFERRED, FAILED, NOT_SENT, PARTIAL, SENT, UNKNOWN
from django_sockmail.smtp.transactions import (
    TRANSITIONS,
    Step,
    Transaction,
    TransactionEngine,
    prepare,
)
from tests.smtp.test_protocol import reply

DATA_ONLY = protocol.Capabilities.from_ehlo(reply("250-mx.example\n250 PIPELINING\n"))
CHUNKING = protocol.Capabilities.from_ehlo(reply("250-mx.example\n250-PIPELINING\n250 CHUNKING\n"))
CONTENT = b"Subject: hi\r\n\r\n.body\r\n"
END = ". (ends the DATA the server should have refused)"


def message(*to: str) -> Transaction:
    return prepare(DATA_ONLY, make_envelope("from@example.org", list(to)), CONTENT)


def drive(
    transactions: list[Transaction], replies: list[str], *, chunking: bool = False
) -> tuple[TransactionEngine, list[list[str]], list[Transaction]]:
    """Run a pipeline as the socket driver does: offer all it can take, then feed one
    reply at a time. Returns the writes (what was queued between two reads, one list
    each) and the transactions in the order they finished."""
    pipeline = TransactionEngine(
        CHUNKING if chunking else DATA_ONLY, chunking=chunking, reset_first=False
    )
    pending, writes, finished = iter(transactions), [[]], []  # type: ignore[var-annotated]
    for text in [*replies, None]:
        while pipeline.can_offer and (offered := next(pending, None)) is not None:
            writes[-1] += [c.display or "<content>" for c in pipeline.offer(offered)]
        if text is None or not pipeline.in_flight:
            break
        commands, done = pipeline.receive(reply(text))
        if writes[-1]:
            writes.append([])
        writes[-1] += [c.display or "<content>" for c in commands]
        if done is not None:
            finished.append(done)
    return pipeline, [w for w in writes if w], finished


MAIL = "MAIL FROM:<from@example.org>"


def test_the_next_envelope_follows_the_content_without_waiting() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = [
        "250",
        "250",
        "354",
        "250 queued as A",
        "250",
        "250",
        "354",
        "250 queued as B",
    ]
    _, writes, finished = drive([a, b], replies)
    assert writes == [
        [MAIL, "RCPT TO:<a@x.org>", "DATA"],
        # One write, and no RSET: the end of a's data ends its transaction, whatever
        # the verdict (RFC 5321 §4.1.1.4).
        ["<content>", MAIL, "RCPT TO:<b@x.org>", "DATA"],
        ["<content>"],
    ]
    assert finished == [a, b]
    assert [a.outcome.queue_id, b.outcome.queue_id] == ["A", "B"]
    assert a.content == b"" and b.content == b""  # nothing kept once written


def test_each_recipient_gets_its_own_reply() -> None:
    t = message("a@x.org", "b@x.org", "c@x.org")
    drive([t], ["250", "250", "550 5.1.1 no", "250", "354", "250 ok"])
    assert [r.accepted for r in t.outcome.recipients] == [True, False, True]
    assert t.outcome.status == PARTIAL


def test_every_recipient_refused_means_no_content_and_the_next_one_resets() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = ["250", "550 no", "554 no valid recipients", "250", "250", "250", "354", "250 ok"]
    _, writes, finished = drive([a, b], replies)
    assert writes[1] == ["RSET", MAIL, "RCPT TO:<b@x.org>", "DATA"]
    assert "<content>" not in writes[0] + writes[1]
    assert a.outcome.status == FAILED and a.outcome.error == "every recipient refused"
    assert b.outcome.status == SENT and finished == [a, b]


def test_a_354_to_an_envelope_nobody_can_receive_gets_an_empty_data() -> None:
    a = message("a@x.org")
    _, writes, finished = drive([a], ["250", "550 no", "354 go", "250 empty"])
    assert writes[1] == [END]
    assert a.outcome.status == FAILED and a.outcome.final_reply is None and finished == [a]


def test_sender_refused() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = ["553 no", "503 no", "503 no", "250", "250", "250", "354", "250 ok"]
    _, writes, _ = drive([a, b], replies)
    assert "sender refused" in a.outcome.error and a.outcome.status == FAILED
    assert writes[1][0] == "RSET" and b.outcome.status == SENT


def test_data_refused() -> None:
    a = message("a@x.org")
    drive([a], ["250", "250", "451 4.3.0 later"])
    assert a.outcome.status == DEFERRED and a.outcome.error.startswith("DATA refused: 451")


def test_content_refused_does_not_stop_the_next_message() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = ["250", "250", "354", "552 too big", "250", "250", "354", "250 ok"]
    _, writes, _ = drive([a, b], replies)
    assert writes[1] == ["<content>", MAIL, "RCPT TO:<b@x.org>", "DATA"]  # no RSET needed
    assert a.outcome.status == FAILED and b.outcome.status == SENT


def test_with_chunking_the_whole_batch_is_one_write() -> None:
    batch = [message(f"{n}@x.org") for n in "abc"]
    bdat = f"BDAT {len(CONTENT)} LAST"
    replies = ["250", "250", "250 A"] + ["250", "250", "250", "250 B"] + ["250"] * 3 + ["250 C"]
    _, writes, finished = drive(batch, replies, chunking=True)
    a, b, c = ([MAIL, f"RCPT TO:<{n}@x.org>", bdat] for n in "abc")
    assert writes == [[*a, "RSET", *b, "RSET", *c]]
    assert finished == batch and all(t.outcome.status == SENT for t in batch)


def test_a_refused_bdat_envelope_is_no_delivery_and_the_rest_go_on() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = ["250", "550 no", "554 no valid recipients", "250", "250", "250", "250 ok"]
    drive([a, b], replies, chunking=True)
    assert a.outcome.status == FAILED and a.outcome.final_reply is None
    assert b.outcome.status == SENT


def test_abort_after_a_disconnect_tells_unknown_from_not_sent() -> None:
    batch = [message(f"{n}@x.org") for n in "abcd"]
    pipeline, _, finished = drive(batch, ["250", "250", "250 A", "250", "250"], chunking=True)
    assert finished == [batch[0]]
    written = batch[2].written_at  # c went out whole; d only in part
    unsettled = pipeline.abort(written, server_closed=False)
    assert unsettled == batch[1:]
    assert [t.outcome.status for t in batch] == [SENT, UNKNOWN, UNKNOWN, NOT_SENT]


def test_abort_after_421_knows_nothing_later_was_taken() -> None:
    batch = [message(f"{n}@x.org") for n in "ab"]
    pipeline, _, _ = drive(batch, ["250", "250"], chunking=True)
    pipeline.receive(reply("421 4.3.2 shutting down"))  # the answer to a's BDAT
    pipeline.abort(pipeline.queued, server_closed=True)
    assert [t.outcome.status for t in batch] == [DEFERRED, NOT_SENT]


def test_abort_never_calls_a_refused_envelope_unknown() -> None:
    a = message("a@x.org")
    pipeline, _, _ = drive([a], ["250", "550 no"], chunking=True)
    pipeline.abort(pipeline.queued, server_closed=False)
    assert a.outcome.status == FAILED


def test_4xx_and_5xx_refusals_are_told_apart() -> None:
    cases = {
        ("450 4.2.0 mailbox busy",): DEFERRED,
        ("550 5.1.1 no such user",): FAILED,
        ("450 4.2.0 busy", "550 5.1.1 no such user"): FAILED,  # a retry cannot reach both
        ("451 4.7.1 greylisted", "452 4.2.2 over quota"): DEFERRED,
    }
    for refusals, status in cases.items():
        t = message(*[f"{n}@x.org" for n in range(len(refusals))])
        drive([t], ["250", *refusals, "554 no valid recipients"])
        assert t.outcome.status == status, refusals
        assert t.outcome.failure_reply is not None
    partial = message("a@x.org", "b@x.org")
    drive([partial], ["250", "250", "452 4.2.2 over quota", "354", "250 ok"])
    assert partial.outcome.status == PARTIAL
    assert partial.outcome.deferred_recipients == ["b@x.org"]
    assert partial.outcome.recipients[1].reply.enhanced_status == "4.2.2"  # type: ignore[union-attr]


def test_a_reply_out_of_step_is_a_protocol_error() -> None:
    import pytest

    from django_sockmail.smtp.errors import SMTPProtocolError

    for replies in (["250", "250", "250"], ["354"]):  # a completion to DATA; 354 to MAIL
        with pytest.raises(SMTPProtocolError, match="out of step"):
            drive([message("a@x.org")], replies)
    pipeline, _, _ = drive([message("a@x.org")], ["250", "250", "354", "250"])
    with pytest.raises(SMTPProtocolError, match="a reply to no command"):
        pipeline.receive(reply("250 one too many"))


# When a transaction starts with RSET: only when the one before may have been left open.


def test_after_a_354_the_next_starts_with_mail_before_the_verdict_on_the_content() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    pipeline, writes, finished = drive([a, b], ["250", "250", "354"])
    # What follows a 354 ends the transaction whatever its verdict (RFC 5321
    # §4.1.1.4): b goes out right behind a's content, without an RSET, although a's
    # verdict has not come.
    assert writes == [
        [MAIL, "RCPT TO:<a@x.org>", "DATA"],
        ["<content>", MAIL, "RCPT TO:<b@x.org>", "DATA"],
    ]
    assert finished == [] and list(pipeline.in_flight) == [a, b]


def test_after_a_354_nothing_is_left_open_even_while_the_verdict_is_awaited() -> None:
    a = message("a@x.org")
    pipeline, _, _ = drive([a], ["250", "250", "354"])
    assert list(pipeline.in_flight) == [a]  # the verdict on the content is still to come
    assert not pipeline.reset_needed
    pipeline.receive(reply("554 5.7.1 rejected"))
    assert a.outcome.status == FAILED and not pipeline.reset_needed  # refused, yet ended
    assert pipeline.offer(message("b@x.org"))[0].display == MAIL


def test_after_a_refused_data_the_next_starts_with_rset() -> None:
    for refusal in ("554 5.5.1 no", "451 4.3.0 later"):
        a, b = message("a@x.org"), message("b@x.org")
        replies = ["250", "250", refusal, "250", "250", "250", "354", "250 ok"]
        _, writes, finished = drive([a, b], replies)
        # The recipient was accepted, DATA was not: the transaction may still be open.
        assert writes[1] == ["RSET", MAIL, "RCPT TO:<b@x.org>", "DATA"], refusal
        assert a.outcome.error.startswith(f"DATA refused: {refusal[:3]}")
        assert b.outcome.status == SENT and finished == [a, b]
        pipeline, _, _ = drive([message("a@x.org")], ["250", "250", refusal])
        assert not pipeline.in_flight and pipeline.reset_needed, refusal


def test_after_a_354_to_an_envelope_nobody_took_the_next_starts_with_mail() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    replies = ["250", "550 no", "354 go", "250 empty", "250", "250", "354", "250 ok"]
    _, writes, finished = drive([a, b], replies)
    # The bare "." ends the transaction like any end of data: no RSET after it.
    assert writes[1] == [END, MAIL, "RCPT TO:<b@x.org>", "DATA"]
    assert a.outcome.status == FAILED and b.outcome.status == SENT and finished == [a, b]


def test_with_chunking_a_transaction_offered_behind_one_in_flight_starts_with_rset() -> None:
    pipeline = TransactionEngine(CHUNKING, chunking=True, reset_first=False)
    a, b, c = message("a@x.org"), message("b@x.org"), message("c@x.org")
    assert pipeline.offer(a)[0].display == MAIL
    # a's BDAT may yet be refused, which would leave its transaction open (RFC 3030
    # §4.2): b cannot wait to know, so it starts with RSET.
    assert pipeline.reset_needed
    assert [cmd.display for cmd in pipeline.offer(b)][:2] == ["RSET", MAIL]
    # a is accepted, but b is still in flight: c starts with RSET all the same.
    for text in ("250", "250", "250 A"):
        pipeline.receive(reply(text))
    assert a.outcome.status == SENT and list(pipeline.in_flight) == [b]
    assert pipeline.reset_needed
    assert [cmd.display for cmd in pipeline.offer(c)][:2] == ["RSET", MAIL]


def test_with_chunking_bdat_last_accepted_leaves_nothing_open() -> None:
    batch = [message("a@x.org"), message("b@x.org")]
    replies = ["250", "250", "250 A", "250", "250", "250", "250 B"]  # b: RSET, MAIL, ...
    pipeline, writes, finished = drive(batch, replies, chunking=True)
    assert writes[0][3] == "RSET"  # b was offered while a was in flight
    assert finished == batch and not pipeline.in_flight
    assert not pipeline.reset_needed
    assert pipeline.offer(message("c@x.org"))[0].display == MAIL


def test_with_chunking_a_refused_bdat_leaves_the_transaction_open() -> None:
    a = message("a@x.org")
    pipeline, _, finished = drive([a], ["250", "250", "554 5.7.1 rejected"], chunking=True)
    assert finished == [a] and a.outcome.status == FAILED and not pipeline.in_flight
    assert pipeline.reset_needed
    assert [c.display for c in pipeline.offer(message("b@x.org"))][:2] == ["RSET", MAIL]


def test_with_chunking_a_refused_envelope_leaves_the_transaction_open() -> None:
    a = message("a@x.org", "b@x.org")
    replies = ["250", "550 5.1.1 no", "550 5.1.1 no", "554 5.5.1 no valid recipients"]
    pipeline, _, finished = drive([a], replies, chunking=True)
    assert finished == [a] and a.outcome.error == "every recipient refused"
    assert not pipeline.in_flight and pipeline.reset_needed


# QUIT behind the last transaction, when the session ends with the batch.


def test_after_offer_quit_no_transaction_may_be_offered() -> None:
    a = message("a@x.org")
    pipeline, writes, _ = drive([a], ["250", "250", "354"])
    assert pipeline.can_offer and not pipeline.quitting
    quit_ = pipeline.offer_quit()
    assert [c.wire for c in quit_] == [b"QUIT\r\n"] and [c.display for c in quit_] == ["QUIT"]
    assert pipeline.quitting and not pipeline.can_offer  # the driver offers nothing more
    assert pipeline.awaiting and not pipeline.quit_answered
    # QUIT is counted in what was handed to the driver, behind a's content.
    assert pipeline.queued == a.written_at + len(b"QUIT\r\n")
    assert writes[-1] == ["<content>"]


def test_with_chunking_quit_follows_the_last_bdat_in_the_same_write() -> None:
    pipeline = TransactionEngine(CHUNKING, chunking=True, reset_first=False)
    a, b = message("a@x.org"), message("b@x.org")
    written = [c.display for t in (a, b) for c in pipeline.offer(t)]
    assert pipeline.can_offer  # with BDAT nothing waits for a 354
    written += [c.display for c in pipeline.offer_quit()]
    bdat = f"BDAT {len(CONTENT)} LAST"
    a_, b_ = ([MAIL, f"RCPT TO:<{n}@x.org>", bdat] for n in "ab")
    assert written == [*a_, "RSET", *b_, "QUIT"]
    assert not pipeline.can_offer and pipeline.quitting
    assert [pipeline.next_step] == [Step.MAIL]  # the replies still come in order


def test_the_reply_to_quit_is_kept_and_finishes_no_transaction() -> None:
    a = message("a@x.org")
    pipeline, _, _ = drive([a], ["250", "250", "354"])
    pipeline.offer_quit()
    commands, done = pipeline.receive(reply("250 2.0.0 queued as A"))
    assert commands == [] and done is a and a.outcome.status == SENT
    assert pipeline.next_step is Step.QUIT
    commands, done = pipeline.receive(reply("221 2.0.0 Bye"))
    assert commands == [] and done is None
    assert pipeline.quit_reply == reply("221 2.0.0 Bye") and pipeline.quit_answered
    assert not pipeline.awaiting and not pipeline.in_flight
    assert a.outcome.status == SENT and a.outcome.queue_id == "A"  # untouched by the QUIT


def test_only_221_answers_quit() -> None:
    # Any other reply is the last command's, taken for QUIT's: a reply too many before.
    import pytest

    for text in ("421 4.3.2 shutting down", "500 5.5.1 what", "250 2.0.0 Ok"):
        pipeline = TransactionEngine(DATA_ONLY, chunking=False, reset_first=False)
        pipeline.offer_quit()
        with pytest.raises(SMTPOutOfStepError, match="answered QUIT"):
            pipeline.receive(reply(text))
    pipeline = TransactionEngine(DATA_ONLY, chunking=False, reset_first=False)
    pipeline.offer_quit()
    assert pipeline.receive(reply("221 2.0.0 Bye")) == ([], None)
    assert pipeline.quit_reply is not None and pipeline.quit_reply.code == 221


def test_a_354_answering_quit_is_out_of_step() -> None:
    import pytest

    from django_sockmail.smtp.errors import SMTPProtocolError

    a = message("a@x.org")
    pipeline, _, _ = drive([a], ["250", "250", "354", "250 ok"])
    pipeline.offer_quit()
    with pytest.raises(SMTPProtocolError, match="answered QUIT with 354 go: out of step"):
        pipeline.receive(reply("354 go"))
    assert not pipeline.quit_answered


def test_a_reply_after_the_reply_to_quit_answers_no_command() -> None:
    import pytest

    from django_sockmail.smtp.errors import SMTPProtocolError

    pipeline = TransactionEngine(DATA_ONLY, chunking=False, reset_first=False)
    pipeline.offer_quit()
    pipeline.receive(reply("221 bye"))
    with pytest.raises(SMTPProtocolError, match="a reply to no command"):
        pipeline.receive(reply("250 one too many"))


def test_only_quit_left_once_every_transaction_has_its_verdict() -> None:
    a = message("a@x.org")
    pipeline, _, _ = drive([a], ["250", "250", "354"])
    assert not pipeline.only_quit_left  # nothing finished, and no QUIT yet
    pipeline.offer_quit()
    assert not pipeline.only_quit_left  # a's verdict is still to come
    pipeline.receive(reply("250 ok"))
    assert pipeline.only_quit_left and pipeline.awaiting
    pipeline.receive(reply("221 bye"))
    assert pipeline.only_quit_left and not pipeline.awaiting


def test_only_quit_left_with_chunking_waits_for_the_last_verdict() -> None:
    pipeline = TransactionEngine(CHUNKING, chunking=True, reset_first=False)
    a, b = message("a@x.org"), message("b@x.org")
    pipeline.offer(a)
    pipeline.offer(b)
    pipeline.offer_quit()
    left = []
    # a: MAIL, RCPT, BDAT; b: RSET, MAIL, RCPT, BDAT (refused); then QUIT.
    for text in ["250", "250", "250 A", "250", "250", "250", "554 5.7.1 no", "221 bye"]:
        pipeline.receive(reply(text))
        left.append(pipeline.only_quit_left)
    assert left == [False] * 6 + [True, True]
    assert [a.outcome.status, b.outcome.status] == [SENT, FAILED]


def test_no_quit_is_only_quit_left_without_quit() -> None:
    # A batch that keeps its session: nothing in flight is not "only QUIT left".
    pipeline, _, finished = drive([message("a@x.org")], ["250", "250", "354", "250 ok"])
    assert len(finished) == 1 and not pipeline.in_flight
    assert not pipeline.quitting and not pipeline.only_quit_left and not pipeline.awaiting


def test_abort_with_quit_in_flight_settles_the_transactions_as_before() -> None:
    a, b = message("a@x.org"), message("b@x.org")
    pipeline, _, _ = drive([a, b], ["250", "250", "354", "250 A", "250", "250", "354"])
    pipeline.offer_quit()  # behind b's content, in the same write
    unsettled = pipeline.abort(pipeline.queued, server_closed=False)
    assert unsettled == [b] and b.outcome.status == UNKNOWN and a.outcome.status == SENT
    assert not pipeline.awaiting


# The table and the rule of which reply can answer which command agree: every reply
# that can answer a step has a transition, and no transition is for a reply that cannot.
ANY_REPLY = ["220 hi", "221 bye", "235 ok", "250 ok", "251 forwarded", "334 go on", "354 go"]
ANY_REPLY += ["421 closing", "450 later", "503 sequence", "550 no", "554 no"]


@pytest.mark.parametrize("step", [s for s in Step if s is not Step.QUIT], ids=lambda s: s.name)
def test_the_transition_table_covers_exactly_the_replies_that_answer_a_step(step: Step) -> None:
    for text in ANY_REPLY:
        parsed = reply(text)
        code = parsed.code
        kind = "354" if code == 354 else f"{code // 100}xx" if code < 400 else "4xx/5xx"
        listed = (step, kind)
        assert (listed in TRANSITIONS) == answers(step.command, parsed, enhanced=False), text


def test_one_at_a_time_a_refused_sender_ends_the_transaction_with_rset_at_once() -> None:
    engine = TransactionEngine(DATA_ONLY, pipelining=False, chunking=False, reset_first=False)
    a = message("a@x.org", "b@x.org")
    assert [c.display for c in engine.offer(a)] == [MAIL]
    assert not engine.can_offer  # nothing more until MAIL has its reply
    commands, done = engine.receive(reply("550 5.7.1 no"))
    assert [c.display for c in commands] == ["RSET"] and done is None
    commands, done = engine.receive(reply("250 ok"))
    assert commands == [] and done is a and a.outcome.status == FAILED
    assert a.outcome.error == "sender refused: 550 5.7.1 no"
    assert not engine.reset_needed and engine.can_offer


def test_pipelined_a_refused_sender_waits_for_the_replies_already_asked_for() -> None:
    a = message("a@x.org")
    _, writes, finished = drive([a], ["550 5.7.1 no", "503 no sender", "503 no recipient"])
    assert writes == [[MAIL, "RCPT TO:<a@x.org>", "DATA"]]
    assert finished == [a] and a.outcome.status == FAILED
    assert a.outcome.error == "sender refused: 550 5.7.1 no"
