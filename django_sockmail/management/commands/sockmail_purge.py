"""``manage.py sockmail_purge``: delete old sessions from the audit log.

A session goes with its messages, their recipients and its transcript lines. The work
is done in batches of sessions, each in a short transaction of its own, so the tables
are never locked for long however much there is to delete.
"""

from __future__ import annotations

import re
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_sockmail.conf import InvalidSetting, conf
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk

_AGE = re.compile(r"(-?\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``, or a bare number of days."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not an age such as 30d, 12h, 90m, 2w or 45s")
    number, unit = match.groups()
    return timedelta(**{_UNITS[unit]: float(number)})


@dataclass(frozen=True)
class Removed:
    """How many rows of each table a purge removed (or would remove)."""

    sessions: int = 0
    messages: int = 0
    recipients: int = 0
    lines: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __str__(self) -> str:
        return (
            f"{_plural(self.sessions, 'session')} ({_plural(self.messages, 'message')}, "
            f"{_plural(self.recipients, 'recipient')}, {_plural(self.lines, 'transcript line')})"
        )


class Command(BaseCommand):
    help = (
        "Delete SMTP sessions older than an age (default: SOCKMAIL['RETENTION']) "
        "with their messages, recipients and transcript lines."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="e.g. 30d, 12h, 90m, 2w, 45s; a bare number is days. "
            "Default: SOCKMAIL['RETENTION'].",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            metavar="N",
            help="Sessions deleted per transaction (default 1000).",
        )

    def handle(
        self,
        *args: Any,
        older_than: str | None,
        dry_run: bool,
        batch_size: int,
        verbosity: int,
        **options: Any,
    ) -> None:
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
        age = _age(older_than)
        try:
            cutoff = timezone.now() - age
        except OverflowError:
            raise CommandError(f"An age of {age.days:,} days reaches before year 1.") from None
        using = conf.DATABASE or router.db_for_write(Session)

        if dry_run:
            removed = _count(cutoff, using)
        else:
            removed = self._purge(cutoff, using, batch_size, verbosity)
        if verbosity >= 1:
            verb = "Would delete" if dry_run else "Deleted"
            when = f"{cutoff:%Y-%m-%d %H:%M:%S %Z}".rstrip()  # no zone name when naive
            self.stdout.write(f"{verb} {removed} older than {when}.")

    def _purge(self, cutoff: datetime, using: str, batch_size: int, verbosity: int) -> Removed:
        # Oldest first, along the started_at index; each batch is a bounded list of ids.
        old = Session.objects.using(using).filter(started_at__lt=cutoff).order_by("started_at")
        total = Removed()
        batch = 0
        while True:
            with transaction.atomic(using=using):
                ids = list(old.values_list("pk", flat=True)[:batch_size])
                if not ids:
                    return total
                removed = _delete(ids, using)
            batch += 1
            total += removed
            if verbosity >= 2:
                self.stdout.write(f"Batch {batch}: deleted {removed}.")


def _age(older_than: str | None) -> timedelta:
    """The age from --older-than, else from SOCKMAIL['RETENTION']; never none at all."""
    if older_than is not None:
        given = f"--older-than {older_than}"
        try:
            age = parse_age(older_than)
        except (ValueError, OverflowError) as error:
            raise CommandError(f"--older-than: {error}.") from None
    else:
        try:
            retention = conf.RETENTION
        except InvalidSetting as error:  # names the setting, what it takes and what it got
            raise CommandError(f"{error}.") from None
        if retention is None:
            # Deleting everything is never the default.
            raise CommandError(
                "No age given: pass --older-than (e.g. --older-than 30d) "
                "or set SOCKMAIL['RETENTION']."
            )
        given = f"SOCKMAIL['RETENTION'] is {retention}"
        age = retention
    if age <= timedelta(0):
        raise CommandError(f"The age must be more than zero ({given}).")
    return age


def _delete(ids: list[int], using: str) -> Removed:
    """Delete the sessions ``ids`` and everything under them, children first.

    One DELETE per table however many rows it removes. QuerySet.delete() would first
    fetch the rows it cascades to (and delete them a few hundred ids at a time on
    SQLite); with the children already gone explicitly there is nothing to cascade.
    Like Django's own fast deletes, this sends no pre_delete/post_delete signals.
    """
    doomed = Session.objects.using(using).filter(pk__in=ids)
    lines = doomed.aggregate(lines=Coalesce(Sum("line_count"), 0))["lines"]  # a chunk holds many
    recipients = Recipient.objects.filter(message__session_id__in=ids)._raw_delete(using)
    messages = Message.objects.filter(session_id__in=ids)._raw_delete(using)
    TranscriptChunk.objects.filter(session_id__in=ids)._raw_delete(using)
    sessions = doomed._raw_delete(using)
    return Removed(sessions, messages, recipients, lines)


def _count(cutoff: datetime, using: str) -> Removed:
    """What a purge at ``cutoff`` would remove."""
    return Removed(
        sessions=Session.objects.using(using).filter(started_at__lt=cutoff).count(),
        messages=Message.objects.using(using).filter(session__started_at__lt=cutoff).count(),
        recipients=Recipient.objects.using(using)
        .filter(message__session__started_at__lt=cutoff)
        .count(),
        lines=Session.objects.using(using)
        .filter(started_at__lt=cutoff)
        .aggregate(lines=Coalesce(Sum("line_count"), 0))["lines"],
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
