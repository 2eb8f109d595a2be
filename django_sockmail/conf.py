"""django_sockmail's own settings, read live from ``settings.SOCKMAIL`` (a dict) so
``override_settings`` works in tests."""

from __future__ import annotations

from typing import Any

from django.conf import settings


class Settings:
    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, "SOCKMAIL", {}).get(name, default)

    @property
    def RECORD_SESSIONS(self) -> bool:
        """Write every session's transcript to the database (default True)."""
        return bool(self._get("RECORD_SESSIONS", True))

    @property
    def LOCAL_HOSTNAME(self) -> str | None:
        """The name to give in EHLO (default: this machine's FQDN, like smtplib)."""
        value = self._get("LOCAL_HOSTNAME", None)
        return str(value) if value else None


conf = Settings()
