from django.apps import AppConfig


class ExampleServiceConfig(AppConfig):
    name = "example_service"
    verbose_name = "Example service"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model

        from example_service.models import Document, Profile

        auditlog.register(get_user_model(), exclude_fields=["password", "last_login"])
        auditlog.register(Profile)
        auditlog.register(Document)
