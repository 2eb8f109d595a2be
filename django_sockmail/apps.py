from django.apps import AppConfig


class SockmailConfig(AppConfig):
    name = "django_sockmail"
    verbose_name = "SMTP audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import register_checks

        register_checks()
