"""Settings for the django_sockmail example project. Demo only: never deploy these.

SOCKMAIL_DEMO_DB picks the SQLite file (the tests point it at a temporary file);
SOCKMAIL_DEMO_SMTP_HOST / SOCKMAIL_DEMO_SMTP_PORT pick the SMTP server, by default
the one that ``manage.py sockmail_demo`` embeds.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-sockmail-example-project-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_sockmail",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SOCKMAIL_DEMO_DB") or BASE_DIR / "db.sqlite3",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# Mail goes through django_sockmail, configured the way each Django asks: a "default"
# mailer in MAILERS on Django 6.1 (where the EMAIL_* settings are deprecated), the
# EMAIL_* settings on 5.2. The embedded demo server listens at this host and port when
# the port is free (else on another port, and the demo points the mailer at it while it
# runs).
DEMO_SMTP_HOST = os.environ.get("SOCKMAIL_DEMO_SMTP_HOST", "127.0.0.1")
DEMO_SMTP_PORT = int(os.environ.get("SOCKMAIL_DEMO_SMTP_PORT", "8025"))
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {
            "BACKEND": "django_sockmail.backend.EmailBackend",
            "OPTIONS": {"host": DEMO_SMTP_HOST, "port": DEMO_SMTP_PORT},
        }
    }
else:
    EMAIL_BACKEND = "django_sockmail.backend.EmailBackend"
    EMAIL_HOST = DEMO_SMTP_HOST
    EMAIL_PORT = DEMO_SMTP_PORT
DEFAULT_FROM_EMAIL = "demo@example.com"
