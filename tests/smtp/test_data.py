import pytest

from django_sockmail.smtp.data import dot_stuff, is_8bit, normalize_line_endings
from django_sockmail.smtp.protocol import content_command


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
        (b"a\n\rb", b"a\r\n\r\nb\r\n"),
    ],
)
def test_every_line_ending_becomes_crlf(raw: bytes, normalized: bytes) -> None:
    assert normalize_line_endings(raw) == normalized


def test_dot_stuffing_doubles_leading_dots_only() -> None:
    assert dot_stuff(b".a\r\nb.c\r\n..d\r\n") == b"..a\r\nb.c\r\n...d\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"x\n.\ny",  # bare LF dot bare LF
        b"x\r.\ry",  # bare CR dot bare CR
        b"x\r\n.\ny",
        b"x\n.\r\ny",
        b"x\r\n.\r\ny",
        b".\r\n",
    ],
)
def test_no_early_end_of_data_can_be_smuggled(body: bytes) -> None:
    # Exactly what the client writes after the 354.
    payload = content_command(normalize_line_endings(b"Subject: t\r\n\r\n" + body)).wire
    # The only end-of-data sequence is the one we append.
    assert payload.endswith(b"\r\n.\r\n")
    assert payload.count(b"\r\n.\r\n") == 1
    stripped = payload.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped


def test_8bit_detection() -> None:
    assert is_8bit("é".encode())
    assert not is_8bit(b"plain ascii")
