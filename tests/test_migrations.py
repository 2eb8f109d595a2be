"""The migrations describe the models exactly: a model change without its migration
would leave every user's database behind the code."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_models_have_no_changes_without_a_migration() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "django_sockmail", check=True, dry_run=True, stdout=out)
    except SystemExit:  # --check exits non-zero when a migration is missing
        pytest.fail(f"makemigrations would write a migration:\n{out.getvalue()}")
