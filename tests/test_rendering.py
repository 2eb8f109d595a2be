"""Our rendering gives the very bytes Django's does (compat32 with CRLF), for
generated messages: plain and non-ASCII headers, long and short, display names,
attachments, alternatives."""

from __future__ import annotations

import email.policy

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from hypothesis import given, settings
from hypothesis import strategies as st

from django_sockmail.rendering import _MESSAGE_TAKES_POLICY, QUICK_COMPAT32, compat32_bytes

pytestmark = pytest.mark.skipif(
    _MESSAGE_TAKES_POLICY, reason="Django 6 renders with the modern email API, used as it is"
)

# Header text: mostly printable ASCII with spaces, sometimes tabs, runs of spaces,
# encoded-word look-alikes and non-ASCII, at lengths around the 78-character fold.
header_text = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
    st.text(st.sampled_from(list("ab =?Q_\t é")), max_size=90),
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t),
)
names = st.text(st.sampled_from(list("Ab cdéΩ-'")), max_size=70)
local = st.text(st.sampled_from(list("abcxyz.+-_")), min_size=1, max_size=20).filter(
    lambda t: not t.startswith(".") and not t.endswith(".") and ".." not in t
)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    address = f"{draw(local)}@example.org"
    name = draw(names).strip()
    return f"{name} <{address}>" if name else address


@st.composite
def messages(draw: st.DrawFn) -> EmailMessage:
    cls = draw(st.sampled_from([EmailMessage, EmailMultiAlternatives]))
    message = cls(
        draw(header_text).replace("\t", " "),
        draw(st.text(max_size=300)),
        draw(addresses()),
        draw(st.lists(addresses(), min_size=1, max_size=3)),
        cc=draw(st.lists(addresses(), max_size=2)),
        headers={
            "Message-ID": "<fixed@example.org>",
            "Date": "Fri, 27 Nov 2026 01:00:00 -0000",
            "X-Note": draw(header_text).strip() or "x",
        },
    )
    if draw(st.booleans()):
        message.attach("a.txt", draw(st.text(max_size=100)), "text/plain")
    if isinstance(message, EmailMultiAlternatives) and draw(st.booleans()):
        message.attach_alternative(f"<p>{draw(st.text(max_size=50))}</p>", "text/html")
    return message


@settings(max_examples=400, deadline=None)
@given(messages())
def test_the_bytes_are_the_ones_django_writes(message: EmailMessage) -> None:
    mime = message.message()
    assert compat32_bytes(mime) == mime.as_bytes(linesep="\r\n")  # type: ignore[call-arg]


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["Subject", "To", "X-Long-Header-Name"]), header_text)
def test_each_header_is_folded_as_compat32_folds_it(name: str, value: str) -> None:
    slow = email.policy.compat32.clone(linesep="\r\n")
    assert QUICK_COMPAT32.fold(name, value) == slow.fold(name, value)
    assert QUICK_COMPAT32.fold_binary(name, value) == slow.fold_binary(name, value)
