"""The test suite's own settings are a project's for the Django they run on: MAILERS on
Django 6.1 (where defining an EMAIL_* setting is deprecated), EMAIL_BACKEND before it —
so a 6.1 cell's warnings are about the code under test, never about its settings."""

from __future__ import annotations

import warnings
from typing import Any

import django
from django.conf import Settings

OURS = "django_sockmail.backend.EmailBackend"


def test_loading_the_test_settings_raises_no_deprecation_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Settings("tests.settings")  # what django.conf does with DJANGO_SETTINGS_MODULE
    deprecations = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
    ]
    assert deprecations == []


def test_the_test_settings_send_through_our_backend_the_way_their_django_asks() -> None:
    loaded: Any = Settings("tests.settings")  # its settings are attributes of their own
    if django.VERSION >= (6, 1):
        assert not loaded.is_overridden("EMAIL_BACKEND")
        assert loaded.MAILERS["default"]["BACKEND"] == OURS
    else:
        assert not loaded.is_overridden("MAILERS")
        assert loaded.EMAIL_BACKEND == OURS
