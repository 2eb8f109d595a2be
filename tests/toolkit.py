"""What many tests build: the messages they send, and sessions in the audit log.

Messages: ``message(n)`` and ``batch(count)`` make plain-text EmailMessages. In every
string given, ``{n}`` stands for the message's number and ``{domain}`` for ``domain``,
so a test file says once how its messages look (``partial(batch, subject="Message
{n}")``) and its assertions can name what they expect: subjects, senders, recipients.

Sessions: ``make_transcript()`` is a finished STARTTLS session in which two messages
went, one with a refused recipient; ``recorded()`` records it (or a transcript of the
test's own) and returns the Session row; ``session_at(server)`` is the session a test
server took part in; ``transcript()``, ``client_commands()`` and ``server_lines()``
read a recorded session back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from django.core.mail import EmailMessage

from django_sockmail import outcome_of
from django_sockmail.models import Session
from django_sockmail.recorder import record
from django_sockmail.smtp.client import host_port
from django_sockmail.smtp.events import TLSInfo
from django_sockmail.smtp.reply import Reply
from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome
from django_sockmail.transcript import Line, MessageRecord, Transcript
from tests.servers import Address


def message(
    n: int = 0,
    *,
    subject: str = "s",
    body: str = "b",
    sender: str = "from@{domain}",
    to: str | Sequence[str] = "to{n}@{domain}",
    domain: str = "example.org",
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """Message number ``n``: by default subject "s", body "b", from
    from@example.org to to<n>@example.org."""

    def fill(text: str) -> str:  # not str.format: a body may hold braces of its own
        return text.replace("{n}", str(n)).replace("{domain}", domain)

    recipients = [to] if isinstance(to, str) else to
    return EmailMessage(
        subject=fill(subject),
        body=fill(body),
        from_email=fill(sender),
        to=[fill(address) for address in recipients],
        headers={name: fill(value) for name, value in (headers or {}).items()},
    )


def batch(
    count: int,
    *,
    first: int = 0,
    subject: str = "s",
    body: str = "b",
    sender: str = "from@{domain}",
    to: str | Sequence[str] = "to{n}@{domain}",
    domain: str = "example.org",
) -> list[EmailMessage]:
    """``count`` messages numbered from ``first``, each made by :func:`message`."""
    return [
        message(n, subject=subject, body=body, sender=sender, to=to, domain=domain)
        for n in range(first, first + count)
    ]


# Sessions in the audit log

STARTED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

# (direction, text) as the client driver would have reported them: the AUTH line is
# already redacted, the content is the header block plus its size.
CONVERSATION = [
    ("*", "connecting to mail.example.com port 587"),
    ("*", "connected to 192.0.2.10:587 from 198.51.100.7:53422"),
    ("S", "220 mail.example.com ESMTP Postfix"),
    ("C", "EHLO client.example.org"),
    ("S", "250-mail.example.com"),
    ("S", "250-STARTTLS"),
    ("S", "250 AUTH PLAIN LOGIN"),
    ("C", "STARTTLS"),
    ("S", "220 2.0.0 Ready to start TLS"),
    ("*", "TLS established: TLSv1.3 TLS_AES_256_GCM_SHA384"),
    ("C", "EHLO client.example.org"),
    ("S", "250-mail.example.com"),
    ("S", "250 AUTH PLAIN LOGIN"),
    ("C", "AUTH PLAIN [credentials redacted]"),
    ("S", "235 2.7.0 Authentication successful"),
    ("C", "MAIL FROM:<alice@example.org> SIZE=321"),
    ("S", "250 2.1.0 Ok"),
    ("C", "RCPT TO:<bob@example.net>"),
    ("S", "250 2.1.5 Ok"),
    ("C", "DATA"),
    ("S", "354 End data with <CR><LF>.<CR><LF>"),
    (
        "D",
        "From: alice@example.org\nTo: bob@example.net\nSubject: Quarterly report\n"
        "Message-ID: <report.1@example.org>\n\n[message content: 321 bytes]",
    ),
    ("S", "250 2.0.0 Ok: queued as ABC123"),
    ("C", "MAIL FROM:<alice@example.org> SIZE=222"),
    ("S", "250 2.1.0 Ok"),
    ("C", "RCPT TO:<carol@example.net>"),
    ("S", "250 2.1.5 Ok"),
    ("C", "RCPT TO:<nobody@example.net>"),
    ("S", "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"),
    ("C", "DATA"),
    ("S", "354 End data with <CR><LF>.<CR><LF>"),
    (
        "D",
        "From: alice@example.org\nTo: carol@example.net, nobody@example.net\n"
        "Subject: Lunch?\nMessage-ID: <lunch.2@example.org>\n\n[message content: 222 bytes]",
    ),
    ("S", "250 2.0.0 Ok: queued as DEF456"),
    ("C", "QUIT"),
    ("S", "221 2.0.0 Bye"),
    ("*", "connection closed"),
]


def statuses(messages: Sequence[EmailMessage]) -> list[str]:
    """What the backend made of each message, in order."""
    return [outcome_of(m).status for m in messages]


def target(server: Address) -> str:
    """A server as ``sockmail_probe`` and a connection error name it: host:port."""
    return host_port(server.host, server.port)


def lines_of(conversation: list[tuple[str, str]]) -> list[Line]:
    """``conversation``'s (direction, text) as transcript lines 12.5 ms apart, as
    make_transcript() has CONVERSATION's."""
    return [Line(i * 0.0125, d, text) for i, (d, text) in enumerate(conversation)]


def sent_message() -> MessageRecord:
    """CONVERSATION's first message: sent to its one recipient."""
    outcome = MessageOutcome(
        sender="alice@example.org",
        recipients=[RecipientOutcome("bob@example.net", Reply(250, ("2.1.5 Ok",)))],
        mail_reply=Reply(250, ("2.1.0 Ok",)),
        final_reply=Reply(250, ("2.0.0 Ok: queued as ABC123",)),
        size=321,
    )
    outcome.settle()
    return MessageRecord(
        outcome,
        message_id="<report.1@example.org>",
        subject="Quarterly report",
        headers="From: alice@example.org\nTo: bob@example.net\nSubject: Quarterly report",
    )


def partly_refused_message() -> MessageRecord:
    """CONVERSATION's second message: sent, one of its two recipients refused."""
    outcome = MessageOutcome(
        sender="alice@example.org",
        recipients=[
            RecipientOutcome("carol@example.net", Reply(250, ("2.1.5 Ok",))),
            RecipientOutcome(
                "nobody@example.net",
                Reply(550, ("5.1.1 <nobody@example.net>: Recipient address rejected",)),
            ),
        ],
        mail_reply=Reply(250, ("2.1.0 Ok",)),
        final_reply=Reply(250, ("2.0.0 Ok: queued as DEF456",)),
        size=222,
    )
    outcome.settle()
    return MessageRecord(
        outcome,
        message_id="<lunch.2@example.org>",
        subject="Lunch?",
        headers="From: alice@example.org\nTo: carol@example.net, nobody@example.net",
    )


def make_transcript(**overrides: object) -> Transcript:
    """A STARTTLS session in which two messages were sent, one with a refused recipient;
    ``overrides`` set any of the transcript's attributes."""
    transcript = Transcript(
        host="mail.example.com",
        port=587,
        security="starttls",
        started_at=STARTED,
        ended_at=STARTED + timedelta(seconds=1.25),
        peer_address="192.0.2.10:587",
        local_address="198.51.100.7:53422",
        tls=TLSInfo(
            version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            peer_subject="CN=mail.example.com",
            peer_issuer="CN=Example CA,O=Example",
            peer_not_before="Jan  1 00:00:00 2024 GMT",
            peer_not_after="Jan  1 00:00:00 2025 GMT",
            peer_fingerprint_sha256="ab" * 32,
        ),
        lines=lines_of(CONVERSATION),
        messages=[sent_message(), partly_refused_message()],
    )
    for name, value in overrides.items():
        setattr(transcript, name, value)
    return transcript


def recorded(transcript: Transcript | None = None, **overrides: object) -> Session:
    """The Session row of ``transcript`` recorded, or of ``make_transcript(**overrides)``."""
    if transcript is None:
        transcript = make_transcript(**overrides)
    else:
        assert not overrides, "overrides go with make_transcript()'s session only"
    session = record(transcript)
    assert session is not None
    return session


def session_at(server: Address) -> Session:
    """The one session recorded with ``server`` (its host and port)."""
    return Session.objects.get(host=server.host, port=server.port)


def transcript(session: Session) -> list[tuple[str, str]]:
    """The session's transcript as (direction, text) pairs."""
    return [(line.direction, line.text) for line in session.transcript_lines()]


def client_commands(session: Session) -> list[str]:
    """What the client said ("C" lines), in order."""
    return [text for direction, text in transcript(session) if direction == "C"]


def server_lines(session: Session) -> list[str]:
    """What the server said ("S" lines), in order."""
    return [text for direction, text in transcript(session) if direction == "S"]
