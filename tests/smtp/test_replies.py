import pytest

from django_sockmail.smtp.errors import SMTPProtocolError
from django_sockmail.smtp.protocol import Capabilities
from django_sockmail.smtp.replies import (
    KEPT_LINE_BYTES,
    KEPT_LINES,
    KEPT_TEXT_BYTES,
    MAX_LINES,
    Reply,
    ReplyParser,
)

EHLO = b"250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"


def test_single_line_reply() -> None:
    [reply] = ReplyParser().feed(b"220 mail.example.org ESMTP ready\r\n")
    assert reply == Reply(220, ("mail.example.org ESMTP ready",))


def test_multi_line_reply_fed_one_byte_at_a_time() -> None:
    parser = ReplyParser()
    replies = [r for i in range(len(EHLO)) for r in parser.feed(EHLO[i : i + 1])]
    assert replies == [Reply(250, ("mail.example.org", "PIPELINING", "SIZE 1000", "8BITMIME"))]
    assert not parser.in_reply


def test_several_replies_in_one_read() -> None:
    replies = ReplyParser().feed(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    assert [r.code for r in replies] == [250, 550, 354]


def test_partial_reply_is_kept_between_reads() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250 sec") == []
    assert parser.in_reply
    assert parser.feed(b"ond\r\n") == [Reply(250, ("first", "second"))]


def test_code_without_text_is_accepted() -> None:
    assert ReplyParser().feed(b"250\r\n") == [Reply(250, ("",))]


def test_enhanced_status_code() -> None:
    [reply] = ReplyParser().feed(b"550 5.1.1 <x@y>: Recipient address rejected\r\n")
    assert reply.enhanced_status == "5.1.1"
    assert reply.is_permanent and not reply.is_transient
    [reply] = ReplyParser().feed(b"451 4.7.1 Try again later\r\n")
    assert reply.enhanced_status == "4.7.1" and reply.is_transient
    [reply] = ReplyParser().feed(b"250 Ok\r\n")
    assert reply.enhanced_status is None


def test_an_enhanced_status_code_is_ascii_digits() -> None:
    # Arabic-Indic digits are digits to \d, but no status code (RFC 3463 §2).
    [reply] = ReplyParser().feed("250 2.\u0661.\u0660 Ok\r\n".encode())
    assert reply.enhanced_status is None


def test_wire_lines_round_trip() -> None:
    [reply] = ReplyParser().feed(EHLO)
    assert "\r\n".join(reply.wire_lines()) + "\r\n" == EHLO.decode()


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",  # no code
        b"25 short\r\n",
        b"650 out of range\r\n",
        b"250x no separator\r\n",
        b"250-first\r\n251 second\r\n",  # code changes within a multi-line reply
        b"250 bare line feed\n",  # missing CRLF
    ],
)
def test_malformed_replies_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(SMTPProtocolError):
        ReplyParser().feed(data)


def test_overlong_line_without_end_is_refused_before_it_ends() -> None:
    parser = ReplyParser(max_line_length=100)
    with pytest.raises(SMTPProtocolError, match="too long"):
        parser.feed(b"250 " + b"x" * 200)


def test_endless_multi_line_reply_is_bounded() -> None:
    parser = ReplyParser(max_lines=50)
    with pytest.raises(SMTPProtocolError, match="too large"):
        for _ in range(51):
            parser.feed(b"250-more\r\n")


def test_total_reply_size_is_bounded() -> None:
    parser = ReplyParser(max_reply_size=1000)
    with pytest.raises(SMTPProtocolError, match="too large"):
        for _ in range(20):
            parser.feed(b"250-" + b"y" * 90 + b"\r\n")


def test_non_utf8_text_does_not_crash() -> None:
    [reply] = ReplyParser().feed(b"250 caf\xe9\r\n")
    assert reply.code == 250 and reply.text.startswith("caf")


def test_an_error_stays_for_every_later_call() -> None:
    parser = ReplyParser()
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250-a\r\nbad\r\n")
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250 ok\r\n")  # never joined to the lines before the error
    with pytest.raises(SMTPProtocolError):
        parser.check()


# What is kept of a reply: its first lines, within KEPT_* bounds, and a note of the cut.


def long_reply(code: int, lines: int, text: bytes) -> bytes:
    return b"".join(
        b"%d%s%s\r\n" % (code, b" " if i == lines - 1 else b"-", text) for i in range(lines)
    )


def test_a_long_reply_keeps_its_first_lines_and_says_what_was_cut() -> None:
    data = long_reply(250, 31, b"x" * 7994)  # 31 lines of 8,000 bytes
    [reply] = ReplyParser().feed(data)

    assert reply.code == 250 and reply.size == len(data) == 248_000
    # Four lines of KEPT_LINE_BYTES fill KEPT_TEXT_BYTES; the rest is counted only.
    assert reply.lines == ("x" * KEPT_LINE_BYTES + "...",) * 4
    assert reply.cut_lines == 27
    kept = 4 * (4 + KEPT_LINE_BYTES)  # the code and separator of each line, and its text
    assert reply.cut_bytes == len(data) - kept - 4 * 2  # ... and its CRLF
    note = "[... 27 more lines and 243,976 of the reply's 248,000 bytes not kept]"
    assert reply.cut_note == note
    assert reply.wire_lines() == [f"250-{'x' * KEPT_LINE_BYTES}..."] * 4 + [note]
    assert reply.text.endswith(f"...\n{note}") and str(reply).endswith(note)
    assert sum(map(len, reply.wire_lines())) < KEPT_TEXT_BYTES + 200


def test_a_long_single_line_is_kept_in_part() -> None:
    [reply] = ReplyParser().feed(b"550 5.7.1 " + b"y" * 7990 + b"\r\n")
    assert reply.lines == ("5.7.1 " + "y" * (KEPT_LINE_BYTES - 6) + "...",)
    assert (reply.cut_lines, reply.cut_bytes, reply.size) == (0, 7996 - 1000, 8002)
    assert reply.enhanced_status == "5.7.1" and reply.is_permanent
    # The line kept was the last on the wire: "550 ", not "550-".
    assert reply.wire_lines() == [
        f"550 {reply.lines[0]}",
        "[... 6,996 of the reply's 8,002 bytes not kept]",
    ]


def test_a_line_is_not_cut_inside_a_character() -> None:
    text = "é" * 600  # two bytes each: the 1,000th byte of "a" + text begins one...
    [reply] = ReplyParser().feed(f"250 a{text}\r\n".encode())
    assert reply.lines == ("a" + "é" * 499 + "...",)  # ... so the cut comes before it
    assert reply.cut_bytes == 1201 - 999


def test_many_short_lines_keep_at_most_kept_lines() -> None:
    data = long_reply(250, MAX_LINES, b"")
    [reply] = ReplyParser().feed(data)
    assert reply.lines == ("",) * KEPT_LINES
    assert reply.cut_lines == MAX_LINES - KEPT_LINES
    assert reply.cut_bytes == (MAX_LINES - KEPT_LINES) * 6
    assert reply.wire_lines()[-1] == (
        f"[... {MAX_LINES - KEPT_LINES} more lines and 5,700 of the reply's 6,000 bytes not kept]"
    )


def test_the_lines_not_kept_still_count_against_the_limits() -> None:
    parser = ReplyParser(max_lines=KEPT_LINES + 10)
    with pytest.raises(SMTPProtocolError, match="too large"):
        parser.feed(long_reply(250, KEPT_LINES + 11, b"z"))
    parser = ReplyParser(max_reply_size=20_000)
    with pytest.raises(SMTPProtocolError, match="too large"):
        parser.feed(long_reply(250, 40, b"z" * 500))  # 4,500 bytes kept, 20,240 read


def test_a_code_change_among_the_lines_not_kept_is_an_error() -> None:
    data = long_reply(250, KEPT_LINES + 5, b"w")[:-7] + b"251 w\r\n"
    assert data.endswith(b"250-w\r\n251 w\r\n")
    with pytest.raises(SMTPProtocolError, match="code changed"):
        ReplyParser().feed(data)


def test_a_reply_kept_whole_says_nothing_of_a_cut() -> None:
    [reply] = ReplyParser().feed(EHLO)
    assert (reply.cut_lines, reply.cut_bytes, reply.cut_note) == (0, 0, "")
    assert reply.size == len(EHLO)
    # The size is what the wire carried, not part of what the reply says.
    assert reply == Reply(250, reply.lines) and hash(reply) == hash(Reply(250, reply.lines))


# EHLO replies of real servers (Postfix, Gmail after STARTTLS, Exchange Online), and
# one with every line at RFC 5321's 512 octets: kept whole, each extension seen.
POSTFIX_EHLO = (
    b"250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
    b"250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)
GMAIL_EHLO = (
    b"250-smtp.gmail.com at your service, [203.0.113.5]\r\n250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
)
EXCHANGE_EHLO = (
    b"250-AM0PR01CA0001.outlook.office365.com Hello [203.0.113.5]\r\n250-SIZE 157286400\r\n"
    b"250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n"
    b"250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
)
FULL_EHLO = b"".join(
    b"250%sX-EXT%d %s\r\n" % (b" " if i == 7 else b"-", i, b"p" * 500) for i in range(8)
)


@pytest.mark.parametrize(
    "data",
    [POSTFIX_EHLO, GMAIL_EHLO, EXCHANGE_EHLO, FULL_EHLO],
    ids=["postfix", "gmail", "exchange", "lines-of-512-octets"],
)
def test_a_real_ehlo_reply_is_kept_whole(data: bytes) -> None:
    [reply] = ReplyParser().feed(data)
    assert reply.cut_bytes == 0
    assert "\r\n".join(reply.wire_lines()) + "\r\n" == data.decode()
    keywords = [line[4:].split(" ")[0].upper() for line in data.decode().splitlines()[1:]]
    capabilities = Capabilities.from_ehlo(reply)
    assert sorted(capabilities.extensions) == sorted(set(keywords) - {"AUTH=PLAIN"})
