"""The queue id a server names in its reply to the end of data."""

from __future__ import annotations

import pytest

from django_sockmail.smtp.replies import Reply
from django_sockmail.smtp.results import queue_id


# Each server's or provider's reply to the end of data, as its documentation or source
# gives it (see the patterns in results.py).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2.0.0 Ok: queued as 4ZkX2b0Qz5z9v", "4ZkX2b0Qz5z9v", id="postfix"),
        pytest.param(
            "Ok: queued as nhIMmON9SFOPcT0ii4nt2A", "nhIMmON9SFOPcT0ii4nt2A", id="sendgrid"
        ),
        pytest.param("OK id=1vAbCd-000Efg-Hi", "1vAbCd-000Efg-Hi", id="exim"),
        pytest.param("OK id=1rFuV7-00000000Dws-1Xjd", "1rFuV7-00000000Dws-1Xjd", id="exim-4.97"),
        pytest.param(
            "2.0.0 5AQ3x1a9012345 Message accepted for delivery", "5AQ3x1a9012345", id="sendmail"
        ),
        pytest.param(
            "2.0.0: 0f0b5c4a Message accepted for delivery", "0f0b5c4a", id="opensmtpd-colon"
        ),
        pytest.param("2.0.0 0f0b5c4a Message accepted for delivery", "0f0b5c4a", id="opensmtpd"),
        pytest.param("0f0b5c4a Message accepted for delivery", "0f0b5c4a", id="opensmtpd-old"),
        pytest.param(
            "2.6.0 <x@example.org> [InternalId=1417339042123, Hostname=EX01] Queued mail",
            "1417339042123",
            id="microsoft-inbound",
        ),
        pytest.param(
            "2.0.0 OK <BYAPR17MB292020A5FA913E69A3A1C26BDC192@BYAPR17MB2920.namprd17.prod"
            ".outlook.com> [Hostname=BYAPR17MB2920.namprd17.prod.outlook.com]",
            "BYAPR17MB292020A5FA913E69A3A1C26BDC192@BYAPR17MB2920.namprd17.prod.outlook.com",
            id="microsoft-365-submission",
        ),
        pytest.param(
            "2.6.0 <1a2b3c@mail1.contoso.com> Queued mail for delivery",
            "1a2b3c@mail1.contoso.com",
            id="exchange-without-internal-id",
        ),
        pytest.param(
            "2.0.0 OK  1764201234 af79cd13be357-8b2c1a - gsmtp", "af79cd13be357-8b2c1a", id="gmail"
        ),
        pytest.param(
            "2.0.0 OK  1731389794 ffacd0b85a97d-381ed975a54si7856017f8f.119 - gsmtp",
            "ffacd0b85a97d-381ed975a54si7856017f8f.119",
            id="gmail-with-a-dot",
        ),
        pytest.param(
            "Ok 010001727bf05c7f-8ff7cc5f-aea3-4284-91ea-51f2f82c4469-000000",
            "010001727bf05c7f-8ff7cc5f-aea3-4284-91ea-51f2f82c4469-000000",
            id="amazon-ses",
        ),
        pytest.param(
            "Message Queued (5B199CBD-2F0B-4A5C-9E3E-0123456789AB.1)",
            "5B199CBD-2F0B-4A5C-9E3E-0123456789AB.1",
            id="haraka",
        ),
        pytest.param("Great success", "", id="mailgun-names-none"),
        pytest.param("2.0.0 QUEUED AS Abc123", "Abc123", id="any-case-where-the-pattern-allows"),
        # Exim's and Google's forms are matched as they are written, case and all.
        pytest.param("OK ID=1vAbCd-000Efg-Hi", "", id="exim-other-case"),
        pytest.param("2.0.0 Ok", "", id="none-named"),
        pytest.param("2.0.0 Ok\nqueued as SECONDLINE", "SECONDLINE", id="on-a-later-line"),
        # Digits of other scripts are digits to \d, never to a queue id.
        pytest.param("2.6.0 <x@y> [InternalId=\u0661\u0662, Hostname=H]", "", id="not-ascii"),
        # An SES id is exactly its shape: "Ok" and any word is not one.
        pytest.param("Ok dirdel", "", id="ok-and-a-word"),
    ],
)
def test_the_queue_id_each_server_names(text: str, expected: str) -> None:
    assert queue_id(Reply(250, tuple(text.split("\n")))) == expected


@pytest.mark.parametrize("code", [354, 451, 554])
def test_no_queue_id_without_acceptance(code: int) -> None:
    assert queue_id(Reply(code, ("queued as ABC",))) == ""
    assert queue_id(None) == ""
