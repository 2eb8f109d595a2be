"""SASL encoders for SMTP AUTH (RFC 4954) as pure functions: credentials in, the
base64 line to send out. Nothing here knows about sockets or transcripts."""

from __future__ import annotations

import base64
import hashlib
import hmac

REDACTED = "********"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain(username: str, password: str) -> str:
    """RFC 4616: authzid NUL authcid NUL passwd, with an empty authzid."""
    return _b64(b"\0" + username.encode() + b"\0" + password.encode())


def login_response(value: str) -> str:
    """LOGIN mechanism: the username, then the password, each base64 on its own line."""
    return _b64(value.encode())


def xoauth2(username: str, token: str) -> str:
    """Google's and Microsoft's XOAUTH2: the user and an OAuth 2.0 bearer token."""
    return _b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


def cram_md5(username: str, password: str, challenge: str) -> str:
    """RFC 2195: the username and the HMAC-MD5 of the server's base64 challenge."""
    try:
        decoded = base64.b64decode(challenge, validate=True)
    except ValueError as exc:
        raise ValueError("CRAM-MD5 challenge is not valid base64") from exc
    digest = hmac.new(password.encode(), decoded, hashlib.md5).hexdigest()
    return _b64(f"{username} {digest}".encode())
