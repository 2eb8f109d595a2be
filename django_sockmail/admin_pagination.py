"""Pagination for the audit log's lists, which grow to millions of rows: a count that
stops at a limit, and a change list that shows a capped count as "more than N"
(the templates in ``admin/django_sockmail/``)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.formats import number_format
from django.utils.functional import cached_property

__all__ = ["AuditLogChangeList", "CappedCountPaginator"]


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that never counts a whole table.

    The stock paginator counts every row that the list shows, on every page view: a
    scan of the whole table (or of an index of it) that grows with the table. This one
    counts at most ``count_limit + 1`` rows, in a sliced subquery that works on every
    database; past the limit it reports ``count_limit`` rows (so the last page is a
    full one), sets ``capped``, and the list reads "more than ``count_limit``". Pages
    beyond the limit are not offered: a filter or a search narrows the list instead.
    """

    count_limit = 10_000

    @cached_property
    def _counted(self) -> int:
        object_list = self.object_list
        limit = self.count_limit
        if isinstance(object_list, QuerySet):
            # Without ORDER BY the database may count along any index that fits the
            # filter; the LIMIT lets it stop at limit + 1 rows.
            return object_list.order_by()[: limit + 1].count()
        return len(object_list)

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.count_limit)

    @property
    def capped(self) -> bool:
        """Whether there are more rows than ``count`` says."""
        return self._counted > self.count_limit


class _CountedAsText:
    """A change list as the stock pagination template sees it: everything as it is,
    except the result count, which reads "more than N"."""

    def __init__(self, changelist: ChangeList, result_count: str) -> None:
        self._changelist = changelist
        self.result_count = result_count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._changelist, name)


class AuditLogChangeList(ChangeList):
    """The change list of the audit log, for the templates in
    ``admin/django_sockmail/`` that show a capped count as "more than N"."""

    @property
    def count_capped(self) -> bool:
        return bool(getattr(self.paginator, "capped", False))

    @property
    def for_pagination(self) -> ChangeList | _CountedAsText:
        if not self.count_capped:
            return self
        limit = number_format(self.paginator.count, force_grouping=True)
        return _CountedAsText(self, f"more than {limit}")
