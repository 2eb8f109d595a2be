"""Settings for the test suite. SOCKMAIL_TEST_DB picks the database (sqlite by default)."""

import os
from typing import Any

import django

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_sockmail",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_DATABASES: dict[str, dict[str, Any]] = {
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "postgresql": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "sockmail",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    },
    "mysql": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "sockmail",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"CHARSET": "utf8mb4"},
    },
}
DATABASES = {"default": _DATABASES[os.environ.get("SOCKMAIL_TEST_DB", "sqlite")]}
# SOCKMAIL_TEST_DB_NAME names the test database pytest-django creates on a server
# (default test_sockmail), so that the matrix's cells (noxfile.py) and a run of your own
# beside them never create, fill or drop the same one.
if os.environ.get("SOCKMAIL_TEST_DB_NAME") and DATABASES["default"]["NAME"] != ":memory:":
    DATABASES["default"]["TEST"] = {
        **DATABASES["default"].get("TEST", {}),
        "NAME": os.environ["SOCKMAIL_TEST_DB_NAME"],
    }
# A second connection to the same database, as docs/operations.md suggests for the audit log
# (SOCKMAIL["DATABASE"]), so its writes are outside the caller's transactions.
DATABASES["audit"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}

# Mail goes through our backend, configured the way each Django asks: MAILERS on 6.1
# (where the EMAIL_* settings are deprecated: defining one warns), EMAIL_* before it.
# The server is Django's default (localhost:25); the tests that send name their own.
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {
            "BACKEND": "django_sockmail.backend.EmailBackend",
            "OPTIONS": {"host": "localhost", "port": 25},
        }
    }
else:
    EMAIL_BACKEND = "django_sockmail.backend.EmailBackend"

# Hashing the test users' passwords properly would dominate the admin tests' time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
