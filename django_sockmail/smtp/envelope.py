"""The envelope: who the message is from and to, as the server will see it.

Addresses are checked before anything is sent: one mailbox each, no control
characters, no angle brackets that could close the path and smuggle ESMTP parameters,
and non-ASCII domains as IDNA 2008 A-labels (RFC 5891, with UTS #46 mapping). A
non-ASCII local part needs SMTPUTF8 (RFC 6531).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.policy import default as default_policy

import idna

# C0 controls and DEL: never in a command line (bpo-43124) nor in an address.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>\s\"]")  # never in a domain
# RFC 5321 Dot-string, with RFC 6531's non-ASCII characters: needs no quoting.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")


_NOTIFY = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


@dataclass(frozen=True)
class DSN:
    """Delivery status notification requests (RFC 3461), sent only when the server
    offers DSN. ``notify``: "NEVER", or any of "SUCCESS", "FAILURE", "DELAY";
    ``ret``: "FULL" or "HDRS"; ``envid``: your id for the message, echoed in reports."""

    notify: tuple[str, ...] = ()
    ret: str = ""
    envid: str = ""

    def __post_init__(self) -> None:
        notify = tuple(n.upper() for n in self.notify)
        if not set(notify) <= _NOTIFY or ("NEVER" in notify and len(notify) > 1):
            raise ValueError(f"DSN notify must be NEVER or of {sorted(_NOTIFY - {'NEVER'})}")
        if self.ret.upper() not in ("", "FULL", "HDRS"):
            raise ValueError("DSN ret must be FULL or HDRS")
        if not self.envid.isascii() or len(self.envid) > 100:
            raise ValueError("DSN envid must be ASCII, at most 100 characters")
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "ret", self.ret.upper())


def xtext(value: str) -> str:
    """RFC 3461 §4: "+" and "=", and anything outside "!".."~", as "+HH"."""
    return "".join(
        c if "!" <= c <= "~" and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in value
    )


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    dsn: DSN | None = None

    @property
    def needs_smtputf8(self) -> bool:
        return not all(addr.isascii() for addr in (self.sender, *self.recipients))


_NO_DOMAIN = "addr-spec local part with no domain"

_ADDRESS_LITERAL = re.compile(r"\[[!-Z^-~]+\]")  # printable ASCII but "[", "\\", "]"
_MAX_LABEL = 63  # octets (RFC 1035 §2.3.4)
_MAX_DOMAIN = 253  # octets, no final dot: the most a name in DNS can spell


def _ascii_domain(domain: str, address: str) -> str:
    """The domain as the envelope carries it: an address literal or an ASCII domain as
    written, a non-ASCII domain as IDNA 2008 A-labels.

    Python's "idna" codec is IDNA 2003, which maps "faß.de" to "fass.de", another
    domain, and lets symbols through ("♥.de"; U+FF1E, a wide ">", as ">"). The idna
    package applies UTS #46 (non-transitional: "ß" stays) and the IDNA 2008 rules, and
    its A-labels are letters, digits and hyphens only.
    """
    if domain.startswith("["):  # an address literal: RFC 5321's dcontent, ASCII only
        if _ADDRESS_LITERAL.fullmatch(domain) is None:
            raise ValueError(f"Invalid address {address!r}: not an address literal")
        return domain
    if domain.isascii():
        # As written, as before: IDNA's rules are for non-ASCII names, and an ASCII
        # one ("host_1.internal") is the server's to judge.
        encoded = domain
    else:
        try:
            encoded = idna.encode(domain, uts46=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is one
            raise ValueError(
                f"Invalid address {address!r}: its domain is not a valid IDNA 2008 name ({exc})"
            ) from exc
    labels = encoded.split(".")
    if len(encoded) > _MAX_DOMAIN or not all(0 < len(label) <= _MAX_LABEL for label in labels):
        raise ValueError(
            f"Invalid address {address!r}: its domain is not a DNS name "
            "(an empty label, one of over 63 octets, or over 253 in all)"
        )
    return encoded


# The common case, "local@example.org" in plain ASCII, needs no parser: it is already
# its own envelope form. (Parsing every address dominated the time to send a message.)
# Labels of at most 63 characters, a domain of at most 253: a longer one takes the
# parser's way, and is refused there.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@{_LABEL}(?:\.{_LABEL})*\Z"
)


def envelope_address(address: str | tuple[str, str]) -> str:
    """The envelope form (``local@domain``) of an address as Django messages carry it
    (``"Name <local@domain>"``, ``local@domain`` or a ``(name, address)`` pair).

    Raises ValueError for anything that is not exactly one valid mailbox.
    """
    if isinstance(address, tuple):
        address = address[1]
    address = str(address)  # lazy translation strings, as Django's force_str allows
    if _PLAIN.match(address) and len(address.rpartition("@")[2]) <= _MAX_DOMAIN:
        return address
    if CONTROL.search(address):
        raise ValueError(f"Invalid address (control character): {address!r}")
    try:
        header = default_policy.header_factory("To", address)
        mailboxes = header.addresses
    except Exception as exc:
        # HeaderParseError, or one of the parser's own bugs on odd input: AttributeError
        # on "a@[" (CPython gh-134155), TypeError on " .;". Either way, no mailbox.
        raise ValueError(f"Invalid address: {address!r}") from exc
    # A non-ASCII local part is valid with SMTPUTF8, and a bare local part
    # ("webmaster") is allowed as Django allows it (#15042); any other defect is not.
    defects = [
        d
        for d in header.defects
        if not isinstance(d, NonASCIILocalPartDefect) and str(d) != _NO_DOMAIN
    ]
    if len(mailboxes) != 1 or defects:
        raise ValueError(f"Invalid address: {address!r}")
    mailbox: Address = mailboxes[0]
    local, domain = mailbox.username, mailbox.domain
    if not local or CONTROL.search(local) or _FORBIDDEN.search(domain):
        raise ValueError(f"Invalid address: {address!r}")
    if not _DOT_ATOM.match(local):
        # RFC 5321 Quoted-string: "a@b"@example.org must stay quoted, or the server
        # would read a different mailbox. Angle brackets stay out all the same:
        # lax servers end the path at the first ">".
        if "<" in local or ">" in local:
            raise ValueError(f"Invalid address: {address!r}")
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{_ascii_domain(domain, address)}" if domain else local


def make_envelope(
    sender: str | tuple[str, str],
    recipients: list[str] | tuple[str, ...],
    dsn: DSN | None = None,
) -> Envelope:
    addresses = tuple(envelope_address(r) for r in recipients)
    return Envelope(envelope_address(sender), addresses, dsn)
