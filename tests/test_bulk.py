"""The bulk writer's rows by field name (django_sockmail.bulk): the recorder gives every
field of a table a value, a value goes to the column of its name, a field without a
value or a name that is no field is refused, and text is made storable a column at a
time. (What the rows become in the database: test_recorder.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, models

from django_sockmail import bulk, recorder
from django_sockmail.models import Message, Recipient, TranscriptChunk
from tests.toolkit import make_transcript, partly_refused_message


def fields_of(model: type[models.Model]) -> set[str]:
    """Every column of ``model`` but its id, by attname."""
    return {field.attname for field in model._meta.concrete_fields if not field.primary_key}


def recipient_values() -> dict[str, Any]:
    recipient = partly_refused_message().outcome.recipients[1]
    return recorder._recipient_row(7, recipient)


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (Message, lambda: recorder._message_row(7, 1, partly_refused_message())),
        (Recipient, recipient_values),
        (TranscriptChunk, lambda: next(recorder._chunk_rows(7, make_transcript()))),
    ],
    ids=["message", "recipient", "chunk"],
)
def test_the_recorder_gives_every_field_of_a_table_a_value(
    model: type[models.Model], values: Any
) -> None:
    assert set(values()) == fields_of(model)
    assert set(bulk.table(model).fields) == fields_of(model)


def test_each_value_goes_to_the_column_of_its_name() -> None:
    table = bulk.table(Recipient)
    values = recipient_values()

    [row] = table.rows([dict(reversed(values.items()))])

    assert dict(zip(table.columns, row, strict=True)) == {
        "message_id": 7,
        "address": "nobody@example.net",
        "accepted": False,
        "reply_code": 550,
        "reply_text": "5.1.1 <nobody@example.net>: Recipient address rejected",
        "enhanced_status": "5.1.1",
    }


def test_a_field_without_a_value_or_a_name_that_is_no_field_is_refused() -> None:
    table = bulk.table(Recipient)
    values = recipient_values()
    without_address = {name: value for name, value in values.items() if name != "address"}

    with pytest.raises(ValueError, match=r"\['address'\]"):
        table.rows([without_address])
    with pytest.raises(ValueError, match=r"\['size'\]"):
        table.rows([values, {**values, "size": 12}])
    with pytest.raises(ValueError, match=r"\['address', 'adress'\]"):  # a name misspelt
        table.rows([{**without_address, "adress": "a@example.org"}])


@pytest.mark.django_db
def test_a_row_is_checked_before_its_text_is_weighed() -> None:
    message = recorder._message_row(7, 1, partly_refused_message())
    chunk = next(recorder._chunk_rows(7, make_transcript()))
    without_headers = {name: value for name, value in message.items() if name != "headers"}
    without_lines = {name: value for name, value in chunk.items() if name != "lines"}

    with connection.cursor() as cursor:
        with pytest.raises(ValueError, match=r"\['headers'\]"):
            bulk.insert(cursor, bulk.table(Message), [without_headers])
        with pytest.raises(ValueError, match=r"\['lines'\]"):
            bulk.insert_large(cursor, bulk.table(TranscriptChunk), [without_lines])


def test_text_is_made_storable_a_column_at_a_time() -> None:
    column = ("250 2.1.5 Ok", "x" * 16)
    assert bulk.storable(column, 16) is column  # nearly always: nothing to change
    assert list(bulk.storable(["a\x00b", "c"], None)) == ["a\ufffdb", "c"]
    assert list(bulk.storable(["a" * 20, "b", "c\x00" * 10], 16)) == [
        "a" * 16,
        "b",
        "c\ufffd" * 8,
    ]

    table = bulk.table(Recipient)
    hostile = {**recipient_values(), "address": "x\x00" * 200, "enhanced_status": "5" * 20}
    rows = table.rows([recipient_values(), hostile])
    stored = [dict(zip(table.columns, row, strict=True)) for row in rows]
    assert stored[0] == recipient_values()
    assert stored[1] == {
        **hostile,
        "address": "x\ufffd" * 160,  # max_length 320
        "enhanced_status": "5" * 16,
    }
