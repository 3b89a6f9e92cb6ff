from django.db import models


class Record(models.Model):
    """Eight readable fields, registered with auditlog."""

    name = models.CharField(max_length=50)
    email = models.CharField(max_length=80)
    phone = models.CharField(max_length=30)
    city = models.CharField(max_length=50)
    country = models.CharField(max_length=50)
    status = models.CharField(max_length=20)
    score = models.IntegerField()

    class Meta:
        ordering = ["id"]
