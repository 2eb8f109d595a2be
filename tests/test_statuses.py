"""The client's statuses where the rest of the package keeps them: the transcript's
session status, and the audit log's choices, built from the same enums."""

from __future__ import annotations

import pytest
from django.db import models
from django.template import Context, Template

from django_sockmail.models import Message, Session
from django_sockmail.smtp.errors import SMTPServerDisconnected, SMTPTimeoutError
from django_sockmail.smtp.status import MessageStatus, SessionStatus
from django_sockmail.transcript import Transcript


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SMTPTimeoutError("no answer"), SessionStatus.TIMED_OUT),
        (SMTPServerDisconnected("gone"), SessionStatus.FAILED),
    ],
)
def test_the_transcript_ends_with_a_session_status(
    error: BaseException, expected: SessionStatus
) -> None:
    transcript = Transcript()
    assert transcript.status is SessionStatus.OK
    transcript.on_error(error)
    assert transcript.status is expected


@pytest.mark.parametrize(
    ("model", "vocabulary"), [(Message, MessageStatus), (Session, SessionStatus)]
)
def test_the_audit_log_s_choices_are_the_client_s_statuses(
    model: type[models.Model], vocabulary: type[MessageStatus] | type[SessionStatus]
) -> None:
    assert model.Status is vocabulary  # type: ignore[attr-defined]
    field = model._meta.get_field("status")
    assert isinstance(field, models.CharField) and field.choices == vocabulary.choices


@pytest.mark.parametrize("vocabulary", [MessageStatus, SessionStatus])
def test_a_model_s_status_reads_as_django_s_text_choices_did(
    vocabulary: type[MessageStatus] | type[SessionStatus],
) -> None:
    text_choices = models.TextChoices(  # type: ignore[call-overload]
        "Status", [(s.name, (s.value, s.label)) for s in vocabulary]
    )
    assert vocabulary.choices == text_choices.choices
    assert vocabulary.values == text_choices.values
    assert vocabulary.labels == text_choices.labels
    assert vocabulary.names == text_choices.names
    for status in vocabulary:
        assert status.label == text_choices[status.name].label


def test_a_template_reads_the_statuses_of_a_model() -> None:
    template = Template("{{ Status.PARTIAL }}: {{ Status.PARTIAL.label }}")
    assert template.render(Context({"Status": Message.Status})) == "partial: partly sent"
