"""``manage.py sockmail_probe``: open one SMTP session to a server and show all of it.

Like swaks, with this project's client: connect, EHLO, STARTTLS or implicit TLS, AUTH
when asked, QUIT; no mail is sent. Every line is printed as it happens, then what the
session showed: the server's capabilities, the TLS version and cipher, the certificate.
The session goes to the audit log like any other, failed ones included, so a probe
leaves the same record a real delivery would.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import smtplib
import ssl
import sys
from collections.abc import Callable
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_sockmail.conf import conf
from django_sockmail.plaintext import printable
from django_sockmail.recorder import record
from django_sockmail.smtp.client import (
    Security,
    SMTPClient,
    create_ssl_context,
    default_port,
    host_port,
)
from django_sockmail.smtp.events import SessionListener, TLSInfo
from django_sockmail.smtp.protocol import Capabilities
from django_sockmail.smtp.replies import Reply
from django_sockmail.transcript import CLIENT, FAILED, Transcript
from django_sockmail.transcript_text import transcript_line

PASSWORD_ENV = "SOCKMAIL_PROBE_PASSWORD"
# RFC 5321 relay, RFC 6409 submission with STARTTLS, RFC 8314 implicit TLS.
DEFAULT_TIMEOUT = 30.0


def parse_target(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` as host and port: a name, an IPv4 address, ``[IPv6]`` with or
    without ``:PORT``, or a bare IPv6 address (which cannot take a port)."""
    text = text.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not _is_ipv6(inside):
            raise ValueError(f"{text!r}: brackets must hold an IPv6 address, as in [::1]:25")
        host = inside
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected :PORT after the ]")
        port_text = rest[1:]
    elif text.count(":") > 1:
        if not _is_ipv6(text):
            raise ValueError(f"{text!r} is not an IPv6 address; write [ADDRESS]:PORT")
        return text, default_port
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = ""
    if not _is_token(host):
        raise ValueError(f"{text!r} is not a host name or address")
    if not port_text:
        if text.endswith(":"):
            raise ValueError(f"{text!r}: the port is missing after the colon")
        return host, default_port
    # isascii(): str.isdigit() also takes "²" (int() refuses it) and other scripts' digits.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class LiveTranscript(SessionListener):
    """Hands every event to a :class:`Transcript` and writes each line the transcript
    adds at once: what is printed is exactly what the audit log keeps, redactions
    included, and it appears as the session goes, not when it ends.

    A line is written as the transcript download writes it (``S: 250 OK``,
    ``* connected ...``, the server's control characters escaped), without the time
    offset, and the continuation lines of a multi-line text as they are."""

    def __init__(self, transcript: Transcript, write: Callable[[str], None]) -> None:
        self.transcript = transcript
        self._write = write
        self._shown = 0

    def _show_new_lines(self) -> None:
        lines = self.transcript.lines
        for line in lines[self._shown :]:
            self._write(transcript_line(None, line.direction, line.text, hanging_indent=False))
        self._shown = len(lines)

    def on_connecting(self, host: str, port: int) -> None:
        self.transcript.on_connecting(host, port)
        self._show_new_lines()

    def on_connected(self, peer_address: str, local_address: str) -> None:
        self.transcript.on_connected(peer_address, local_address)
        self._show_new_lines()

    def on_command(self, text: str) -> None:
        self.transcript.on_command(text)
        self._show_new_lines()

    def on_reply(self, reply: Reply) -> None:
        self.transcript.on_reply(reply)
        self._show_new_lines()

    def on_content(self, content: bytes) -> None:
        self.transcript.on_content(content)
        self._show_new_lines()

    def on_tls(self, info: TLSInfo) -> None:
        self.transcript.on_tls(info)
        self._show_new_lines()

    def on_closed(self) -> None:
        self.transcript.on_closed()
        self._show_new_lines()

    def on_error(self, error: BaseException) -> None:
        self.transcript.on_error(error)
        self._show_new_lines()


class Command(BaseCommand):
    help = (
        "Open one SMTP session to HOST[:PORT] (EHLO, STARTTLS or implicit TLS, AUTH if "
        "asked, QUIT; no mail is sent), print it as it happens with the server's "
        "capabilities and certificate, and record it in the audit log."
    )
    # Like createsuperuser: call_command(stdin=...) stands in for the terminal.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        # In the order that --help lists them.
        _add_server_arguments(parser)
        _add_session_arguments(parser)
        parser.add_argument(
            "--no-record",
            dest="no_record",
            action="store_true",
            help="Do not write the session to the audit log.",
        )

    def handle(
        self,
        *args: Any,
        target: str,
        use_tls: bool = False,
        use_ssl: bool = False,
        auth: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ehlo: str | None = None,
        cafile: str | None = None,
        no_record: bool = False,
        **options: Any,
    ) -> None:
        # Everything is checked before connecting: a usage error opens no session.
        security = _security(use_tls, use_ssl)
        host, port = _host_and_port(target, security)
        _check_session_options(timeout, ehlo, auth)
        ssl_context = _ssl_context(cafile, security)
        password = self._password(auth, host, options.get("stdin") or sys.stdin) if auth else ""

        transcript = Transcript(host=host, port=port, security=security)
        client = SMTPClient(
            host,
            port,
            security=security,
            timeout=timeout,
            local_hostname=ehlo or conf.LOCAL_HOSTNAME,
            ssl_context=ssl_context,
            username=auth or "",
            password=password,
            listener=LiveTranscript(transcript, self._write_live),
        )
        error, recorded = self._converse(client, transcript, no_record)
        self._conclude(client, transcript, auth, error, recorded)

    def _converse(
        self, client: SMTPClient, transcript: Transcript, no_record: bool
    ) -> tuple[Exception | None, str]:
        """Open the session and QUIT; the error that ended it, if any, and what became
        of its record."""
        error: Exception | None = None
        try:
            try:
                client.open()
            except (smtplib.SMTPException, OSError, ValueError) as exc:
                error = exc  # the client has told the transcript and closed
            else:
                client.quit()
        finally:
            # Interrupted or not, the session is on the record.
            recorded = self._record(transcript, no_record)
        return error, recorded

    def _conclude(
        self,
        client: SMTPClient,
        transcript: Transcript,
        auth: str | None,
        error: Exception | None,
        recorded: str,
    ) -> None:
        """Below the live lines: what the session showed, the record, and the verdict."""
        host, port = transcript.host, transcript.port
        self.stdout.write("")
        # After a failure, what was learnt up to it (capabilities, certificate) helps most.
        self._summary(transcript, client.capabilities, opened=error is None)
        if auth and error is None:
            self.stdout.write(f"Authenticated as {auth} with AUTH {_auth_mechanism(transcript)}.")
        self.stdout.write(recorded)
        if error is not None:
            raise _failed(host, port, _one_line(error))
        if transcript.status == FAILED:  # e.g. garbage in answer to QUIT
            raise _failed(host, port, transcript.error)
        self.stdout.write(self.style.SUCCESS(f"Probe of {host_port(host, port)} succeeded."))

    def _write_live(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()  # each line as it happens, also into a pipe

    def _password(self, username: str, host: str, stdin: TextIO) -> str:
        password = os.environ.get(PASSWORD_ENV, "")
        if password:
            return password
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise CommandError(
                f"--auth {username}: no password. Set {PASSWORD_ENV}, or run the "
                "command in a terminal to be asked for it."
            )
        try:
            password = getpass.getpass(f"Password for {username} at {host}: ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError("No password given.") from None
        if not password:
            raise CommandError("No password given.")
        return password

    def _summary(self, transcript: Transcript, capabilities: Capabilities, opened: bool) -> None:
        if capabilities.esmtp:
            self.stdout.write("Capabilities:")
            for keyword, params in capabilities.extensions.items():
                self.stdout.write(printable(f"  {keyword} {params}".rstrip()))
        elif opened:
            self.stdout.write("Capabilities: none (the server refused EHLO and took HELO)")
        tls = transcript.tls
        if tls is not None:
            self.stdout.write(printable(f"TLS: {tls.version}, cipher {tls.cipher}"))
            certificate = [
                ("subject", tls.peer_subject),
                ("issuer", tls.peer_issuer),
                ("valid from", tls.peer_not_before),
                ("valid until", tls.peer_not_after),
                ("SHA-256", tls.peer_fingerprint_sha256),
            ]
            if any(value for _, value in certificate):
                self.stdout.write("Certificate:")
                for label, value in certificate:
                    if value:
                        self.stdout.write(f"  {label + ':':<12} {printable(value)}")

    def _record(self, transcript: Transcript, no_record: bool) -> str:
        if no_record:
            return "Not recorded (--no-record)."
        if not conf.RECORD_SESSIONS:
            return "Not recorded (SOCKMAIL['RECORD_SESSIONS'] is False)."
        session = record(transcript)
        if session is None:
            message = "Could not record the session: see the django_sockmail logger."
            self.stderr.write(message)
            return message
        return f"Recorded as session {session.pk} ({session.status})."


def _add_server_arguments(parser: CommandParser) -> None:
    """Which server, and how the connection is secured."""
    parser.add_argument(
        "target",
        metavar="HOST[:PORT]",
        help="A host name, an IPv4 address or [IPv6]; the port defaults to 25, "
        "587 with --starttls, 465 with --ssl.",
    )
    security = parser.add_mutually_exclusive_group()
    security.add_argument(
        "--starttls",
        dest="use_tls",
        action="store_true",
        help="Upgrade to TLS with STARTTLS (RFC 3207); fail if the server does not.",
    )
    security.add_argument(
        "--ssl",
        dest="use_ssl",
        action="store_true",
        help="Implicit TLS from the first byte (RFC 8314).",
    )


def _add_session_arguments(parser: CommandParser) -> None:
    """How the session goes: the login, the waits, the EHLO name, whom to trust."""
    parser.add_argument(
        "--auth",
        metavar="USER",
        help=f"Log in as USER. The password comes from the {PASSWORD_ENV} environment "
        "variable, or else a prompt; never from the command line.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="Seconds to wait for the connection and for each reply "
        f"(default {DEFAULT_TIMEOUT:g}).",
    )
    parser.add_argument(
        "--ehlo",
        metavar="NAME",
        help="The name to give in EHLO (default: SOCKMAIL['LOCAL_HOSTNAME'], "
        "else this machine's FQDN).",
    )
    parser.add_argument(
        "--cafile",
        metavar="PATH",
        help="Trust only the CA certificates in this PEM file (default: "
        "SOCKMAIL['SSL_CAFILE'], else the system trust store, so SSL_CERT_FILE "
        "applies).",
    )


def _security(use_tls: bool, use_ssl: bool) -> Security:
    if use_tls and use_ssl:
        raise CommandError("--starttls and --ssl exclude each other.")
    return "ssl" if use_ssl else "starttls" if use_tls else "none"


def _host_and_port(target: str, security: Security) -> tuple[str, int]:
    try:
        return parse_target(target, default_port(security))
    except ValueError as exc:
        raise CommandError(f"HOST[:PORT]: {exc}.") from None


def _check_session_options(timeout: float, ehlo: str | None, auth: str | None) -> None:
    if not timeout > 0:
        raise CommandError(f"--timeout must be more than 0 seconds, not {timeout:g}.")
    if ehlo is not None and not _is_token(ehlo):
        raise CommandError(f"--ehlo {ehlo!r}: a name without spaces or control characters.")
    if auth is not None and not (auth and auth.isprintable()):
        raise CommandError(f"--auth {auth!r}: a user name without control characters.")


def _ssl_context(cafile: str | None, security: Security) -> ssl.SSLContext | None:
    """A context that trusts only ``cafile``, or else SOCKMAIL['SSL_CAFILE'] (what the
    backend trusts); None for the client's default."""
    if cafile is not None and security == "none":
        raise CommandError("--cafile needs --starttls or --ssl.")
    cafile = cafile or conf.SSL_CAFILE
    if cafile is None or security == "none":
        return None
    try:
        return create_ssl_context(cafile=cafile)
    except OSError as exc:  # missing, unreadable, or no certificate in it
        raise CommandError(f"--cafile {cafile}: {exc}") from None


def _is_token(text: str) -> bool:
    """Printable, without spaces, and not empty: a host name, an address, an AUTH name."""
    return bool(text) and all(ch.isprintable() and not ch.isspace() for ch in text)


def _failed(host: str, port: int, reason: str) -> CommandError:
    # The reason is mostly the server's words: escaped, like every line before it.
    return CommandError(f"Probe of {host_port(host, port)} failed: {printable(reason)}")


def _one_line(error: BaseException) -> str:
    """The error's class and text (for a refusal, the server's reply) on one line."""
    text = str(error)
    if isinstance(error, ssl.SSLError) and len(error.args) == 1:
        # SSLError's str() of a single argument is the repr of the args tuple.
        text = str(error.args[0])
    # Split at newlines only: a bare CR or another control character in the server's
    # words is escaped by _failed(), not taken for a line break.
    text = "; ".join(part.strip() for part in text.split("\n") if part.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _auth_mechanism(transcript: Transcript) -> str:
    # The client chose it; the transcript shows it ("AUTH PLAIN ********").
    commands = [line.text for line in transcript.lines if line.direction == CLIENT]
    auth = next((c for c in reversed(commands) if c.upper().startswith("AUTH ")), "AUTH ?")
    return auth.split()[1]
