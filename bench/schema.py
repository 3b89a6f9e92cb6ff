"""A schema with a wide list, to measure the per-field path of the middleware."""

import graphene

import gql_audit

FIELDS = [f"f{i}" for i in range(8)]


class Row(graphene.ObjectType):
    locals().update({name: graphene.String() for name in FIELDS})


class Query(graphene.ObjectType):
    rows = graphene.List(Row, n=graphene.Int(required=True))

    @gql_audit.public
    def resolve_rows(root, info, n):
        return [{name: f"{name}-{i}" for name in FIELDS} for i in range(n)]


schema = graphene.Schema(query=Query)
QUERY = "query Rows($n: Int!) { rows(n: $n) { %s } }" % " ".join(FIELDS)
