"""Plain rows into a table, many to a query, the way each database takes them cheapest.

The recorder writes the audit log's messages, recipients and transcript chunks through
this: at most ``ROWS_PER_QUERY`` rows (and ``TEXT_PER_QUERY`` characters of unbounded
text) a query, so the number of queries grows by one per thousand rows of a table.

A row comes as a mapping of every field of its :class:`Table` by name: a value always
goes to the column of the name beside it, and a field left out, or one the table does
not have, is an error. Text from the server is made :func:`storable` a column at a
time, a query's worth of rows at once.

SQLite takes the rows as an ``INSERT`` with its own ``?`` placeholders on the sqlite3
connection, PostgreSQL with psycopg 3 as a ``COPY``, any other database as a multi-row
``INSERT`` through Django's cursor. The first two go past Django's cursor: they are
logged as queries (``connection.queries``, ``assertNumQueries``) and raise Django's
errors, but no ``execute_wrapper`` sees them.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from operator import itemgetter
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

# At most this many rows, and about this many characters of text (a "full" content
# line can hold CONTENT_MAX_BYTES), go to the database in one query.
ROWS_PER_QUERY = 1000
TEXT_PER_QUERY = 1 << 20

Row = tuple[Any, ...]
"""A row's values in the order of its table's :attr:`Table.columns`."""

Values = Mapping[str, Any]
"""A row's values by field name (``attname``): see :meth:`Table.rows`."""


@cache
def table(model: type[models.Model]) -> Table:
    """``model``'s :class:`Table`, made once."""
    return Table(model)


def insert(cursor: CursorWrapper, table: Table, values: Iterable[Values]) -> None:
    """Insert a row of ``values`` each into ``table``, as many to a query as the bounds
    allow."""
    per_query = _rows_per_query(cursor.db, table)
    values = iter(values)
    while chunk := list(itertools.islice(values, per_query)):
        rows = table.rows(chunk)
        if table.text_size(rows) <= TEXT_PER_QUERY:
            _writer(cursor.db)(cursor, table, rows)
        else:  # rarely: long texts, a few rows to a query
            _insert_by_text(cursor, table, rows)


def insert_large(cursor: CursorWrapper, table: Table, values: Iterable[Values]) -> None:
    """Insert a row of ``values`` each, made as they come: for rows of long text, of
    which no more than a query's worth is held at once."""
    _insert_by_text(cursor, table, (row for value in values for row in table.rows([value])))


def _insert_by_text(cursor: CursorWrapper, table: Table, rows: Iterable[Row]) -> None:
    """``rows`` as they come, to queries of at most ROWS_PER_QUERY rows and, unless a
    row alone is longer, TEXT_PER_QUERY characters of text."""
    write = _writer(cursor.db)
    per_query = _rows_per_query(cursor.db, table)
    part: list[Row] = []
    size = 0
    for row in rows:
        weight = table.text_size((row,))
        if part and (len(part) >= per_query or size + weight > TEXT_PER_QUERY):
            write(cursor, table, part)
            part, size = [], 0
        part.append(row)
        size += weight
    if part:
        write(cursor, table, part)


def storable(texts: Sequence[str], max_length: int | None) -> Sequence[str]:
    """``texts`` (a column's) made storable on every backend: NUL characters become
    U+FFFD, and what is longer than ``max_length`` is cut to it. ``texts`` itself
    when nothing needs to change, as nearly always.

    The server chooses much of what is saved, so nothing may make the insert fail:
    PostgreSQL rejects NUL characters and enforces ``max_length``.
    """
    if "\x00" in "".join(texts):
        texts = [text.replace("\x00", "\ufffd") for text in texts]
    if max_length is not None and max(map(len, texts), default=0) > max_length:
        texts = [text[:max_length] for text in texts]
    return texts


@cache
def text_fields(model: type[models.Model]) -> dict[str, int | None]:
    """``model``'s CharFields and TextFields: the ``max_length`` of each by attname."""
    return {
        field.attname: field.max_length
        for field in model._meta.concrete_fields
        if isinstance(field, (models.CharField, models.TextField))
    }


class Table:
    """A model's table as rows are written into it: every concrete field but the
    primary key the database numbers, each by its ``attname`` (``session_id`` for a
    foreign key to a session: the value is the id)."""

    def __init__(self, model: type[models.Model]) -> None:
        meta, texts = model._meta, text_fields(model)
        fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
        self.name = meta.db_table
        self.fields = tuple(field.attname for field in fields)
        self.columns = tuple(str(field.column) for field in fields)
        self._values = _getter(self.fields)
        # (position in the row, max_length) of each text value.
        self._texts = [(i, texts[name]) for i, name in enumerate(self.fields) if name in texts]
        # The text values without a max_length: what counts against TEXT_PER_QUERY.
        self._unbounded = _getter([i for i, max_length in self._texts if max_length is None])

    def rows(self, values: Sequence[Values]) -> list[Row]:
        """The rows of ``values``: a value for each of :attr:`fields` by name (none
        missing, none more), their text made :func:`storable` a column at a time."""
        if not values:
            return []
        if set(map(len, values)) != {len(self.fields)}:
            raise self._not_the_fields(values)
        try:
            rows = list(map(self._values, values))
        except KeyError:
            raise self._not_the_fields(values) from None
        columns = list(zip(*rows, strict=True))
        texts = [(i, storable(columns[i], max_length)) for i, max_length in self._texts]
        if all(text is columns[i] for i, text in texts):
            return rows  # nearly always: nothing to change
        for i, text in texts:
            columns[i] = tuple(text)
        return list(zip(*columns, strict=True))

    def _not_the_fields(self, values: Sequence[Values]) -> ValueError:
        names = set(itertools.chain.from_iterable(values)) ^ set(self.fields)
        return ValueError(f"{self.name}: fields without a value, or no fields: {sorted(names)}")

    def text_size(self, rows: Iterable[Row]) -> int:
        """The characters of text in ``rows`` that count against TEXT_PER_QUERY."""
        return sum(map(len, itertools.chain.from_iterable(map(self._unbounded, rows))))


def _getter(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter(*keys)``, but a tuple for any number of keys (itemgetter gives one
    key's value bare)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if keys:
        get = itemgetter(keys[0])
        return lambda item: (get(item),)
    return lambda item: ()


_Writer = Callable[[CursorWrapper, Table, list[Row]], None]


def _writer(connection: BaseDatabaseWrapper) -> _Writer:
    """How rows get to ``connection``'s database: what costs the least on each."""
    if connection.vendor == "sqlite":
        return _insert_sqlite
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if is_psycopg3:
            return _copy
    return _insert_values


def _insert_values(cursor: CursorWrapper, table: Table, rows: list[Row]) -> None:
    cursor.execute(_insert_sql(cursor.db, table, len(rows)), _values(rows))


def _insert_sqlite(cursor: CursorWrapper, table: Table, rows: list[Row]) -> None:
    """The INSERT with SQLite's own placeholders, straight to the sqlite3 connection:
    Django's cursor would first rewrite every ``%s`` of it with a regular expression,
    a tenth of the whole write."""
    sql = _insert_sql(cursor.db, table, len(rows), placeholder="?")
    with _driver_call(cursor, sql):
        cursor.db.connection.execute(sql, _values(rows))


def _copy(cursor: CursorWrapper, table: Table, rows: list[Row]) -> None:
    """The rows by PostgreSQL's COPY, with psycopg 3, whose parsing of a long INSERT's
    placeholders (in Python) would cost more than the database's own work."""
    quote = cursor.db.ops.quote_name
    columns = ", ".join(quote(column) for column in table.columns)
    sql = f"COPY {quote(table.name)} ({columns}) FROM STDIN"
    with _driver_call(cursor, sql), cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _driver_call(cursor: CursorWrapper, sql: str) -> Iterator[None]:
    """Around a call to the database driver itself, what Django's cursor would do:
    the query is logged (``connection.queries``, ``assertNumQueries``) and errors are
    Django's. No ``execute_wrapper`` sees it."""
    logged: AbstractContextManager[object] = (
        cursor.debug_sql(sql) if isinstance(cursor, CursorDebugWrapper) else nullcontext()
    )
    cursor.db.validate_no_broken_transaction()
    with logged, cursor.db.wrap_database_errors:
        yield


def _insert_sql(
    connection: BaseDatabaseWrapper, table: Table, count: int, placeholder: str = "%s"
) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in table.columns)
    row = f"({', '.join([placeholder] * len(table.columns))})"
    return f"INSERT INTO {quote(table.name)} ({columns}) VALUES {', '.join([row] * count)}"


def _values(rows: list[Row]) -> list[Any]:
    return list(itertools.chain.from_iterable(rows))


def _rows_per_query(connection: BaseDatabaseWrapper, table: Table) -> int:
    """ROWS_PER_QUERY, or fewer where the database takes fewer parameters a query."""
    max_params = _max_query_params(connection)
    if max_params is None:
        return ROWS_PER_QUERY
    return max(1, min(ROWS_PER_QUERY, max_params // len(table.columns)))


def _max_query_params(connection: BaseDatabaseWrapper) -> int | None:
    limit: int | None = connection.features.max_query_params
    if connection.vendor == "sqlite":
        # Django 5.2 assumes SQLite's old default of 999 variables a query (a row of
        # lines has five); Django 6 reads the real limit (32766 since SQLite 3.32), as here.
        getlimit: Callable[[int], int] | None = getattr(connection.connection, "getlimit", None)
        if getlimit is not None:
            limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return limit
