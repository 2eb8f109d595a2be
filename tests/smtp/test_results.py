"""The queue id a server names in its reply to the end of data."""

from __future__ import annotations

import pytest

from django_sockmail.smtp.replies import Reply
from django_sockmail.smtp.results import queue_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2.0.0 Ok: queued as 4ZkX2b0Qz5z9v", "4ZkX2b0Qz5z9v", id="postfix"),
        pytest.param("OK id=1vAbCd-000Efg-Hi", "1vAbCd-000Efg-Hi", id="exim"),
        pytest.param(
            "2.0.0 5AQ3x1a9012345 Message accepted for delivery", "5AQ3x1a9012345", id="sendmail"
        ),
        pytest.param(
            "2.6.0 <x@example.org> [InternalId=1417339042123, Hostname=EX01] Queued mail",
            "1417339042123",
            id="microsoft",
        ),
        pytest.param(
            "2.0.0 OK  1764201234 af79cd13be357-8b2c1a - gsmtp", "af79cd13be357-8b2c1a", id="google"
        ),
        pytest.param("2.0.0 QUEUED AS Abc123", "Abc123", id="any-case-where-the-pattern-allows"),
        # Exim's and Google's forms are matched as they are written, case and all.
        pytest.param("OK ID=1vAbCd-000Efg-Hi", "", id="exim-other-case"),
        pytest.param("2.0.0 Ok", "", id="none-named"),
        pytest.param("2.0.0 Ok\nqueued as SECONDLINE", "SECONDLINE", id="on-a-later-line"),
    ],
)
def test_the_queue_id_each_server_names(text: str, expected: str) -> None:
    assert queue_id(Reply(250, tuple(text.split("\n")))) == expected


@pytest.mark.parametrize("code", [354, 451, 554])
def test_no_queue_id_without_acceptance(code: int) -> None:
    assert queue_id(Reply(code, ("queued as ABC",))) == ""
    assert queue_id(None) == ""
