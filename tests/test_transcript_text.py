"""One way to write a transcript line as text (django_sockmail/transcript_text.py): the
admin's download and ``manage.py sockmail_probe`` read alike, but for the download's
time offsets and its indented continuation lines."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from django_sockmail.models import Session
from django_sockmail.transcript_text import transcript_line
from tests.servers import Responder, Scripted
from tests.test_admin import download
from tests.test_probe import ESCAPED, HOSTILE, HOSTILE_BYTES, probe
from tests.toolkit import target

# A refusal of two lines, as the client words it in the transcript's error line.
TWO_LINES = f"error: SMTPConnectError: 554 5.7.1 first\n5.7.1 {HOSTILE}"


def test_the_download_writes_the_offset_and_hangs_a_text_under_its_first_line() -> None:
    assert transcript_line(12.5, "*", TWO_LINES) == (
        f"+12.500ms * error: SMTPConnectError: 554 5.7.1 first\n            5.7.1 {ESCAPED}"
    )


def test_the_probe_writes_no_offset_and_the_rest_of_a_text_as_it_is() -> None:
    assert transcript_line(None, "*", TWO_LINES, hanging_indent=False) == (
        f"* error: SMTPConnectError: 554 5.7.1 first\n5.7.1 {ESCAPED}"
    )


@pytest.mark.parametrize(("direction", "prefix"), [("C", "C:"), ("S", "S:"), ("D", "D:")])
def test_who_said_a_line_comes_before_it(direction: str, prefix: str) -> None:
    assert transcript_line(None, direction, "250 OK") == f"{prefix} 250 OK"
    assert transcript_line(0.0, direction, "250 OK") == f"+0.000ms {prefix} 250 OK"


@pytest.mark.django_db(transaction=True)
def test_the_probe_prints_each_line_as_the_download_writes_it(
    scripted: Scripted, admin_client: Client
) -> None:
    server = scripted(
        Responder(
            {
                "GREETING": b"220 scripted.test " + HOSTILE_BYTES + b"\r\n",
                "EHLO": b"250-scripted.test\r\n250 X-EVIL " + HOSTILE_BYTES + b"\r\n",
            }
        )
    )

    result = probe(target(server), "--ehlo", "probe.example")

    assert result.error is None, result.error
    # Past the header, every line of the conversation.
    said = download(admin_client, Session.objects.get()).split("\n\n", 1)[1]
    assert [re.sub(r"^\+\d+\.\d{3}ms ", "", line) for line in said.splitlines()] == (
        result.transcript
    )
    assert f"S: 220 scripted.test {ESCAPED}" in result.transcript
