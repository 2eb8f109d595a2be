"""docs/settings.md, made from the tables in conf.py: after changing a setting, run
``python -m django_sockmail.settings_reference > docs/settings.md``. A test fails
while the file says something else than the tables."""

from __future__ import annotations

import sys

from .conf import MAIL_OPTIONS, SETTINGS

COMMAND = "python -m django_sockmail.settings_reference > docs/settings.md"


def markdown() -> str:
    """The whole reference, as docs/settings.md holds it."""
    return "\n".join([*_heading(), *_sockmail_keys(), *_mail_options()])


def _heading() -> list[str]:
    return [
        "# Settings",
        "",
        f"<!-- Made from django_sockmail/conf.py by `{COMMAND}`: edit the tables there. -->",
        "",
    ]


def _sockmail_keys() -> list[str]:
    lines = [
        "## SOCKMAIL",
        "",
        'django_sockmail\'s own settings, in one dict: `SOCKMAIL = {"KEY": value, ...}`.',
        "Each is read when it is used, so `override_settings` works. A value its key does",
        "not take is refused there (`ImproperlyConfigured`, naming the key) and by",
        "`manage.py check` (sockmail.E003, E005, E006, E009); an unknown key is",
        "sockmail.W004.",
        "",
    ]
    for setting in SETTINGS.values():
        lines += [
            f"### `{setting.key}`",
            "",
            setting.doc,
            "",
            f"Type `{setting.type}`, default `{setting.default!r}`. Takes {setting.takes}.",
            "",
        ]
    return lines


def _mail_options() -> list[str]:
    lines = [
        "## Django's mail settings",
        "",
        "What the backend reads of Django's own mail configuration: on Django 6.1, a",
        "`MAILERS` entry's `OPTIONS`; before, or without `MAILERS`, the `EMAIL_*`",
        "settings. `EmailBackend`'s arguments of the same names come first.",
        "",
        "| `OPTIONS` key | `EMAIL_*` setting | Type | |",
        "|---|---|---|---|",
    ]
    for option in MAIL_OPTIONS.values():
        type_ = option.type.replace("|", "\\|")  # a bare | would end the table's cell
        lines.append(f"| `{option.option}` | `{option.setting}` | `{type_}` | {option.doc} |")
    return [*lines, ""]


if __name__ == "__main__":
    sys.stdout.write(markdown())
