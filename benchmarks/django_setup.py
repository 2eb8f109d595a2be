"""Django in a benchmark's own process: django_sockmail and the admin's apps, one
database, no settings module."""

from __future__ import annotations

from typing import Any


def setup_django(database: dict[str, Any], **extra: Any) -> None:
    """Configure Django with ``database`` as the default (and ``extra`` settings), then
    set it up."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.admin",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django_sockmail",
        ],
        DATABASES={"default": database},
        SOCKMAIL={"LOCAL_HOSTNAME": "bench.localhost"},
        **extra,
    )
    django.setup()
