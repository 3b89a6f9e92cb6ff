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


class Viewer(graphene.ObjectType):
    username = graphene.String()


class ArgumentQuery(graphene.ObjectType):
    """graphql_jwt's JWT_ALLOW_ARGUMENT style: a private field taking the token as an argument."""

    viewer = graphene.Field(Viewer, token=graphene.String())
    status = graphene.String()

    def resolve_viewer(root, info, token=None):
        user = info.context.user
        return Viewer(username=user.get_username()) if user.is_authenticated else None

    @gql_audit.public
    def resolve_status(root, info):
        return "ok"


argument_schema = graphene.Schema(query=ArgumentQuery)
