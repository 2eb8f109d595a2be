import re

import pytest

from django_sockmail.smtp.envelope import envelope_address, make_envelope


@pytest.mark.parametrize(
    ("given", "envelope"),
    [
        ("user@example.org", "user@example.org"),
        ("User Name <user@example.org>", "user@example.org"),
        ('"Doe, Jane" <jane@example.org>', "jane@example.org"),
        (("Name", "user@example.org"), "user@example.org"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        # IDNA 2008, not 2003: "ß" is a letter of its own, not "ss" (another domain).
        ("user@faß.de", "user@xn--fa-hia.de"),
        ("Name <user@faß.de>", "user@xn--fa-hia.de"),
        # UTS #46 maps before encoding: case, and the ideographic full stop.
        ("user@Bücher.DE", "user@xn--bcher-kva.de"),
        ("user@bücher\u3002de", "user@xn--bcher-kva.de"),
        ("user@host_1.internal", "user@host_1.internal"),  # ASCII names go as written
        ("user@" + "a" * 63 + ".de", "user@" + "a" * 63 + ".de"),
        ("jörg@example.org", "jörg@example.org"),
        ("user@[127.0.0.1]", "user@[127.0.0.1]"),
        ("webmaster", "webmaster"),  # a local mailbox, as Django allows (#15042)
        ('"a b"@example.org', '"a b"@example.org'),  # a quoted local part stays quoted
        ('"a@evil.test"@good.test', '"a@evil.test"@good.test'),  # else: another mailbox
    ],
)
def test_envelope_address(given: str, envelope: str) -> None:
    assert envelope_address(given) == envelope


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "@example.org",
        "a@b.org, c@d.org",
        "a@b.org> NOTIFY=SUCCESS,FAILURE",
        "a@b.org>\r\nRCPT TO:<evil@x.org",
        "a@b.org\nDATA",
        "a@b.org\x00",
        '"a>b"@c.org',
        "a b@c.org",
        # The standard library's parser fails on these with AttributeError (CPython
        # gh-134155) and TypeError.
        "a@[",
        " .;",
    ],
)
def test_bad_addresses_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        envelope_address(bad)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        pytest.param("user@\u2665.de", "IDNA 2008", id="a-symbol"),  # IDNA 2003 took it
        # U+FF1E, a wide ">", which IDNA 2003 maps to ">": the path would end early.
        pytest.param("user@x\uff1e.org", "IDNA 2008", id="a-wide-angle-bracket"),
        pytest.param("user@a\u0640b.de", "IDNA 2008", id="a-disallowed-codepoint"),
        pytest.param("user@" + "ä" * 64 + ".de", "IDNA 2008", id="a-long-non-ascii-label"),
        pytest.param("user@" + "a" * 64 + ".de", "DNS name", id="a-long-ascii-label"),
        pytest.param("user@" + ("a" * 62 + ".") * 4 + "de", "DNS name", id="a-long-domain"),
        pytest.param("user@[\x80]", "address literal", id="a-non-ascii-address-literal"),
        pytest.param("user@[1.2.3.ü]", "address literal", id="a-letter-in-an-address-literal"),
    ],
)
def test_a_domain_that_does_not_encode_is_refused_by_name(address: str, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"{re.escape(repr(address))}.*{reason}"):
        envelope_address(address)
    with pytest.raises(ValueError, match=re.escape(repr(address))):
        make_envelope("from@example.org", ["ok@example.org", address])


def test_smtputf8_needed_only_for_non_ascii_local_parts() -> None:
    assert not make_envelope("a@bücher.de", ["b@example.org"]).needs_smtputf8
    assert make_envelope("a@example.org", ["jörg@example.org"]).needs_smtputf8


@pytest.mark.parametrize(
    "address",
    [
        "user@example.org",
        "First.Last+tag@Sub.Example.ORG",
        "a!#$%&'*+/=?^_`{|}~-b@x-y.example",
        "x@a",
    ],
)
def test_the_fast_path_gives_what_the_parser_gives(address: str) -> None:
    from email.policy import default

    [parsed] = default.header_factory("To", address).addresses
    assert envelope_address(address) == f"{parsed.username}@{parsed.domain}"
