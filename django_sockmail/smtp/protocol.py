"""The SMTP conversation without I/O: commands, capabilities, and the steps of a
session before its mail transactions (EHLO, STARTTLS, AUTH) and after them (QUIT).

Each step is a generator (an *exchange*): it yields a group of :class:`Command`
objects, is sent back one :class:`Reply` per command, and finally returns its result.
The socket driver in :mod:`.client` runs exchanges; tests run them against scripted
replies. Mail transactions have an engine of their own, :mod:`.transactions`, which
also decides which reply answers which command (:func:`answers`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TypeVar

from . import auth
from .data import dot_stuff, is_8bit
from .envelope import CONTROL, Envelope, xtext
from .errors import (
    SMTPAuthenticationError,
    SMTPCommandError,
    SMTPHeloError,
    SMTPNotSupportedError,
)
from .reply import Reply
from .results import MessageOutcome, RecipientOutcome

T = TypeVar("T")
Exchange = Generator[list["Command"], list[Reply], T]


@dataclass(frozen=True)
class Command:
    """One thing the client sends that the server answers with one reply."""

    wire: bytes  # exactly what goes on the wire, CRLF included
    display: str  # what the transcript shows: the line, credentials redacted
    content: bytes = b""  # for the message content: the message, to show as content

    @property
    def is_content(self) -> bool:
        return bool(self.content)


def _check_argument(text: str) -> None:
    # No CR, LF or other control character may reach the wire inside a command:
    # that would let an argument start a command of its own (bpo-43124).
    if CONTROL.search(text):
        raise ValueError(f"Control character in SMTP command argument: {text!r}")


def command(verb: str, argument: str = "", *, redacted: str | None = None) -> Command:
    """A command line; ``redacted`` replaces the argument in the transcript."""
    _check_argument(argument)
    line = f"{verb} {argument}" if argument else verb
    display = line if redacted is None else f"{verb} {redacted}".rstrip()
    return Command(line.encode("utf-8") + b"\r\n", display)


def secret_line(value: str) -> Command:
    """A bare line answering a 334 challenge: always redacted."""
    _check_argument(value)
    return Command(value.encode("ascii") + b"\r\n", auth.REDACTED)


def content_command(normalized: bytes) -> Command:
    """The message content after DATA: dot-stuffed, then the ending ``.`` line."""
    return Command(dot_stuff(normalized) + b".\r\n", "", content=normalized)


def bdat_command(normalized: bytes) -> Command:
    """RFC 3030: the whole content as one last chunk, exact bytes, no dot-stuffing."""
    line = f"BDAT {len(normalized)} LAST"
    return Command(line.encode() + b"\r\n" + normalized, line, content=normalized)


@dataclass
class Capabilities:
    """What the server offered in its EHLO reply (empty after HELO)."""

    esmtp: bool = False
    extensions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        extensions: dict[str, str] = {}
        for line in reply.lines[1:]:  # the first line is the server's greeting name
            keyword, _, params = line.strip().partition(" ")
            if not keyword.isascii():
                # Not an ehlo-keyword (RFC 5321 §4.1.1.1), and str.upper() could make
                # one of it: "\u017fize".upper() == "SIZE" (a long s).
                continue
            if keyword.upper().startswith("AUTH="):
                # The pre-RFC 4954 form some servers still send: "AUTH=LOGIN PLAIN".
                keyword, params = "AUTH", f"{keyword[5:]} {params}"
                params = f"{extensions.get('AUTH', '')} {params}"
            elif keyword.upper() == "AUTH" and "AUTH" in extensions:
                params = f"{extensions['AUTH']} {params}"
            if keyword:
                extensions[keyword.upper()] = " ".join(params.split())
        return cls(esmtp=True, extensions=extensions)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @property
    def auth_mechanisms(self) -> list[str]:
        # ASCII names only, as with keywords: "pla\u0131n".upper() == "PLAIN".
        return [m.upper() for m in self.extensions.get("AUTH", "").split() if m.isascii()]

    # RFC 1870's size-param in ASCII digits (str.isdigit() also takes "²", which int()
    # refuses), and no longer than any real limit: int() refuses over 4300 digits.
    _SIZE_VALUE = re.compile(r"[0-9]{1,20}")

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit the server declared (RFC 1870), None when it declared none.

        0 declares no limit. So, here, does a value that is no number ("SIZE ²", "SIZE
        10M") or one of over 20 digits: the server did not say a limit we can hold it
        to, so nothing is refused locally for its size. The extension itself is still
        used (``SIZE=`` on MAIL), and the server's verdict on the message stands.
        """
        value = self.extensions.get("SIZE", "")
        if self._SIZE_VALUE.fullmatch(value) is None:
            return None
        return int(value) or None


def hello(name: str) -> Exchange[Capabilities]:
    """EHLO, falling back to HELO when the server refuses EHLO."""
    [reply] = yield [command("EHLO", name)]
    if reply.code == 250:
        return Capabilities.from_ehlo(reply)
    [reply] = yield [command("HELO", name)]
    if reply.code == 250:
        return Capabilities()
    raise SMTPHeloError(reply)


def starttls(capabilities: Capabilities) -> Exchange[None]:
    """Ask for TLS (RFC 3207). The driver upgrades the socket after this returns."""
    if not capabilities.has("STARTTLS"):
        raise SMTPNotSupportedError("STARTTLS was required but the server does not offer it")
    [reply] = yield [command("STARTTLS")]
    if reply.code != 220:
        raise SMTPCommandError(reply)


@dataclass(frozen=True)
class Credentials:
    """What AUTH may use. Secrets are kept out of ``repr()``."""

    username: str
    password: str = field(default="", repr=False)
    oauth2_token: str = field(default="", repr=False)
    mechanism: str = ""  # pinned by the user; empty: the strongest the server offers


# Strongest first: an OAuth token over a password; CRAM-MD5 never sends the password
# itself; PLAIN before LOGIN (one round trip, same secrecy).
MECHANISMS = ("XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN")


def choose_mechanism(capabilities: Capabilities, credentials: Credentials) -> str:
    if not capabilities.has("AUTH"):
        raise SMTPNotSupportedError("Credentials were given but the server does not offer AUTH")
    offered = capabilities.auth_mechanisms
    if credentials.mechanism:
        pinned = credentials.mechanism.upper()
        if pinned not in MECHANISMS:
            raise ValueError(f"Unknown AUTH mechanism {pinned!r}; known: {', '.join(MECHANISMS)}")
        if pinned not in offered:
            raise SMTPNotSupportedError(
                f"AUTH {pinned} was asked for but the server offers: {' '.join(offered)}"
            )
        return pinned
    usable = [m for m in MECHANISMS if (m == "XOAUTH2") == bool(credentials.oauth2_token)]
    mechanism = next((m for m in usable if m in offered), None)
    if mechanism is None:
        raise SMTPNotSupportedError(f"No usable AUTH mechanism among: {' '.join(offered)}")
    return mechanism


def authenticate(capabilities: Capabilities, credentials: Credentials) -> Exchange[None]:
    """AUTH (RFC 4954) with the chosen mechanism; every secret line is redacted."""
    mechanism = choose_mechanism(capabilities, credentials)
    username, password = credentials.username, credentials.password
    if mechanism == "XOAUTH2":
        token = auth.xoauth2(username, credentials.oauth2_token)
        [reply] = yield [command("AUTH", f"XOAUTH2 {token}", redacted=f"XOAUTH2 {auth.REDACTED}")]
        if reply.code == 334:  # a base64 JSON error report: answer empty, get the 535
            [reply] = yield [Command(b"\r\n", "")]
    elif mechanism == "CRAM-MD5":
        [reply] = yield [command("AUTH", "CRAM-MD5")]
        if reply.code == 334:
            try:
                answer = auth.cram_md5(username, password, reply.text)
            except ValueError as exc:  # the server's challenge is not base64
                message = f"Bad CRAM-MD5 challenge: {reply}"
                raise SMTPAuthenticationError(reply, message=message) from exc
            [reply] = yield [secret_line(answer)]
    elif mechanism == "PLAIN":
        token = auth.plain(username, password)
        [reply] = yield [command("AUTH", f"PLAIN {token}", redacted=f"PLAIN {auth.REDACTED}")]
    else:
        [reply] = yield [command("AUTH", "LOGIN")]
        if reply.code == 334:
            [reply] = yield [secret_line(auth.login_response(username))]
        if reply.code == 334:
            [reply] = yield [secret_line(auth.login_response(password))]
    if reply.code != 235:
        raise SMTPAuthenticationError(reply)


def check_message(capabilities: Capabilities, envelope: Envelope, content: bytes) -> None:
    """Refuse locally what the server has said it cannot take, before anything is sent."""
    if envelope.needs_smtputf8 and not capabilities.has("SMTPUTF8"):
        raise SMTPNotSupportedError(
            "The envelope has a non-ASCII address but the server does not offer SMTPUTF8"
        )
    limit = capabilities.size_limit
    if limit is not None and len(content) > limit:
        raise SMTPNotSupportedError(
            f"The message is {len(content)} bytes; the server accepts at most {limit}"
        )


def mail_parameters(capabilities: Capabilities, envelope: Envelope, content: bytes) -> str:
    params = []
    if capabilities.has("SIZE"):
        params.append(f"SIZE={len(content)}")
    if is_8bit(content) and capabilities.has("8BITMIME"):
        params.append("BODY=8BITMIME")
    if envelope.needs_smtputf8:
        params.append("SMTPUTF8")
    dsn = envelope.dsn
    if dsn is not None and capabilities.has("DSN"):
        if dsn.ret:
            params.append(f"RET={dsn.ret}")
        if dsn.envid:
            params.append(f"ENVID={xtext(dsn.envid)}")
    return "".join(f" {p}" for p in params)


def rcpt_parameters(capabilities: Capabilities, envelope: Envelope, address: str) -> str:
    dsn = envelope.dsn
    if dsn is None or not capabilities.has("DSN"):
        return ""
    params = [f"ORCPT=rfc822;{xtext(address)}"]  # the address as the sender wrote it
    if dsn.notify:
        params.insert(0, f"NOTIFY={','.join(dsn.notify)}")
    return "".join(f" {p}" for p in params)


def new_outcome(envelope: Envelope, content: bytes) -> MessageOutcome:
    return MessageOutcome(
        sender=envelope.sender,
        recipients=[RecipientOutcome(address) for address in envelope.recipients],
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )


# Positive enhanced status codes of the address subject (RFC 3463 §3.2) that each
# command can be given: X.1.0, X.1.7 and X.1.8 are about the sender, the rest about a
# destination. A "250 2.1.5" to MAIL is a RCPT's reply, taken for another command.
_ADDRESS_DETAILS = {"MAIL": {"0", "7", "8"}, "RCPT": {"1", "2", "3", "4", "5", "6", "10"}}


def answers(command: str, reply: Reply, *, enhanced: bool) -> bool:
    """Whether ``reply`` can be the answer to ``command`` ("MAIL", "RCPT", "DATA",
    "END" for the end of the data, "RSET", "QUIT"), by RFC 5321 §4.3.2 and, where
    the server gives enhanced status codes, by their subject. A reply that cannot
    is another command's: the replies have fallen out of step with the commands."""
    code = reply.code
    if command == "QUIT":
        return code == 221  # a 421 too: the last command's reply, taken for QUIT's
    if code == 421:
        return True  # any command may be answered by the server closing (§3.8)
    if command == "DATA":
        return code == 354 or code >= 400
    if code < 400 and not reply.is_positive:
        return False  # only DATA and AUTH are asked to go on (354, 334)
    status = reply.enhanced_status if enhanced and reply.is_positive else None
    if status is None or status.split(".")[1] != "1" or command not in ("MAIL", "RCPT", "END"):
        return True  # (smtp-sink answers RSET "250 2.1.0": only these three are read)
    return status.split(".")[2] in _ADDRESS_DETAILS.get(command, ())


def quit() -> Exchange[Reply]:
    [reply] = yield [command("QUIT")]
    return reply
