"""Property tests (Hypothesis) for the places where the client meets arbitrary input:
the reply parser and what is read from replies (whatever a server sends: EHLO
capabilities, queue ids), and body preparation and envelope addresses (whatever a user
sends).

Deterministic: every test runs under the ``sockmail-properties`` settings profile
(derandomized, no example database), applied per test so that nothing here changes
Hypothesis settings for any other module.
"""

from __future__ import annotations

import contextlib
import re
from itertools import pairwise

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from django_sockmail.smtp import results
from django_sockmail.smtp.data import normalize_line_endings
from django_sockmail.smtp.envelope import envelope_address
from django_sockmail.smtp.errors import SMTPProtocolError
from django_sockmail.smtp.protocol import Capabilities, content_command
from django_sockmail.smtp.replies import Reply, ReplyParser

settings.register_profile(
    "sockmail-properties",
    derandomize=True,  # the same examples on every run: CI never flakes on a new draw
    database=None,  # nothing remembered between runs, nothing written to the work tree
    max_examples=300,
    deadline=None,  # a slow CI machine must not turn into a failure
    print_blob=False,
)
PROFILE = settings(settings.get_profile("sockmail-properties"))

# Limits small enough that random input reaches them all the time.
SMALL_LIMITS = {"max_line_length": 12, "max_lines": 3, "max_reply_size": 40}


# Strategies ---------------------------------------------------------------------------

# Printable reply text: letters, marks, numbers, punctuation, symbols and spaces; never
# a control character (so never CR or LF) and never a lone surrogate (not encodable).
REPLY_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zl", "Zp")),
    max_size=20,
)
REPLIES = st.lists(
    st.builds(
        Reply,
        code=st.integers(200, 599),
        lines=st.lists(REPLY_TEXT, min_size=1, max_size=4).map(tuple),
    ),
    min_size=1,
    max_size=3,
)

# Near-valid reply lines, piece by piece: pure random bytes almost never get past the
# code, and a parser's mistakes hide in the near misses (b"25 " and b"2_0" are ints too).
REPLY_LINE_BYTES = st.tuples(
    st.one_of(
        st.sampled_from([b"250", b"251", b"354", b"550", b"199", b"600", b"25 ", b"2x0"]),
        st.sampled_from([b"2_0", b"+50", b" 25", b"25", b"2", b"", b"\xd9\xa2"]),
        st.binary(max_size=3),
    ),
    st.sampled_from([b" ", b"-", b"", b"\t", b"x"]),
    st.one_of(
        st.sampled_from([b"", b"ok", b"5.1.1 no", b"caf\xe9", b"a\rb", b"x" * 9]),
        st.binary(max_size=10),
    ),
    st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]),
).map(b"".join)


def wire(replies: list[Reply]) -> bytes:
    """Replies as a server sends them: ``ddd-text`` continuations, ``ddd text`` last."""
    out = bytearray()
    for reply in replies:
        last = len(reply.lines) - 1
        for i, line in enumerate(reply.lines):
            separator = " " if i == last else "-"
            out += f"{reply.code}{separator}{line}\r\n".encode()
    return bytes(out)


@st.composite
def damaged_wire(draw: st.DrawFn) -> bytes:
    """Valid replies with a few random bytes put in somewhere, or cut short."""
    data = wire(draw(REPLIES))
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(max_size=4)) + data[at:]


@st.composite
def shuffled_wire(draw: st.DrawFn) -> bytes:
    """The lines of valid replies in another order: codes change within a multi-line
    reply, continuations come after final lines."""
    lines = wire(draw(REPLIES)).split(b"\r\n")[:-1]
    return b"".join(line + b"\r\n" for line in draw(st.permutations(lines)))


REPLY_BYTES = st.one_of(
    st.binary(max_size=150),
    st.lists(REPLY_LINE_BYTES, max_size=8).map(b"".join),
    damaged_wire(),
    shuffled_wire(),
    REPLIES.map(wire),
)


@st.composite
def chunked(draw: st.DrawFn, content: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    """Some bytes, and the same bytes split as the socket might return them.

    Cuts may repeat, so empty reads are exercised too.
    """
    data = draw(content)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=len(data) + 2)))
    bounds = [0, *cuts, len(data)]
    return data, [data[start:end] for start, end in pairwise(bounds)]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse(parser: ReplyParser, chunks: list[bytes]) -> tuple[list[Reply], bool]:
    """Feed every read, then check(); return the replies and whether it failed.

    Stops at the first SMTPProtocolError, as the client does. An error held back by
    feed() (complete replies came before the bad line) surfaces in a later feed() or in
    the final check(), so (replies, failed) is the same however the error was timed.
    Any other exception propagates and fails the test.
    """
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            replies += parser.feed(chunk)
        parser.check()
    except SMTPProtocolError:
        return replies, True
    return replies, False


# 1. The parser fails only with SMTPProtocolError, and its memory is bounded -----------


@PROFILE
@given(
    split=chunked(REPLY_BYTES),
    limits=st.sampled_from([{}, SMALL_LIMITS]),
)
@example(split=(b"2\r\n", [b"2", b"\r\n"]), limits={})
def test_parser_fails_only_with_protocol_error(
    split: tuple[bytes, list[bytes]], limits: dict[str, int]
) -> None:
    data, chunks = split
    for reads in (chunks, byte_by_byte(data), [data]):
        parser = ReplyParser(**limits)
        # Go on feeding after an error too: a later read must not crash either.
        for chunk in reads:
            try:
                replies = parser.feed(chunk)
            except SMTPProtocolError:
                continue
            for reply in replies:
                assert 200 <= reply.code <= 599
                assert 1 <= len(reply.lines) <= parser.max_lines
                assert str(reply).startswith(str(reply.code))
                assert reply.enhanced_status is None or reply.enhanced_status[0] in "245"
                assert len(reply.wire_lines()) == len(reply.lines)
        with contextlib.suppress(SMTPProtocolError):
            parser.check()


@st.composite
def session_so_far(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    """A line limit, and reads of some replies that fit it followed by the start of a
    line that has not ended yet (no LF in it)."""
    replies = wire(draw(REPLIES))
    longest = max(len(line) for line in replies.split(b"\r\n"))
    max_line_length = draw(st.integers(max(3, longest), longest + 40))
    unfinished = draw(st.binary(max_size=max_line_length)).replace(b"\n", b"")
    _, chunks = draw(chunked(st.just(replies + unfinished)))
    return max_line_length, chunks


@PROFILE
@given(session=session_so_far(), one_read=st.booleans())
def test_unfinished_line_is_refused_past_the_line_limit(
    session: tuple[int, list[bytes]], one_read: bool
) -> None:
    # Whatever came before, a server that sends bytes without ever ending the line is
    # cut off before the parser holds more than max_line_length of them.
    max_line_length, chunks = session
    parser = ReplyParser(max_line_length=max_line_length)
    _, failed = parse(parser, chunks)
    assert not failed
    endless = b"x" * (max_line_length + 1)
    with pytest.raises(SMTPProtocolError):
        for chunk in [endless] if one_read else byte_by_byte(endless):
            parser.feed(chunk)


@PROFILE
@given(
    code=st.integers(200, 599),
    texts=st.lists(st.text("abc 5.1", max_size=8), min_size=1, max_size=8),
    max_lines=st.integers(1, 5),
    max_reply_size=st.integers(6, 60),
    max_line_length=st.integers(3, 12),
)
def test_multi_line_reply_is_refused_at_exactly_its_limits(
    code: int,
    texts: list[str],
    max_lines: int,
    max_reply_size: int,
    max_line_length: int,
) -> None:
    # A multi-line reply is refused at the first line that passes a limit and never
    # before: the limits are inclusive, and nothing is held beyond them.
    parser = ReplyParser(
        max_line_length=max_line_length, max_lines=max_lines, max_reply_size=max_reply_size
    )
    lines = [f"{code}-{text}\r\n".encode() for text in texts] + [f"{code} end\r\n".encode()]
    size = 0
    for count, line in enumerate(lines, start=1):
        size += len(line)
        if count > max_lines or size > max_reply_size or len(line) - 2 > max_line_length:
            with pytest.raises(SMTPProtocolError):
                parser.feed(line)
            return
        replies = parser.feed(line)
        if count < len(lines):
            assert replies == []
            assert parser.in_reply
        else:
            assert replies == [Reply(code, (*texts, "end"))]
            assert not parser.in_reply


# A reply line by the book (RFC 5321 §4.2), CRLF aside: a code from 200 to 599, then
# nothing, or a space or hyphen and any text.
BOOK_REPLY_LINE = re.compile(rb"([2-5][0-9]{2})([ -].*)?", re.DOTALL)


def reference_parse(
    data: bytes, max_line_length: int, max_lines: int, max_reply_size: int
) -> tuple[list[Reply], bool]:
    """A deliberately naive oracle for one read of ``data``, as :func:`parse` reports it."""
    replies: list[Reply] = []
    code: int | None = None
    texts: list[str] = []
    size = 0
    *lines, unfinished = data.split(b"\n")
    for line in lines:
        if not line.endswith(b"\r") or len(line) - 1 > max_line_length:
            return replies, True
        match = BOOK_REPLY_LINE.fullmatch(line[:-1])
        if match is None or code not in (None, int(match[1])):
            return replies, True
        code, rest = int(match[1]), match[2] or b""
        texts.append(rest[1:].decode("utf-8", errors="replace"))
        size += len(line) + 1
        if len(texts) > max_lines or size > max_reply_size:
            return replies, True
        if not rest.startswith(b"-"):
            replies.append(Reply(code, tuple(texts)))
            code, texts, size = None, [], 0
    return replies, len(unfinished) > max_line_length


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({}, id="default-limits"),
        pytest.param(SMALL_LIMITS, id="small-limits"),
    ],
)
@PROFILE
@given(split=chunked(REPLY_BYTES))
@example(split=(b"250 ok\r\n25\r\n", [b"250 ok\r\n25\r\n"]))
def test_parser_accepts_exactly_well_formed_replies(
    split: tuple[bytes, list[bytes]], limits: dict[str, int]
) -> None:
    data, chunks = split
    parser = ReplyParser(**limits)
    expected = reference_parse(
        data, parser.max_line_length, parser.max_lines, parser.max_reply_size
    )
    assert parse(parser, [data]) == expected
    assert parse(ReplyParser(**limits), chunks) == expected


@pytest.mark.parametrize("data", [b"2\r\n", b"25\r\n", b"250 ok\r\n5\r\n"])
def test_reply_code_has_three_digits(data: bytes) -> None:
    # Counterexamples the properties above found (once taken for replies 2, 25 and 5).
    assert parse(ReplyParser(), [data])[1]


# 2. Valid replies come back exactly, however the reads fall ---------------------------


@st.composite
def chunked_replies(draw: st.DrawFn) -> tuple[list[Reply], list[bytes]]:
    replies = draw(REPLIES)
    _, chunks = draw(chunked(st.just(wire(replies))))
    return replies, chunks


@PROFILE
@given(split=chunked_replies())
def test_valid_replies_round_trip(split: tuple[list[Reply], list[bytes]]) -> None:
    replies, chunks = split
    for reads in (chunks, byte_by_byte(wire(replies)), [wire(replies)]):
        parser = ReplyParser()
        assert parse(parser, reads) == (replies, False)
        assert not parser.in_reply


def _exact_limits(replies: list[Reply]) -> dict[str, int]:
    """The smallest limits that the given replies still fit in."""
    lines = [line for reply in replies for line in wire([reply]).split(b"\r\n")[:-1]]
    return {
        "max_line_length": max(len(line) for line in lines),
        "max_lines": max(len(reply.lines) for reply in replies),
        "max_reply_size": max(len(wire([reply])) for reply in replies),
    }


@PROFILE
@given(split=chunked_replies())
@example(split=([Reply(250, ("",))], [b"250 \r", b"\n"]))
def test_valid_replies_round_trip_at_exactly_their_limits(
    split: tuple[list[Reply], list[bytes]],
) -> None:
    replies, chunks = split
    limits = _exact_limits(replies)
    for reads in (chunks, byte_by_byte(wire(replies)), [wire(replies)]):
        assert parse(ReplyParser(**limits), reads) == (replies, False)


def test_line_of_exactly_max_length_is_accepted_in_one_read() -> None:
    assert ReplyParser(max_line_length=3).feed(b"250\r\n") == [Reply(250, ("",))]


def test_line_of_exactly_max_length_survives_a_read_between_cr_and_lf() -> None:
    # The minimal counterexample the properties above found (once refused as too long).
    parser = ReplyParser(max_line_length=3)
    assert parser.feed(b"250\r") == []
    assert parser.feed(b"\n") == [Reply(250, ("",))]


# 3. Chunking invariance ---------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({}, id="default-limits"),
        pytest.param(SMALL_LIMITS, id="small-limits"),
    ],
)
@PROFILE
@given(split=chunked(REPLY_BYTES))
@example(split=(b"250 abcdefgh\r\n", [b"250 abcdefgh\r", b"\n"]))
def test_chunking_does_not_change_the_outcome(
    split: tuple[bytes, list[bytes]], limits: dict[str, int]
) -> None:
    data, chunks = split
    whole = parse(ReplyParser(**limits), [data])
    assert parse(ReplyParser(**limits), chunks) == whole
    assert parse(ReplyParser(**limits), byte_by_byte(data)) == whole


# 4. and 5. Body preparation, for bytes and str alike ----------------------------------


def reference_normalize(content: bytes) -> bytes:
    """A deliberately naive oracle: CRLF, bare CR, bare LF each become one CRLF."""
    out = bytearray()
    i = 0
    while i < len(content):
        byte = content[i : i + 1]
        if byte == b"\r" and content[i + 1 : i + 2] == b"\n":
            out += b"\r\n"
            i += 2
        elif byte in (b"\r", b"\n"):
            out += b"\r\n"
            i += 1
        else:
            out += byte
            i += 1
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return bytes(out)


def assert_safe_on_the_wire(raw: bytes) -> None:
    normalized = normalize_line_endings(raw)
    assert normalized == reference_normalize(raw)
    assert normalize_line_endings(normalized) == normalized  # idempotent

    cmd = content_command(normalized)
    payload = cmd.wire
    assert cmd.content == normalized

    # Every line ends with CRLF: no bare CR, no bare LF anywhere.
    *lines, tail = payload.split(b"\r\n")
    assert tail == b""
    assert not any(b"\r" in line or b"\n" in line for line in lines)

    # The end of data is the one we append, and nothing earlier can pass for it: the
    # DATA command's own CRLF counts as the start of the first line.
    assert payload.endswith(b"\r\n.\r\n")
    stream = b"\r\n" + payload
    assert stream.find(b"\r\n.\r\n") == len(stream) - len(b"\r\n.\r\n")

    # Line by line: a line starting with "." is exactly a stuffed original line.
    stuffed, original = lines[:-1], normalized.split(b"\r\n")[:-1]
    assert lines[-1] == b"."
    assert len(stuffed) == len(original)
    for out_line, in_line in zip(stuffed, original, strict=True):
        if out_line.startswith(b"."):
            assert out_line == b"." + in_line and in_line.startswith(b".")
        else:
            assert out_line == in_line

    # Un-stuffing gives back the normalized content exactly.
    unstuffed = b"".join(
        (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in stuffed
    )
    assert unstuffed == normalized


# Bytes that hit the interesting cases: dots at line starts, every kind of line ending.
BODY_PIECES = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\x00", b"\xff", b"\xc3\xa9"]
)
BODY_BYTES = st.one_of(st.binary(max_size=300), st.lists(BODY_PIECES, max_size=60).map(b"".join))
# Any character but a lone surrogate (which has no UTF-8), often a line ending or a dot.
ENCODABLE_CHARACTER = st.characters(blacklist_categories=["Cs"])
BODY_TEXT = st.text(st.one_of(st.sampled_from("\r\n. "), ENCODABLE_CHARACTER), max_size=100)


@PROFILE
@given(body=BODY_BYTES)
@example(body=b"x\n.\ny")
@example(body=b"x\r.\ry")
@example(body=b".")
@example(body=b"")
def test_bytes_body_is_safe_on_the_wire(body: bytes) -> None:
    assert_safe_on_the_wire(body)


@PROFILE
@given(body=BODY_TEXT)
@example(body="x\r.\r\u2028é")
def test_str_body_is_safe_on_the_wire(body: str) -> None:
    raw = body.encode("utf-8")
    assert_safe_on_the_wire(raw)
    # The same normalisation as on the text itself: nothing else changes, and the
    # UTF-8 of each character survives intact.
    expected = re.sub(r"\r\n|\r|\n", "\r\n", body)
    expected += "" if expected.endswith("\r\n") else "\r\n"
    assert normalize_line_endings(raw).decode("utf-8") == expected


# 6. EHLO capabilities: whatever the server offers, a reply or a protocol error --------

# Any text a reply line can hold once decoded: everything but LF (a bare CR, NUL and
# the rest do arrive) and lone surrogates (decoding with "replace" makes none).
LINE_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=40
)
EHLO_KEYWORDS = st.sampled_from(
    ["SIZE", "size", "AUTH", "AUTH=LOGIN", "STARTTLS", "SMTPUTF8", "\u017fIZE", "", " "]
)
EHLO_PARAMS = st.sampled_from(
    [
        "",
        "0",
        "1000",
        "00",
        "-1",
        "+5",
        "1_000",
        "1e3",
        " 12 ",
        "10M",
        "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "\u0661\u0660\u0660\u0660",  # Arabic-Indic 1000: int() reads it
        "\uff11\uff10",  # fullwidth 10
        "9" * 25,
        "9" * 5000,  # past int()'s 4300-digit limit
        "PLAIN LOGIN",
        "PLA\u0131N",  # a dotless i, which str.upper() makes "I"
    ]
)
EHLO_LINES = st.lists(
    st.one_of(
        st.tuples(EHLO_KEYWORDS, EHLO_PARAMS).map(" ".join),
        st.tuples(EHLO_KEYWORDS, LINE_TEXT).map(" ".join),
        LINE_TEXT,
    ),
    max_size=6,
)


def assert_capabilities_readable(reply: Reply) -> None:
    """Read everything the client reads from an EHLO reply: nothing may raise but
    SMTPProtocolError, and what comes out is what the client can use."""
    try:
        capabilities = Capabilities.from_ehlo(reply)
        limit = capabilities.size_limit
        mechanisms = capabilities.auth_mechanisms
        capabilities.has("SIZE")
    except SMTPProtocolError:
        return
    assert limit is None or (type(limit) is int and limit > 0)
    assert all(m.isascii() and m == m.upper() and m for m in mechanisms)
    assert all(k.isascii() and k == k.upper() for k in capabilities.extensions)


@PROFILE
@given(lines=EHLO_LINES)
@example(lines=["SIZE \u00b2"])
@example(lines=["SIZE " + "9" * 5000])
def test_any_ehlo_reply_gives_capabilities_or_a_protocol_error(lines: list[str]) -> None:
    assert_capabilities_readable(Reply(250, ("mx.example", *lines)))


@PROFILE
@given(lines=EHLO_LINES, raw=st.lists(st.binary(max_size=12), max_size=3))
@example(lines=[], raw=[b"SIZE \xc2\xb2"])
def test_any_ehlo_bytes_give_capabilities_or_a_protocol_error(
    lines: list[str], raw: list[bytes]
) -> None:
    # From the wire: the parser decodes each line as the client receives it.
    texts = [line.encode("utf-8") for line in lines] + raw
    data = b"".join(b"250-" + text + b"\r\n" for text in [b"mx.example", *texts])
    replies, _ = parse(ReplyParser(), [data + b"250 HELP\r\n"])
    for reply in replies:
        assert_capabilities_readable(reply)


# 7. Queue ids: whatever the server said, an id it named or none ----------------------


@PROFILE
@given(
    lines=st.lists(
        st.one_of(
            LINE_TEXT,
            st.sampled_from(
                [
                    "2.0.0 Ok: queued as ABC",
                    "OK id=1vAbCd-000Efg-Hi",
                    "2.0.0: 0f0b5c4a Message accepted for delivery",
                    "2.6.0 <a@b> [InternalId=\u0661\u0662, Hostname=H] Queued mail for delivery",
                    "2.0.0 OK <a\u00e9@b> [Hostname=H]",
                    "2.0.0 OK  1 a\u00e9 - gsmtp",
                    "Ok 010001727bf05c7f-8ff7cc5f-aea3-4284-91ea-51f2f82c4469-000000",
                    "Message Queued (5B199CBD-2F0B-4A5C-9E3E-0123456789AB.1)",
                    "QUEUED AS x",
                ]
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_a_queue_id_is_printable_ascii_the_server_sent(lines: list[str]) -> None:
    reply = Reply(250, tuple(lines))
    found = results.queue_id(reply)
    assert found == "" or (found.isascii() and found.isprintable() and " " not in found)
    assert found in reply.text
    # The one search that rules out the usual reply never rules out a named id.
    first = (m for p in results._QUEUE_ID_PATTERNS if (m := p.search(reply.text)))
    assert found == next((m.group(1) for m in first), "")


# 8. Envelope addresses: whatever the user wrote, a safe path or a ValueError ----------

ADDRESS_PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        ".",
        "-",
        "_",
        "@",
        " ",
        '"',
        "<",
        ">",
        "[",
        "]",
        ",",
        "\\",
        "ß",
        "ü",
        "\u2665",  # a symbol: IDNA 2003 encoded it, IDNA 2008 does not
        "\uff1e",  # a wide ">": IDNA 2003 made it ">"
        "\uff0e",  # a wide full stop: UTS #46 makes it "."
        "\u3002",  # the ideographic full stop, likewise
        "\u0640",  # a joining mark, disallowed
        "\u200d",  # a zero-width joiner (CONTEXTJ)
        "xn--",
        "a" * 64,
    ]
)
ADDRESSES = st.one_of(
    st.lists(ADDRESS_PIECES, max_size=12).map("".join),
    st.tuples(
        st.lists(ADDRESS_PIECES, min_size=1, max_size=4).map("".join),
        st.lists(ADDRESS_PIECES, min_size=1, max_size=6).map("".join),
    ).map("@".join),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
)
_NOT_IN_A_PATH = re.compile(r"[\x00-\x1f\x7f<>]")


@PROFILE
@given(address=ADDRESSES)
@example(address="a@x\uff1e.org")
@example(address="Name <a@x\uff1eNOTIFY\uff1dSUCCESS.org>")
@example(address="a@[\x80]")  # an address literal is ASCII
def test_an_envelope_address_is_a_safe_path_or_a_value_error(address: str) -> None:
    try:
        path = envelope_address(address)
    except ValueError:
        return
    # Nothing that ends the path early or starts a new command line.
    assert not _NOT_IN_A_PATH.search(path)
    if path.endswith('"'):
        return  # a quoted local part alone: a local mailbox, no domain
    _local, at, domain = path.rpartition("@")
    if at:
        assert domain.isascii() and not re.search(r"[\s\"]", domain)
