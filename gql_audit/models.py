"""``SecurityEvent``: one row per failure worth an operator's eye."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from gql_audit.kinds import KINDS, SEVERITIES


class SecurityEvent(models.Model):
    # Random keys: sequential ones make a write hot spot on CockroachDB.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=[(k, label) for k, (label, _) in KINDS.items()], db_index=True)
    severity = models.CharField(max_length=10, choices=[(s, s) for s in SEVERITIES])
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
