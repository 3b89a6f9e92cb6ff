"""Small schemas for tests of the visibility rules."""

import graphene

import gql_audit


class Thing(graphene.ObjectType):
    name = graphene.String()
    secret = graphene.String(required=True)
    note = graphene.String()

    @gql_audit.private
    def resolve_secret(root, info):
        return "s3cret"

    @gql_audit.private
    def resolve_note(root, info):
        return "note"


class Query(graphene.ObjectType):
    open = graphene.Field(Thing)
    required = graphene.String(required=True)
    marked = graphene.String()

    def resolve_open(root, info):
        return Thing(name="thing")

    def resolve_required(root, info):
        return "required"

    @gql_audit.public
    def resolve_marked(root, info):
        return "marked"


non_null_schema = graphene.Schema(query=Query)
