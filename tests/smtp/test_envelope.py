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
    ],
)
def test_bad_addresses_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        envelope_address(bad)


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
