import pytest

from django_sockmail.smtp.errors import SMTPProtocolError
from django_sockmail.smtp.replies import Reply, ReplyParser

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
