"""Non-ASCII domains in the envelope, end to end: IDNA 2008 A-labels (UTS #46
mapping), and a domain that does not encode refused before anything is sent, as any
bad address is."""

from __future__ import annotations

import re

import pytest
from django.core.mail import EmailMessage

from django_sockmail.models import Session
from tests.servers import SMTPServer, backend_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_non_ascii_domain_goes_out_as_idna_2008(smtpd: SMTPServer) -> None:
    # IDNA 2003 (Python's codec) sent "fass.de": another domain.
    message = EmailMessage("s", "b", "from@bücher.de", ["user@faß.de"])
    assert backend_for(smtpd).send_messages([message]) == 1
    [received] = smtpd.messages
    assert received.mail_from == "from@xn--bcher-kva.de"
    assert received.rcpt_tos == ["user@xn--fa-hia.de"]


@pytest.mark.parametrize("bad", ["user@\u2665.de", "user@x\uff1e.org", "user@[\x80]"])
def test_a_domain_that_does_not_encode_is_refused_before_anything_is_sent(
    smtpd: SMTPServer, bad: str
) -> None:
    good = EmailMessage("s", "b", "from@example.org", ["ok@example.org"])
    refused = EmailMessage("s", "b", "from@example.org", [bad])
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        backend_for(smtpd).send_messages([good, refused])
    assert smtpd.messages == []
    assert Session.objects.count() == 0  # no connection was even made
