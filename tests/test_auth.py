"""AUTH PLAIN and LOGIN against aiosmtpd, and that no form of the password reaches the
audit log: every table of the database is searched for it after each session."""

from __future__ import annotations

import base64
import json
import smtplib
from collections.abc import Iterable

import pytest
from django.apps import apps
from django.core import serializers
from django.core.mail import send_mail
from django.db import connection as db

from django_sockmail.models import Session, TranscriptChunk
from tests.servers import (
    USERS,
    MakeServer,
    SMTPServer,
    backend_for,
    note_mail_from,
    replying_authenticator,
)
from tests.toolkit import client_commands

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Deliberately: AUTH in cleartext keeps these tests about AUTH alone.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

USERNAME = "alice"
PASSWORD = USERS[USERNAME]
WRONG_PASSWORD = "Tr0ub4dor&3 is not the password"
MECHANISMS = ("PLAIN", "LOGIN")


def auth_server(make_smtpd: MakeServer, mechanism: str) -> SMTPServer:
    """aiosmtpd that offers only ``mechanism`` and refuses MAIL before AUTH."""
    others = [m for m in MECHANISMS if m != mechanism]
    return make_smtpd(
        authenticator=replying_authenticator,
        auth_require_tls=False,
        auth_required=True,
        auth_exclude_mechanism=others,
    )


def send(server: SMTPServer, password: str) -> int:
    backend = backend_for(server, username=USERNAME, password=password)
    return send_mail("Subject", "Body", "from@example.com", ["to@example.com"], connection=backend)


def secret_forms(password: str) -> list[str]:
    """The password, and what any base64 text holding it must contain: for each of the
    three alignments the password can have in base64, the run of characters encoding
    only password bytes. Covers the PLAIN token, the LOGIN line and anything else."""
    raw = password.encode()
    forms = [password, base64.b64encode(f"\0{USERNAME}\0{password}".encode()).decode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        whole_groups = (shift + len(raw)) // 3
        forms.append(encoded[(4 if shift else 0) : whole_groups * 4])
    assert all(len(form) >= 20 for form in forms)
    return forms


def stored_chunks() -> list[str]:
    """Every transcript chunk's ``lines`` column as the database holds it: the JSON text,
    read with a raw SELECT so that no model or field stands in between."""
    table = db.ops.quote_name(TranscriptChunk._meta.db_table)
    column = TranscriptChunk._meta.get_field("lines").column
    assert column is not None
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {db.ops.quote_name(column)} FROM {table}")
        return [raw for (raw,) in cursor.fetchall()]


def decoded_strings(raw: str) -> list[str]:
    """Every string a chunk's JSON holds once decoded (each line's direction and text),
    whatever escapes the encoder chose for it."""
    return [value for line in json.loads(raw) for value in line if isinstance(value, str)]


def json_forms(secret: str) -> set[str]:
    """The ways a JSON encoder writes ``secret`` inside a string: as it is, and escaped
    (non-ASCII as \\u escapes or not; quotes, backslashes and control characters)."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


def database_text() -> str:
    """Everything in the database as text: every row of every model, the serializer's
    dump of each, a raw SELECT of every table, and the transcript chunks' JSON decoded
    (so that no escape in it hides a secret)."""
    chunks: list[str] = []
    for model in apps.get_models():
        rows = model._default_manager.all()
        chunks.append(serializers.serialize("json", rows))
        chunks.extend(repr(row) for row in rows.values_list())
    with db.cursor() as cursor:
        for table in db.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {db.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    for raw in stored_chunks():
        chunks.append(raw)
        chunks.extend(decoded_strings(raw))
    return "\n".join(chunks)


def assert_no_secret_in_transcript(secrets: Iterable[str]) -> None:
    """No form of any of ``secrets`` is in the stored transcript: neither in the chunks'
    raw JSON text, in any way JSON writes it, nor in the lines decoded from it."""
    raws = stored_chunks()
    assert raws  # so the search below searched something
    raw_text = "\n".join(raws)
    decoded = "\n".join(text for raw in raws for text in decoded_strings(raw))
    assert decoded  # the JSON held lines
    for secret in secrets:
        for form in json_forms(secret):
            assert form not in raw_text, form
        assert secret not in decoded, secret


def assert_no_secret_stored(password: str) -> None:
    assert Session.objects.exists()  # so the search below searched something
    stored = database_text()
    for form in secret_forms(password):
        assert form not in stored
    assert_no_secret_in_transcript(secret_forms(password))


def auth_commands(session: Session) -> list[str]:
    commands = client_commands(session)
    start = next(i for i, c in enumerate(commands) if c.startswith("AUTH"))
    end = next((i for i, c in enumerate(commands) if c.startswith(("MAIL", "QUIT"))), len(commands))
    return commands[start:end]


REDACTED_AUTH = {"PLAIN": ["AUTH PLAIN ********"], "LOGIN": ["AUTH LOGIN", "********", "********"]}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_with_the_right_password_sends_and_stores_no_secret(
    make_smtpd: MakeServer, mechanism: str
) -> None:
    server = auth_server(make_smtpd, mechanism)

    assert send(server, PASSWORD) == 1

    assert len(server.messages) == 1  # the server refuses MAIL until AUTH succeeded
    session = Session.objects.get()
    assert session.status == "ok"
    assert auth_commands(session) == REDACTED_AUTH[mechanism]
    assert any(
        line.direction == "S" and line.text.startswith("235") for line in session.transcript_lines()
    )
    assert_no_secret_stored(PASSWORD)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_with_a_wrong_password_raises_and_sends_nothing(
    make_smtpd: MakeServer, mechanism: str
) -> None:
    server = auth_server(make_smtpd, mechanism)
    mail_from = note_mail_from(server)

    with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
        send(server, WRONG_PASSWORD)

    assert excinfo.value.smtp_code == 535
    assert mail_from == []
    assert server.messages == []
    for form in secret_forms(WRONG_PASSWORD):
        assert form not in f"{excinfo.value} {excinfo.value.args!r}"
    session = Session.objects.get()
    assert session.status == "failed"
    assert "SMTPAuthenticationError" in session.error
    assert auth_commands(session) == REDACTED_AUTH[mechanism]
    assert_no_secret_stored(WRONG_PASSWORD)


def test_credentials_for_a_server_without_auth_are_not_supported(smtpd: SMTPServer) -> None:
    # aiosmtpd offers AUTH only over TLS by default; this one has no TLS, so no AUTH.
    mail_from = note_mail_from(smtpd)

    with pytest.raises(smtplib.SMTPNotSupportedError):
        send(smtpd, PASSWORD)

    assert mail_from == []
    assert smtpd.messages == []
    session = Session.objects.get()
    assert session.status == "failed"
    assert not any(c.startswith(("AUTH", "MAIL")) for c in client_commands(session))
    assert_no_secret_stored(PASSWORD)


def json_escaped(text: str) -> str:
    """``text`` as a JSON string with every character a \\u escape: valid JSON, decoded
    as ``text``, and not one character of ``text`` left as it is."""
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


@pytest.mark.parametrize("escaped", [False, True], ids=["as-is", "json-escaped"])
def test_the_secret_search_would_find_a_leaked_password(
    make_smtpd: MakeServer, escaped: bool
) -> None:
    """The search itself works: a transcript line holding the LOGIN password is found,
    in a chunk's stored JSON as it is, and when every character of it is escaped there
    (found once decoded)."""
    server = auth_server(make_smtpd, "LOGIN")
    assert send(server, PASSWORD) == 1
    session = Session.objects.get()
    leaked = base64.b64encode(PASSWORD.encode()).decode()
    [chunk] = TranscriptChunk.objects.filter(session=session, lines__contains='"********"')
    written = json_escaped(leaked) if escaped else json.dumps(leaked)
    chunk.lines = chunk.lines.replace('"********"', written, 1)
    chunk.save(update_fields=["lines"])
    assert leaked in [line.text for line in session.transcript_lines()]  # a real leak
    assert (leaked in "\n".join(stored_chunks())) is not escaped
    with pytest.raises(AssertionError):
        assert_no_secret_in_transcript(secret_forms(PASSWORD))
    with pytest.raises(AssertionError):
        assert_no_secret_stored(PASSWORD)
