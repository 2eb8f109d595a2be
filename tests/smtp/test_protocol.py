"""The conversation logic, driven with scripted replies: no sockets involved."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import pytest

from django_sockmail.smtp import protocol
from django_sockmail.smtp.envelope import make_envelope
from django_sockmail.smtp.errors import (
    SMTPAuthenticationError,
    SMTPCommandError,
    SMTPHeloError,
    SMTPNotSupportedError,
    SMTPOutOfStepError,
)
from django_sockmail.smtp.replies import Reply, ReplyParser
from django_sockmail.smtp.results import FAILED, PARTIAL, SENT, MessageOutcome
from django_sockmail.smtp.transactions import TransactionEngine, prepare

T = TypeVar("T")


def reply(text: str) -> Reply:
    [parsed] = ReplyParser().feed(text.rstrip("\n").replace("\n", "\r\n").encode() + b"\r\n")
    return parsed


def run(exchange: protocol.Exchange[T], replies: list[str]) -> tuple[T, list[str]]:
    """Run an exchange against scripted replies; return its result and what it sent."""
    sent: list[str] = []
    pending = iter(replies)
    try:
        commands = next(exchange)
        while True:
            sent.extend(c.display or "<content>" for c in commands)
            commands = exchange.send([reply(next(pending)) for _ in commands])
    except StopIteration as stop:
        return stop.value, sent


CAPS = protocol.Capabilities.from_ehlo(
    reply("250-mx.example\n250-SIZE 1000\n250-8BITMIME\n250-AUTH PLAIN LOGIN\n250 STARTTLS\n")
)
ENVELOPE = make_envelope("from@example.org", ["a@example.org", "b@example.org"])
CONTENT = b"Subject: hi\r\n\r\nbody\r\n"


def one_at_a_time(
    caps: protocol.Capabilities,
    content: bytes,
    replies: list[str],
    *,
    reset_first: bool = False,
    chunking: bool = False,
) -> tuple[MessageOutcome, list[str]]:
    """One transaction through the engine without PIPELINING, against scripted
    replies: its outcome and what was sent, a command at a time."""
    engine = TransactionEngine(caps, pipelining=False, chunking=chunking, reset_first=reset_first)
    transaction = prepare(caps, ENVELOPE, content)
    sent: list[str] = []
    commands, done, pending = engine.offer(transaction), None, iter(replies)
    while done is None:
        assert len(commands) == 1  # never more than one command awaits its reply
        sent.extend(c.display or "<content>" for c in commands)
        commands, done = engine.receive(reply(next(pending)))
    assert next(pending, None) is None and not engine.awaiting
    return transaction.outcome, sent


def transaction(
    replies: list[str], *, reset_first: bool = False
) -> tuple[MessageOutcome, list[str]]:
    return one_at_a_time(CAPS, CONTENT, replies, reset_first=reset_first)


def test_capabilities_from_ehlo() -> None:
    assert CAPS.esmtp and CAPS.has("starttls") and CAPS.has("8BITMIME")
    assert CAPS.auth_mechanisms == ["PLAIN", "LOGIN"]
    assert CAPS.size_limit == 1000


def test_ehlo_falls_back_to_helo() -> None:
    caps, sent = run(protocol.hello("client.example"), ["502 no", "250 hi"])
    assert sent == ["EHLO client.example", "HELO client.example"]
    assert not caps.esmtp and caps.extensions == {}


def test_ehlo_and_helo_refused() -> None:
    with pytest.raises(SMTPHeloError) as info:
        run(protocol.hello("c"), ["502 no", "504 no"])
    assert info.value.smtp_code == 504


def test_control_characters_never_reach_a_command() -> None:
    with pytest.raises(ValueError):
        run(protocol.hello("c\r\nMAIL FROM:<x@y>"), [])


def test_starttls_needs_the_capability_and_a_220() -> None:
    with pytest.raises(SMTPNotSupportedError):
        run(protocol.starttls(protocol.Capabilities()), [])
    with pytest.raises(SMTPCommandError) as info:
        run(protocol.starttls(CAPS), ["454 TLS not available"])
    assert info.value.smtp_code == 454
    assert run(protocol.starttls(CAPS), ["220 go ahead"]) == (None, ["STARTTLS"])


def test_auth_plain_is_redacted() -> None:
    _, sent = run(protocol.authenticate(CAPS, protocol.Credentials("alice", "s3cret")), ["235 ok"])
    assert sent == ["AUTH PLAIN ********"]


def test_auth_login_lines_are_redacted() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"AUTH": "LOGIN"})
    _, sent = run(
        protocol.authenticate(caps, protocol.Credentials("alice", "s3cret")),
        ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 ok"],
    )
    assert sent == ["AUTH LOGIN", "********", "********"]


def test_auth_cram_md5_is_preferred_and_answers_the_challenge() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"AUTH": "PLAIN LOGIN CRAM-MD5"})
    # RFC 2195's example: the digest of this challenge under "tanstaaftanstaaf".
    challenge = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    exchange = protocol.authenticate(caps, protocol.Credentials("tim", "tanstaaftanstaaf"))
    assert next(exchange)[0].display == "AUTH CRAM-MD5"
    [answer] = exchange.send([reply(f"334 {challenge}")])
    assert answer.display == "********"
    assert answer.wire == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"
    with pytest.raises(StopIteration):
        exchange.send([reply("235 ok")])


def test_auth_refused() -> None:
    with pytest.raises(SMTPAuthenticationError) as info:
        run(
            protocol.authenticate(CAPS, protocol.Credentials("alice", "wrong")),
            ["535 5.7.8 bad credentials"],
        )
    assert info.value.smtp_code == 535


def test_auth_xoauth2_is_chosen_with_a_token_and_redacted() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"AUTH": "PLAIN LOGIN XOAUTH2"})
    credentials = protocol.Credentials("alice@example.org", oauth2_token="ya29.token")
    exchange = protocol.authenticate(caps, credentials)
    [first] = next(exchange)
    assert first.display == "AUTH XOAUTH2 ********"
    expected = base64.b64encode(b"user=alice@example.org\x01auth=Bearer ya29.token\x01\x01")
    assert first.wire == b"AUTH XOAUTH2 " + expected + b"\r\n"
    # A refused token: the server sends a base64 JSON report; the client answers empty.
    [empty] = exchange.send([reply("334 eyJzdGF0dXMiOiI0MDEifQ==")])
    assert empty.wire == b"\r\n"
    with pytest.raises(SMTPAuthenticationError):
        exchange.send([reply("535 5.7.8 token expired")])


def test_auth_strongest_offered_unless_pinned() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"AUTH": "LOGIN PLAIN CRAM-MD5"})
    password = protocol.Credentials("u", "p")
    assert protocol.choose_mechanism(caps, password) == "CRAM-MD5"
    pinned = protocol.Credentials("u", "p", mechanism="login")
    assert protocol.choose_mechanism(caps, pinned) == "LOGIN"
    with pytest.raises(SMTPNotSupportedError, match="XOAUTH2"):
        protocol.choose_mechanism(caps, protocol.Credentials("u", "p", mechanism="XOAUTH2"))
    with pytest.raises(ValueError):
        protocol.choose_mechanism(caps, protocol.Credentials("u", "p", mechanism="NTLM"))
    # Without a token XOAUTH2 is never chosen; with one, only XOAUTH2 is.
    oauth = protocol.Capabilities(esmtp=True, extensions={"AUTH": "XOAUTH2 PLAIN"})
    assert protocol.choose_mechanism(oauth, password) == "PLAIN"
    token = protocol.Credentials("u", oauth2_token="t")
    assert protocol.choose_mechanism(oauth, token) == "XOAUTH2"
    with pytest.raises(SMTPNotSupportedError):
        protocol.choose_mechanism(caps, token)


def test_credentials_never_show_in_repr() -> None:
    text = repr(protocol.Credentials("alice", "s3cret", oauth2_token="tok3n"))
    assert "alice" in text and "s3cret" not in text and "tok3n" not in text


def test_auth_needs_a_mechanism_we_know() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"AUTH": "GSSAPI"})
    with pytest.raises(SMTPNotSupportedError):
        run(protocol.authenticate(caps, protocol.Credentials("alice", "pw")), [])


def test_transaction_sends_size_and_every_recipient() -> None:
    outcome, sent = transaction(["250 ok", "250 ok", "250 ok", "354 go", "250 queued as ABC"])
    assert sent == [
        f"MAIL FROM:<from@example.org> SIZE={len(CONTENT)}",
        "RCPT TO:<a@example.org>",
        "RCPT TO:<b@example.org>",
        "DATA",
        "<content>",
    ]
    assert outcome.status == SENT
    assert outcome.queue_id == "ABC"


def test_rset_first_when_asked() -> None:
    _, sent = transaction(["250", "250", "250", "250", "354", "250"], reset_first=True)
    assert sent[0] == "RSET"


def test_one_recipient_refused_still_sends_to_the_other() -> None:
    outcome, sent = transaction(["250", "550 5.1.1 unknown", "250", "354", "250 ok"])
    assert sent[-1] == "<content>"
    assert outcome.status == PARTIAL
    assert list(outcome.refused_recipients) == ["a@example.org"]
    assert outcome.accepted_recipients == ["b@example.org"]


def test_sender_refused_resets_and_sends_nothing_more() -> None:
    outcome, sent = transaction(["553 no", "250 reset"])
    assert sent == [f"MAIL FROM:<from@example.org> SIZE={len(CONTENT)}", "RSET"]
    assert outcome.status == FAILED


def test_every_recipient_refused_resets_without_data() -> None:
    outcome, sent = transaction(["250", "550 no", "450 later", "250 reset"])
    assert sent[-1] == "RSET" and "DATA" not in sent
    assert outcome.status == FAILED


def test_data_refused_resets() -> None:
    outcome, sent = transaction(["250", "250", "250", "554 no data", "250 reset"])
    assert sent[-1] == "RSET" and "<content>" not in sent
    assert outcome.status == FAILED


def test_content_refused() -> None:
    outcome, _ = transaction(["250", "250", "250", "354", "552 too big"])
    assert outcome.status == FAILED
    assert outcome.queue_id == ""


def test_8bit_content_asks_for_8bitmime_and_utf8_address_for_smtputf8() -> None:
    caps = protocol.Capabilities(esmtp=True, extensions={"8BITMIME": "", "SMTPUTF8": ""})
    envelope = make_envelope("jörg@example.org", ["a@example.org"])
    content = "Subject: é\r\n\r\nçà\r\n".encode()
    assert protocol.mail_parameters(caps, envelope, content) == " BODY=8BITMIME SMTPUTF8"


def test_utf8_address_refused_locally_without_smtputf8() -> None:
    envelope = make_envelope("jörg@example.org", ["a@example.org"])
    with pytest.raises(SMTPNotSupportedError):
        protocol.check_message(CAPS, envelope, CONTENT)


def test_message_over_the_size_limit_refused_locally() -> None:
    with pytest.raises(SMTPNotSupportedError, match="at most 1000"):
        protocol.check_message(CAPS, ENVELOPE, b"x" * 1001)


def test_old_style_auth_equals_line_is_understood() -> None:
    caps = protocol.Capabilities.from_ehlo(
        reply("250-mx.example\n250-AUTH=LOGIN PLAIN\n250 AUTH CRAM-MD5\n")
    )
    assert sorted(caps.auth_mechanisms) == ["CRAM-MD5", "LOGIN", "PLAIN"]


def test_a_3xx_reply_to_rcpt_is_another_commands_reply() -> None:
    # Only DATA (and AUTH) is answered 354: the replies are out of step.
    with pytest.raises(SMTPOutOfStepError, match="answered RCPT with 354"):
        transaction(["250", "354 ?", "250", "354", "250 ok"])


CHUNKING = protocol.Capabilities.from_ehlo(reply("250-mx.example\n250 CHUNKING\n"))
DOTTED = b"Subject: d\r\n\r\n.leading dot\r\n"


def bdat(replies: list[str]) -> tuple[MessageOutcome, list[str]]:
    return one_at_a_time(CHUNKING, DOTTED, replies, chunking=True)


def test_bdat_sends_exact_bytes_without_dot_stuffing() -> None:
    command = protocol.bdat_command(DOTTED)
    assert command.wire == f"BDAT {len(DOTTED)} LAST\r\n".encode() + DOTTED
    assert b".." not in command.wire and not command.wire.endswith(b".\r\n")


def test_bdat_without_pipelining_waits_for_each_reply() -> None:
    outcome, sent = bdat(["250", "250", "250", "250 ok"])
    assert sent[-1] == f"BDAT {len(DOTTED)} LAST" and outcome.status == SENT


def test_bdat_refused_content_resets() -> None:
    outcome, sent = bdat(["250", "250", "250", "552 too big", "250"])
    assert sent[-1] == "RSET" and outcome.status == FAILED


def test_dsn_parameters_only_when_offered() -> None:
    from django_sockmail.smtp.envelope import DSN, xtext

    dsn = DSN(notify=("success", "FAILURE"), ret="hdrs", envid="order+42=ok x")
    envelope = make_envelope("from@example.org", ["a@example.org"], dsn)
    offered = protocol.Capabilities(esmtp=True, extensions={"DSN": ""})
    assert protocol.mail_parameters(offered, envelope, CONTENT) == (
        " RET=HDRS ENVID=order+2B42+3Dok+20x"
    )
    assert protocol.rcpt_parameters(offered, envelope, "a@example.org") == (
        " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.org"
    )
    silent = protocol.Capabilities(esmtp=True, extensions={})
    assert protocol.mail_parameters(silent, envelope, CONTENT) == ""
    assert protocol.rcpt_parameters(silent, envelope, "a@example.org") == ""
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


@pytest.mark.parametrize(
    "bad",
    [
        {"notify": ("NEVER", "SUCCESS")},
        {"notify": ("SOMETIMES",)},
        {"ret": "BODY"},
        {"envid": "x" * 101},
    ],
)
def test_bad_dsn_requests_are_value_errors(bad: dict[str, Any]) -> None:
    from django_sockmail.smtp.envelope import DSN

    with pytest.raises(ValueError):
        DSN(**bad)


def ehlo_with(*lines: str) -> protocol.Capabilities:
    return protocol.Capabilities.from_ehlo(Reply(250, ("mx.example", *lines)))


@pytest.mark.parametrize(
    "size",
    [
        pytest.param("²", id="superscript-two"),  # str.isdigit() is True, int() refuses it
        pytest.param("\u0661\u0660\u0660\u0660", id="arabic-indic-digits"),  # int(): 1000
        pytest.param("9" * 5000, id="over-int-max-str-digits"),
        pytest.param("9" * 21, id="over-twenty-digits"),
        pytest.param("10M", id="not-a-number"),
        pytest.param("0", id="zero-declares-no-limit"),
        pytest.param("", id="no-value"),
    ],
)
def test_a_size_that_is_no_ascii_number_declares_no_limit(size: str) -> None:
    # The server offered SIZE but named no limit we can hold it to: nothing is refused
    # locally for its size, and SIZE= is still declared on MAIL (RFC 1870).
    caps = ehlo_with(f"SIZE {size}")
    assert caps.size_limit is None
    protocol.check_message(caps, ENVELOPE, b"x" * 10_000)
    assert f"SIZE={len(CONTENT)}" in protocol.mail_parameters(caps, ENVELOPE, CONTENT)


def test_the_largest_size_read_is_twenty_digits() -> None:
    assert ehlo_with("SIZE " + "9" * 20).size_limit == 10**20 - 1
    assert ehlo_with("SIZE 00001000").size_limit == 1000


def test_keywords_and_mechanisms_are_matched_in_ascii_only() -> None:
    # str.upper() maps a long s to "S" and a dotless i to "I": such names are no
    # keyword or mechanism the server offered.
    caps = ehlo_with("\u017fIZE 1000", "\u017fTARTTLS", "AUTH PLA\u0131N LOGIN")
    assert not caps.has("SIZE") and caps.size_limit is None
    assert not caps.has("STARTTLS")
    assert caps.auth_mechanisms == ["LOGIN"]
