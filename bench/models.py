from django.db import models

from gql_audit.models import RequestReads


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


class FloorReads(models.Model):
    """The floor: a request's reads row as ``gql_audit.models.RequestReads`` holds it, in a
    table with the same columns and indexes but no object index (no GIN index, no
    ``ReadObject`` rows): the least a durable record of a request can cost."""

    locals().update({field.name: field.clone() for field in RequestReads._meta.local_fields})
