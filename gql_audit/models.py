"""``SecurityEvent``: one row per failure worth an operator's eye."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class SecurityEvent(models.Model):
    class Kind(models.TextChoices):
        TOKEN_INVALID = "token_invalid", "token invalid"
        TOKEN_EXPIRED = "token_expired", "token expired"
        UNAUTHENTICATED = "unauthenticated", "unauthenticated"
        FORBIDDEN = "forbidden", "forbidden"
        GRAPHQL_ERROR = "graphql_error", "GraphQL error"
        DB_ERROR = "db_error", "database error"
        DB_RETRY = "db_retry", "database retry"
        CERT_FAILED = "cert_failed", "certificate failed"
        CERT_HEADER_UNTRUSTED = "cert_header_untrusted", "certificate header untrusted"

    class Severity(models.TextChoices):
        INFO = "info", "info"
        WARNING = "warning", "warning"
        ERROR = "error", "error"

    # Random keys: sequential ones make a write hot spot on CockroachDB.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    operation = models.JSONField(null=True, blank=True)
    path = models.CharField(max_length=512, blank=True)
    message = models.TextField(blank=True)
    sqlstate = models.CharField(max_length=5, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "security event"
        verbose_name_plural = "security events"

    def __str__(self) -> str:
        return f"{self.kind} {self.request_id or ''}".strip()
