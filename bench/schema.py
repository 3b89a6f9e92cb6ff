"""A schema with a wide list, to measure the per-field path of the middleware."""

import graphene
from auditlog.signals import accessed
from graphene_django import DjangoObjectType

import gql_audit
from bench.models import Record
from example_service import schema as example

FIELDS = [f"f{i}" for i in range(8)]


class Row(graphene.ObjectType):
    locals().update({name: graphene.String() for name in FIELDS})


class Query(graphene.ObjectType):
    rows = graphene.List(Row, n=graphene.Int(required=True))

    @gql_audit.public
    def resolve_rows(root, info, n):
        return [{name: f"{name}-{i}" for name in FIELDS} for i in range(n)]


class RecordType(DjangoObjectType):
    class Meta:
        model = Record
        fields = ("id", "name", "email", "phone", "city", "country", "status", "score")


class RecordQuery(graphene.ObjectType):
    records = graphene.List(graphene.NonNull(RecordType), first=graphene.Int())
    records_with_accessed_signal = graphene.List(graphene.NonNull(RecordType))

    @gql_audit.public
    def resolve_records(root, info, first=None):
        return Record.objects.all() if first is None else Record.objects.all()[:first]

    @gql_audit.public
    def resolve_records_with_accessed_signal(root, info):
        # What services do with auditlog alone: one accessed signal per object.
        records = list(Record.objects.all())
        for record in records:
            accessed.send(sender=Record, instance=record)
        return records


schema = graphene.Schema(query=Query)
record_schema = graphene.Schema(query=RecordQuery)
# The same types built again for the bare configurations: gql_audit instruments the
# fields of the schemas it audits, and bare graphene-django must not run those.
bare_schema = graphene.Schema(query=Query)
bare_record_schema = graphene.Schema(query=RecordQuery)
bare_example_schema = graphene.Schema(query=example.Query, mutation=example.Mutation)
RECORD_FIELDS = "id name email phone city country status score"
QUERY = "query Rows($n: Int!) { rows(n: $n) { %s } }" % " ".join(FIELDS)
