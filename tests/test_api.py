"""The published API: every name ``django_sockmail`` exports can be imported from it, is
documented, and loads without settings; ``outcome_of()`` reads what the backend leaves
on each message."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.mail import EmailMessage

import django_sockmail
from django_sockmail import outcome_of
from django_sockmail.smtp.results import MessageOutcome
from tests.servers import SMTPServer, backend_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", django_sockmail.__all__)
def test_each_exported_name_is_importable_and_documented(name: str) -> None:
    exported = getattr(django_sockmail, name)
    assert f"``{name}``" in str(django_sockmail.__doc__), f"the package's docstring names {name}"
    if inspect.isclass(exported) or inspect.isfunction(exported):
        own = exported.__doc__ or ""
        # A dataclass without a docstring gets its signature as one.
        assert own.strip() and not own.startswith(f"{name}("), f"{name} has a docstring"


def test_the_exports_are_what_the_package_names() -> None:
    assert sorted(django_sockmail.__all__) == sorted(set(django_sockmail.__all__))
    namespace: dict[str, object] = {}
    exec("from django_sockmail import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(django_sockmail.__all__)


def test_importing_the_package_needs_no_settings_and_loads_no_models() -> None:
    code = (
        "import sys\n"
        "from django_sockmail import *\n"
        "loaded = [m for m in sys.modules if m.startswith(('django.db', 'django.apps', "
        "'django_sockmail.models', 'django_sockmail.backend'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db(transaction=True)
def test_outcome_of_reads_the_outcome_the_backend_left(smtpd: SMTPServer) -> None:
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    backend_for(smtpd).send_messages([message])
    outcome = outcome_of(message)
    assert isinstance(outcome, MessageOutcome) and outcome.status == "sent"
    assert message.sockmail_outcome is outcome  # type: ignore[attr-defined]  # as before


def test_a_message_never_given_to_the_backend_has_no_outcome() -> None:
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    with pytest.raises(LookupError, match="no django_sockmail outcome"):
        outcome_of(message)
    assert outcome_of(message, None) is None
