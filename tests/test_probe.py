"""manage.py sockmail_probe: one session against aiosmtpd (STARTTLS, implicit TLS, AUTH)
and scripted servers, printed line by line as it happens and recorded like any other;
every failure a one-line error, a non-zero exit and a failed session on the record."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_sockmail import recorder
from django_sockmail.management.commands import sockmail_probe
from django_sockmail.management.commands.sockmail_probe import PASSWORD_ENV, parse_target
from django_sockmail.models import Session
from tests.instances import free_port
from tests.servers import (
    STALL,
    USERS,
    MakeServer,
    Responder,
    Scripted,
    SMTPServer,
    replying_authenticator,
    server_context,
)
from tests.test_auth import assert_no_secret_stored, secret_forms
from tests.test_tls import der_fingerprint
from tests.toolkit import target

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "alice"
PASSWORD = USERS[USERNAME]
WRONG_PASSWORD = "Tr0ub4dor&3 is not the password"
STARTTLS_EHLO = b"250-scripted.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n"


@dataclass
class Probe:
    """What one run of the command printed, and the error it ended with, if any."""

    out: str
    err: str
    error: CommandError | None

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def transcript(self) -> list[str]:
        """The live part: every line up to the first empty one."""
        return self.lines[: self.lines.index("")]

    def field(self, label: str) -> str:
        """The value of an indented ``label: value`` line of the summary."""
        [value] = [
            line.split(":", 1)[1].strip()
            for line in self.lines
            if line.startswith("  ") and line.strip().startswith(f"{label}:")
        ]
        return value

    def section(self, heading: str) -> list[str]:
        """The indented lines under ``heading``."""
        start = self.lines.index(heading) + 1
        end = next(
            (i for i in range(start, len(self.lines)) if not self.lines[i].startswith("  ")),
            len(self.lines),
        )
        return [line.strip() for line in self.lines[start:end]]


def probe(*args: str, stdout: StringIO | None = None, **options: Any) -> Probe:
    out, err = stdout or StringIO(), StringIO()
    try:
        # A server that never answers fails the test instead of hanging it.
        call_command("sockmail_probe", "--timeout", "5", *args, stdout=out, stderr=err, **options)
    except CommandError as error:
        return Probe(out.getvalue(), err.getvalue(), error)
    return Probe(out.getvalue(), err.getvalue(), None)


def recorded_lines(session: Session) -> list[str]:
    """The session's transcript in the database, in the form the probe prints."""
    return [
        f"* {line.text}" if line.direction == "*" else f"{line.direction}: {line.text}"
        for line in session.transcript_lines()
    ]


def unit_name(name: x509.Name) -> str:
    """The organizational unit trustme names each certificate with (unique per run)."""
    [unit] = name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert isinstance(unit.value, str)
    return unit.value


class Terminal(StringIO):
    """Standard input as the command sees it in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_password_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    def getpass(prompt: str = "", stream: Any = None) -> str:
        raise AssertionError("the password was asked for")

    monkeypatch.setattr("getpass.getpass", getpass)


# A successful probe


def test_starttls_probe_prints_the_session_as_recorded_with_capabilities_and_certificate(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    server_cert: trustme.LeafCert,
    trust_ca: str,
) -> None:
    server = make_smtpd(tls_context=server_ctx, require_starttls=True)

    result = probe(target(server), "--starttls", "--ehlo", "probe.example")

    assert result.error is None, result.error
    lines = result.transcript
    assert lines[0] == f"* connecting to 127.0.0.1 port {server.port}"
    assert lines[1].startswith(f"* connected to 127.0.0.1:{server.port} from 127.0.0.1:")
    assert lines[2].startswith("S: 220 ")
    commands = [line for line in lines if line.startswith("C: ")]
    assert commands == ["C: EHLO probe.example", "C: STARTTLS", "C: EHLO probe.example", "C: QUIT"]
    assert server.handler.ehlo_names == ["probe.example", "probe.example"]
    [established] = [i for i, line in enumerate(lines) if line.startswith("* TLS established: ")]
    assert lines.index("C: STARTTLS") < established < lines.index("C: EHLO probe.example", 4)
    assert lines[-3:] == ["C: QUIT", "S: 221 Bye", "* connection closed"]

    # The capabilities are those offered over TLS (STARTTLS is no longer among them).
    capabilities = result.section("Capabilities:")
    assert capabilities == ["SIZE 33554432", "8BITMIME", "SMTPUTF8", "AUTH LOGIN PLAIN", "HELP"]

    session = Session.objects.get()
    assert session.status == "ok"
    assert session.security == "starttls"
    assert session.tls_version in ("TLSv1.2", "TLSv1.3")
    assert f"TLS: {session.tls_version}, cipher {session.tls_cipher}" in result.lines
    assert f"* TLS established: {session.tls_version} {session.tls_cipher}" in lines
    cert = x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes())
    assert f"organizationalUnitName={unit_name(cert.subject)}" in result.field("subject")
    assert f"organizationalUnitName={unit_name(cert.issuer)}" in result.field("issuer")
    assert result.field("valid from") == session.tls_peer_not_before != ""
    assert result.field("valid until") == session.tls_peer_not_after != ""
    assert result.field("SHA-256") == der_fingerprint(server_cert) == session.tls_peer_fingerprint

    # What was printed is what the audit log holds, line for line.
    assert lines == recorded_lines(session)
    assert result.lines[-2:] == [
        f"Recorded as session {session.pk} (ok).",
        f"Probe of 127.0.0.1:{server.port} succeeded.",
    ]
    assert server.messages == []  # a probe sends no mail


def test_implicit_tls_probe_shows_the_tls_session_before_the_greeting(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    server_cert: trustme.LeafCert,
    trust_ca: str,
) -> None:
    server = make_smtpd(ssl_context=server_ctx)

    result = probe(target(server), "--ssl")

    assert result.error is None, result.error
    lines = result.transcript
    assert lines[2].startswith("* TLS established: TLSv1.")
    assert lines[3].startswith("S: 220 ")
    assert "C: STARTTLS" not in lines
    assert result.field("SHA-256") == der_fingerprint(server_cert)
    session = Session.objects.get()
    assert (session.status, session.security) == ("ok", "ssl")
    assert lines == recorded_lines(session)


def test_each_line_is_printed_as_it_happens_not_when_the_session_ends(
    scripted: Scripted,
) -> None:
    responder = Responder()
    server = scripted(responder)
    writes: list[tuple[str, list[bytes]]] = []

    class Watching(StringIO):
        """Notes, with each line written, what the server had received by then."""

        def write(self, text: str) -> int:
            writes.append((text.rstrip("\n"), list(server.lines)))
            return super().write(text)

    result = probe(target(server), "--ehlo", "probe.example", stdout=Watching())

    assert result.error is None, result.error
    heard = dict(writes)
    assert heard["S: 220 scripted.test ESMTP"] == []
    assert heard["C: EHLO probe.example"] == []  # printed before it is sent
    # The EHLO reply is printed while the session is still going: QUIT is yet to come.
    assert heard["S: 250 ENHANCEDSTATUSCODES"] == [b"EHLO probe.example"]
    assert heard["C: QUIT"] == [b"EHLO probe.example"]


def test_an_ipv6_address_in_brackets(make_smtpd: MakeServer) -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = make_smtpd(host="::1")

    result = probe(f"[::1]:{server.port}")

    assert result.error is None, result.error
    assert result.transcript[0] == f"* connecting to ::1 port {server.port}"
    assert result.transcript[1].startswith(f"* connected to [::1]:{server.port} from [::1]:")
    assert result.lines[-1] == f"Probe of [::1]:{server.port} succeeded."
    session = Session.objects.get()
    assert (session.host, session.port, session.status) == ("::1", server.port, "ok")


def test_a_server_that_only_takes_helo_has_no_capabilities(scripted: Scripted) -> None:
    server = scripted(Responder({"EHLO": b"502 5.5.2 Command not recognized\r\n"}))

    result = probe(target(server), "--ehlo", "probe.example")

    assert result.error is None, result.error
    assert "C: HELO probe.example" in result.transcript
    assert "Capabilities: none (the server refused EHLO and took HELO)" in result.lines
    assert Session.objects.get().status == "ok"


# Trust


@pytest.mark.parametrize("security", ["--starttls", "--ssl"])
def test_an_untrusted_certificate_fails_with_one_line_and_a_failed_session(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, untrusted: None, security: str
) -> None:
    if security == "--starttls":
        server = make_smtpd(tls_context=server_ctx, require_starttls=True)
    else:
        server = make_smtpd(ssl_context=server_ctx)

    result = probe(target(server), security)

    assert result.error is not None
    message = str(result.error)
    assert message.startswith(f"Probe of {target(server)} failed: SMTPTLSError: TLS with ")
    assert "certificate verify failed" in message
    assert "\n" not in message and "('" not in message  # one line, not a tuple's repr
    assert result.error.returncode != 0
    assert "Certificate:" not in result.lines
    session = Session.objects.get()
    assert session.status == "failed"
    assert "certificate verify failed" in session.error
    assert session.tls_version == ""
    assert result.transcript == recorded_lines(session)
    assert result.lines[-1] == f"Recorded as session {session.pk} (failed)."
    assert f"* error: {session.error}" in result.transcript


def test_cafile_makes_the_certificate_trusted(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, ca: trustme.CA, tmp_path: Path,
    untrusted: None,
) -> None:  # fmt: skip
    server = make_smtpd(tls_context=server_ctx, require_starttls=True)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    failed = probe(target(server), "--starttls")
    assert failed.error is not None and "certificate verify failed" in str(failed.error)

    result = probe(target(server), "--starttls", "--cafile", str(cafile))

    assert result.error is None, result.error
    assert result.field("SHA-256")
    assert list(Session.objects.order_by("pk").values_list("status", flat=True)) == [
        "failed",
        "ok",
    ]


def test_cafile_is_the_only_trust(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, trust_ca: str, tmp_path: Path
) -> None:
    # The system store (SSL_CERT_FILE) trusts the server's CA; --cafile names another.
    server = make_smtpd(ssl_context=server_ctx)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))

    result = probe(target(server), "--ssl", "--cafile", str(other))

    assert result.error is not None
    assert "certificate verify failed" in str(result.error)
    assert Session.objects.get().status == "failed"


def test_an_unreadable_cafile_is_an_error_before_connecting(
    scripted: Scripted, tmp_path: Path
) -> None:
    server = scripted(Responder())

    result = probe(target(server), "--starttls", "--cafile", str(tmp_path / "missing.pem"))

    assert result.error is not None
    assert str(result.error).startswith(f"--cafile {tmp_path / 'missing.pem'}: ")
    assert server.conversations == []
    assert not Session.objects.exists()


# AUTH


def auth_server(make_smtpd: MakeServer, ctx: ssl.SSLContext, mechanism: str) -> SMTPServer:
    """aiosmtpd with STARTTLS, offering AUTH ``mechanism`` alone over TLS."""
    others = [m for m in ("PLAIN", "LOGIN") if m != mechanism]
    return make_smtpd(
        tls_context=ctx,
        require_starttls=True,
        authenticator=replying_authenticator,
        auth_exclude_mechanism=others,
    )


def assert_no_secret_printed(result: Probe, password: str) -> None:
    for form in secret_forms(password):
        assert form not in result.out + result.err + str(result.error)


REDACTED_AUTH = {
    "PLAIN": ["C: AUTH PLAIN ********"],
    "LOGIN": ["C: AUTH LOGIN", "C: ********", "C: ********"],
}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_the_password_from_the_environment(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    trust_ca: str,
    monkeypatch: pytest.MonkeyPatch,
    no_prompt: None,
    mechanism: str,
) -> None:
    server = auth_server(make_smtpd, server_ctx, mechanism)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)

    result = probe(target(server), "--starttls", "--auth", USERNAME, stdin=Terminal())

    assert result.error is None, result.error
    commands = [line for line in result.transcript if line.startswith("C: ")]
    assert commands[3:-1] == REDACTED_AUTH[mechanism]
    assert any(line.startswith("S: 235 ") for line in result.transcript)
    assert f"Authenticated as {USERNAME} with AUTH {mechanism}." in result.lines
    assert_no_secret_printed(result, PASSWORD)
    session = Session.objects.get()
    assert session.status == "ok"
    assert result.transcript == recorded_lines(session)
    assert_no_secret_stored(PASSWORD)


def test_a_wrong_password_fails_and_is_recorded_without_the_password(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    trust_ca: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = auth_server(make_smtpd, server_ctx, "PLAIN")
    monkeypatch.setenv(PASSWORD_ENV, WRONG_PASSWORD)

    result = probe(target(server), "--starttls", "--auth", USERNAME)

    assert result.error is not None
    assert str(result.error) == (
        f"Probe of {target(server)} failed: "
        "SMTPAuthenticationError: 535 5.7.8 Authentication credentials invalid"
    )
    assert not any(line.startswith("Authenticated") for line in result.lines)
    # What was learnt before the failure is still shown.
    assert "AUTH LOGIN PLAIN" not in result.section("Capabilities:")  # LOGIN excluded
    assert "AUTH PLAIN" in result.section("Capabilities:")
    assert result.field("SHA-256")
    session = Session.objects.get()
    assert session.status == "failed"
    assert session.error == "SMTPAuthenticationError: 535 5.7.8 Authentication credentials invalid"
    assert_no_secret_printed(result, WRONG_PASSWORD)
    assert_no_secret_stored(WRONG_PASSWORD)


def test_without_the_variable_the_password_is_asked_for_in_a_terminal(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    trust_ca: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = auth_server(make_smtpd, server_ctx, "PLAIN")
    prompts: list[str] = []

    def getpass(prompt: str = "", stream: Any = None) -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", getpass)

    result = probe(target(server), "--starttls", "--auth", USERNAME, stdin=Terminal())

    assert result.error is None, result.error
    assert prompts == [f"Password for {USERNAME} at 127.0.0.1: "]
    assert f"Authenticated as {USERNAME} with AUTH PLAIN." in result.lines
    assert_no_secret_printed(result, PASSWORD)
    assert_no_secret_stored(PASSWORD)


@pytest.mark.parametrize("variable", [None, ""], ids=["unset", "empty"])
def test_auth_without_the_variable_or_a_terminal_is_refused_before_connecting(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch, no_prompt: None, variable: str | None
) -> None:
    if variable is not None:
        monkeypatch.setenv(PASSWORD_ENV, variable)
    server = scripted(Responder())

    result = probe(target(server), "--auth", USERNAME, stdin=StringIO())

    assert result.error is not None
    assert str(result.error) == (
        f"--auth {USERNAME}: no password. Set {PASSWORD_ENV}, "
        "or run the command in a terminal to be asked for it."
    )
    assert result.out == ""
    assert server.conversations == []
    assert not Session.objects.exists()


def test_an_empty_answer_to_the_prompt_is_refused(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="", stream=None: "")
    server = scripted(Responder())

    result = probe(target(server), "--auth", USERNAME, stdin=Terminal())

    assert result.error is not None
    assert str(result.error) == "No password given."
    assert server.conversations == []


# Failures


FAILURES = {
    "554-greeting": (
        {"GREETING": b"554 5.7.1 No SMTP service here\r\n"},
        [],
        "SMTPConnectError: 554 5.7.1 No SMTP service here",
    ),
    "multi-line-554-greeting": (
        {"GREETING": b"554-5.7.1 Go away\r\n554 5.7.1 Really\r\n"},
        [],
        "SMTPConnectError: 554 5.7.1 Go away; 5.7.1 Really",
    ),
    "421-to-ehlo": (
        {"EHLO": b"421 4.3.2 Shutting down\r\n"},
        [],
        "SMTPServerDisconnected: The server closed the session: 421 4.3.2 Shutting down",
    ),
    "starttls-not-offered": (
        {},
        ["--starttls"],
        "SMTPNotSupportedError: STARTTLS was required but the server does not offer it",
    ),
    "starttls-refused": (
        {"EHLO": STARTTLS_EHLO, "STARTTLS": b"454 4.7.0 TLS not available\r\n"},
        ["--starttls"],
        "SMTPCommandError: 454 4.7.0 TLS not available",
    ),
    "garbage-to-quit": (
        {"QUIT": b"what?\r\n"},
        [],
        "SMTPProtocolError: ",
    ),
}


@pytest.mark.parametrize(("replies", "args", "expected"), FAILURES.values(), ids=FAILURES.keys())
def test_a_failing_server_gives_one_line_a_non_zero_exit_and_a_failed_session(
    scripted: Scripted, replies: dict[str, bytes], args: list[str], expected: str
) -> None:
    server = scripted(Responder(dict(replies)))

    result = probe(target(server), *args)

    assert result.error is not None
    assert result.error.returncode != 0
    message = str(result.error)
    assert message.startswith(f"Probe of {target(server)} failed: {expected}")
    assert "\n" not in message
    session = Session.objects.get()
    assert session.status == "failed"
    assert session.error.startswith(expected.split(";")[0])
    assert f"* error: {session.error}" in result.out
    # (A multi-line reply makes a multi-line error line: compare the text.)
    assert result.out.startswith("\n".join(recorded_lines(session)) + "\n\n")
    assert result.lines[-1] == f"Recorded as session {session.pk} (failed)."
    assert not any(line.endswith("succeeded.") for line in result.lines)


def test_nothing_listening_is_a_failed_session() -> None:
    port = free_port()

    result = probe(f"127.0.0.1:{port}")

    assert result.error is not None
    assert str(result.error).startswith(
        f"Probe of 127.0.0.1:{port} failed: SMTPConnectError: Could not connect to "
        f"127.0.0.1:{port}: "
    )
    assert "refused" in str(result.error).lower()
    assert result.transcript[0] == f"* connecting to 127.0.0.1 port {port}"
    session = Session.objects.get()
    assert (session.status, session.port, session.peer_address) == ("failed", port, "")


def test_a_silent_server_times_out(scripted: Scripted) -> None:
    server = scripted(Responder({"GREETING": STALL}))

    result = probe(target(server), "--timeout", "0.3")

    assert result.error is not None
    assert str(result.error) == (
        f"Probe of {target(server)} failed: "
        "SMTPTimeoutError: Timed out after 0.3 s waiting for the greeting"
    )
    assert Session.objects.get().status == "timeout"


@pytest.mark.parametrize(("args", "port"), [([], 25), (["--starttls"], 587), (["--ssl"], 465)])
def test_the_default_port_follows_the_security(
    monkeypatch: pytest.MonkeyPatch, args: list[str], port: int
) -> None:
    dialled: list[tuple[str, int]] = []

    def getaddrinfo(host: str, port: int, *rest: Any, **kwargs: Any) -> Any:
        # The name is looked up for the port the probe chose; nothing is reached.
        dialled.append((host, port))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    result = probe("mail.example", *args)

    assert dialled == [("mail.example", port)]
    assert result.error is not None
    assert f"Could not connect to mail.example:{port}" in str(result.error)
    assert Session.objects.get().port == port


# The audit log


@pytest.mark.parametrize("works", [True, False], ids=["ok", "failed"])
def test_no_record_writes_nothing(scripted: Scripted, works: bool) -> None:
    greeting = b"220 scripted.test ESMTP\r\n" if works else b"554 5.7.1 No\r\n"
    server = scripted(Responder({"GREETING": greeting}))

    result = probe(target(server), "--no-record")

    assert (result.error is None) == works
    assert result.transcript[2] == f"S: {greeting.decode().strip()}"
    assert "Not recorded (--no-record)." in result.lines
    assert not Session.objects.exists()


def test_the_record_sessions_setting_is_respected(scripted: Scripted) -> None:
    server = scripted(Responder())

    with override_settings(SOCKMAIL={"RECORD_SESSIONS": False}):
        result = probe(target(server))

    assert result.error is None, result.error
    assert "Not recorded (SOCKMAIL['RECORD_SESSIONS'] is False)." in result.lines
    assert not Session.objects.exists()


def test_an_audit_log_that_cannot_be_written_is_reported(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Session:
        raise RuntimeError("the database is down")

    monkeypatch.setattr(recorder, "_write", broken)
    server = scripted(Responder())

    result = probe(target(server))

    assert result.error is None, result.error  # the probe itself worked
    assert result.err == "Could not record the session: see the django_sockmail logger.\n"
    assert not Session.objects.exists()


def test_an_interrupted_probe_is_still_recorded(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scripted(Responder())

    class Interrupting(sockmail_probe.LiveTranscript):
        def on_command(self, text: str) -> None:
            super().on_command(text)
            raise KeyboardInterrupt

    monkeypatch.setattr(sockmail_probe, "LiveTranscript", Interrupting)

    with pytest.raises(KeyboardInterrupt):
        probe(target(server))

    session = Session.objects.get()
    assert session.status == "failed"
    assert session.error == "KeyboardInterrupt: "


# The command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mail.example:0"], "HOST[:PORT]: 'mail.example:0': the port must be"),
        (["mail.example:\u00b2"], "HOST[:PORT]: 'mail.example:\u00b2': the port must be"),
        (["mail.example:\u0661\u0662"], "the port must be a number from 1 to 65535"),
        (["[mail.example]:25"], "HOST[:PORT]: '[mail.example]:25': brackets must hold"),
        (["mail.example", "--timeout", "0"], "--timeout must be more than 0 seconds"),
        (["mail.example", "--ehlo", "two words"], "--ehlo 'two words': a name without"),
        (["mail.example", "--auth", "al\nice"], "--auth 'al\\nice': a user name without"),
        (["mail.example", "--cafile", "ca.pem"], "--cafile needs --starttls or --ssl."),
        (["mail.example", "--starttls", "--ssl"], "not allowed with argument"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("connected")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    result = probe(*args)

    assert result.error is not None
    assert message in str(result.error)
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail.example", ("mail.example", 25)),
        ("mail.example:2525", ("mail.example", 2525)),
        ("192.0.2.1", ("192.0.2.1", 25)),
        ("192.0.2.1:26", ("192.0.2.1", 26)),
        ("[2001:db8::1]", ("2001:db8::1", 25)),
        ("[2001:db8::1]:2525", ("2001:db8::1", 2525)),
        ("[::1]:65535", ("::1", 65535)),
        ("2001:db8::1", ("2001:db8::1", 25)),
        (" mail.example ", ("mail.example", 25)),
    ],
)
def test_targets(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text, 25) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":25",
        "mail.example:",
        "mail.example:0",
        "mail.example:65536",
        "mail.example:abc",
        "mail.example:+25",
        "mail.example:2:5",
        "[::1",
        "[::1]:",
        "[::1]25",
        "[mail.example]:25",
        "[192.0.2.1]:25",
        "mail example",
        "mail.example\r\nRCPT",
    ],
)
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_target(text, 25)


def run_manage_py(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "django", "sockmail_probe", "--timeout", "5", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_exit_status_from_the_command_line(scripted: Scripted, smtpd: SMTPServer) -> None:
    refusing = scripted(Responder({"GREETING": b"554 5.7.1 No SMTP service here\r\n"}))

    # --no-record: the tests' in-memory database does not reach another process.
    failed = run_manage_py(target(refusing), "--no-record")
    worked = run_manage_py(target(smtpd), "--no-record")

    assert failed.returncode == 1
    assert failed.stderr == (
        f"CommandError: Probe of {target(refusing)} failed: "
        "SMTPConnectError: 554 5.7.1 No SMTP service here\n"
    )
    assert "S: 554 5.7.1 No SMTP service here" in failed.stdout
    assert worked.returncode == 0, worked.stderr
    assert worked.stderr == ""
    assert worked.stdout.splitlines()[-1] == f"Probe of {target(smtpd)} succeeded."


@pytest.mark.django_db(transaction=True)
def test_the_probe_trusts_the_ca_bundle_from_settings(
    make_smtpd: Any, ca: Any, server_cert: Any, tmp_path: Any
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    server = make_smtpd(tls_context=context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with override_settings(SOCKMAIL={"SSL_CAFILE": str(bundle)}):
        call_command("sockmail_probe", f"127.0.0.1:{server.port}", "--starttls", stdout=StringIO())
    session = Session.objects.get()
    assert session.status == "ok" and session.tls_version.startswith("TLSv1")


# Terminal safety: the server's text reaches the terminal with its control characters
# escaped (\xNN), as in the transcript download; the audit log keeps it as it was said.

# Set the terminal's title (OSC … BEL), clear the screen (ESC [2J), and a CSI written as
# the C1 control U+009B (in UTF-8 on the wire), then a bare CR that would overwrite the line.
HOSTILE = "\x1b]0;owned\x07\x1b[2J\u009b31mred\rspoof"
ESCAPED = "\\x1b]0;owned\\x07\\x1b[2J\\x9b31mred\\x0dspoof"
HOSTILE_BYTES = HOSTILE.encode()
assert b"\xc2\x9b" in HOSTILE_BYTES


def raw_controls(text: str) -> list[str]:
    """The control characters (Unicode Cc: C0, DEL, C1) in ``text`` that a terminal would
    act upon: all but newline and tab."""
    return [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t"]


def test_server_text_is_escaped_in_the_live_lines_and_the_capabilities(
    scripted: Scripted,
) -> None:
    server = scripted(
        Responder(
            {
                "GREETING": b"220 scripted.test " + HOSTILE_BYTES + b"\r\n",
                "EHLO": b"250-scripted.test " + HOSTILE_BYTES + b"\r\n"
                b"250-X-EVIL " + HOSTILE_BYTES + b"\r\n250 8BITMIME\r\n",
                "QUIT": b"221 " + HOSTILE_BYTES + b"\r\n",
            }
        )
    )
    writes: list[str] = []

    class Watching(StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return super().write(text)

    result = probe(target(server), "--ehlo", "probe.example", stdout=Watching())

    assert result.error is None, result.error
    assert raw_controls(result.out) == [] and raw_controls(result.err) == []
    assert [w for w in writes if raw_controls(w)] == []  # nor any single write
    lines = result.transcript
    assert f"S: 220 scripted.test {ESCAPED}" in lines
    assert f"S: 250-scripted.test {ESCAPED}" in lines
    assert f"S: 221 {ESCAPED}" in lines
    # (The EHLO parser takes the CR for a space between the keyword's parameters.)
    assert f"X-EVIL {ESCAPED.replace(chr(92) + 'x0d', ' ')}" in result.section("Capabilities:")
    # The audit log keeps what the server said; only its display is escaped.
    session = Session.objects.get()
    said = [line.text for line in session.transcript_lines() if line.direction == "S"]
    assert f"220 scripted.test {HOSTILE}" in said
    assert f"250-X-EVIL {HOSTILE}" in said


HOSTILE_FAILURES = {
    "refused-greeting": (
        {"GREETING": b"554 5.7.1 " + HOSTILE_BYTES + b"\r\n"},
        [],
        f"SMTPConnectError: 554 5.7.1 {ESCAPED}",
    ),
    "multi-line-refusal": (
        {"GREETING": b"554-5.7.1 \x1b[2J\r\n554 5.7.1 " + HOSTILE_BYTES + b"\r\n"},
        [],
        f"SMTPConnectError: 554 5.7.1 \\x1b[2J; 5.7.1 {ESCAPED}",
    ),
    "421-to-ehlo": (
        {"EHLO": b"421 4.3.2 " + HOSTILE_BYTES + b"\r\n"},
        [],
        f"SMTPServerDisconnected: The server closed the session: 421 4.3.2 {ESCAPED}",
    ),
    "starttls-refused": (
        {"EHLO": STARTTLS_EHLO, "STARTTLS": b"454 4.7.0 " + HOSTILE_BYTES + b"\r\n"},
        ["--starttls"],
        f"SMTPCommandError: 454 4.7.0 {ESCAPED}",
    ),
}


@pytest.mark.parametrize(
    ("replies", "args", "expected"), HOSTILE_FAILURES.values(), ids=HOSTILE_FAILURES.keys()
)
def test_server_text_is_escaped_in_the_final_error(
    scripted: Scripted, replies: dict[str, bytes], args: list[str], expected: str
) -> None:
    server = scripted(Responder(dict(replies)))

    result = probe(target(server), *args)

    assert result.error is not None
    message = str(result.error)
    assert message == f"Probe of {target(server)} failed: {expected}"
    assert raw_controls(message) == []
    assert raw_controls(result.out) == [] and raw_controls(result.err) == []
    # Live too: the refusal as it came, and the error line before the summary.
    assert any(line.startswith("S: ") and line.endswith(ESCAPED) for line in result.transcript)
    live = "\n".join(result.transcript)
    assert ESCAPED in live[live.index("* error: ") :]  # (a multi-line reply: many lines)
    assert HOSTILE in Session.objects.get().error  # kept as it was said


def test_certificate_names_are_escaped(scripted: Scripted, ca: trustme.CA, trust_ca: str) -> None:
    # A certificate's names are the server's words too (a UTF8String may hold anything).
    cert = ca.issue_cert("127.0.0.1", organization_unit_name=HOSTILE)
    server = scripted(Responder({"EHLO": STARTTLS_EHLO}, tls_context=server_context(cert)))

    result = probe(target(server), "--starttls")

    assert result.error is None, result.error
    assert raw_controls(result.out) == []
    assert f"organizationalUnitName={ESCAPED}" in result.field("subject")
    assert HOSTILE in Session.objects.get().tls_peer_subject


def test_no_control_character_reaches_the_terminal_from_the_command_line(
    scripted: Scripted,
) -> None:
    refusing = scripted(Responder({"GREETING": b"554 5.7.1 " + HOSTILE_BYTES + b"\r\n"}))

    failed = run_manage_py(target(refusing), "--no-record")

    assert failed.returncode == 1
    assert raw_controls(failed.stdout) == [] and raw_controls(failed.stderr) == []
    assert f"S: 554 5.7.1 {ESCAPED}\n" in failed.stdout
    assert failed.stderr == (
        f"CommandError: Probe of {target(refusing)} failed: SMTPConnectError: 554 5.7.1 {ESCAPED}\n"
    )
