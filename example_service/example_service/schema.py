"""The example service's GraphQL schema.

Public: ``serviceStatus``, ``publicDocuments`` and the token mutations.
Private: everything else, and ``Document.owner`` even under a public listing.
"""

import graphene
import graphql_jwt
from django.contrib.auth import get_user_model
from django.db.models import Q
from graphene import relay
from graphene_django import DjangoConnectionField, DjangoObjectType
from graphene_django.constants import MUTATION_ERRORS_FLAG
from graphql import GraphQLError

import gql_audit
from example_service.models import Document, Profile


def forbidden(message):
    return GraphQLError(message, extensions={"code": "FORBIDDEN"})


class ProfileType(DjangoObjectType):
    class Meta:
        model = Profile
        fields = ("full_name", "phone", "date_of_birth")


class UserType(DjangoObjectType):
    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email", "first_name", "last_name", "profile", "documents")


class DocumentNode(DjangoObjectType):
    class Meta:
        model = Document
        interfaces = (relay.Node,)
        fields = ("id", "title", "body", "classification", "owner", "created_at", "updated_at")

    # Nullable on purpose: a denied Non-Null field would null the whole document.
    owner = graphene.Field(UserType)

    @gql_audit.private
    def resolve_owner(self, info):
        return self.owner

    @classmethod
    def get_queryset(cls, queryset, info):
        user = info.context.user
        visible = Q(classification=Document.Classification.PUBLIC)
        if user.is_authenticated:
            visible |= Q(classification=Document.Classification.INTERNAL) | Q(owner=user)
        return queryset.filter(visible)


class DocumentSummary(graphene.ObjectType):
    """Served from plain dicts: gql_audit.audit_access names the model they stand for."""

    id = graphene.Int(required=True)
    title = graphene.String(required=True)
    classification = graphene.String(required=True)


class ServiceStatus(graphene.ObjectType):
    name = graphene.String(required=True)
    ok = graphene.Boolean(required=True)


class Query(graphene.ObjectType):
    service_status = graphene.Field(ServiceStatus)
    public_documents = graphene.List(graphene.NonNull(DocumentNode))
    me = graphene.Field(UserType)
    documents = graphene.List(graphene.NonNull(DocumentNode))
    document = graphene.Field(DocumentNode, id=graphene.ID(required=True))
    documents_connection = DjangoConnectionField(DocumentNode)
    document_summaries = graphene.List(graphene.NonNull(DocumentSummary))
    node = relay.Node.Field()

    def resolve_service_status(root, info):
        return ServiceStatus(name="example-service", ok=True)

    @gql_audit.public
    def resolve_public_documents(root, info):
        return Document.objects.filter(classification=Document.Classification.PUBLIC)

    def resolve_me(root, info):
        return info.context.user

    def resolve_documents(root, info):
        return DocumentNode.get_queryset(Document.objects.all(), info)

    @gql_audit.audit_access("example_service.Document", pk="id")
    def resolve_document_summaries(root, info):
        visible = DocumentNode.get_queryset(Document.objects.all(), info)
        return list(visible.values("id", "title", "classification"))

    def resolve_document(root, info, id):
        return relay.Node.get_node_from_global_id(info, id, only_type=DocumentNode)


class CreateDocument(graphene.Mutation):
    class Arguments:
        title = graphene.String(required=True)
        body = graphene.String()
        classification = graphene.String()

    document = graphene.Field(DocumentNode)

    def mutate(root, info, title, body="", classification=Document.Classification.INTERNAL):
        if classification not in Document.Classification.values:
            raise GraphQLError(f"Unknown classification {classification!r}.", extensions={"code": "BAD_USER_INPUT"})
        document = Document.objects.create(
            owner=info.context.user, title=title, body=body, classification=classification
        )
        return CreateDocument(document=document)


class UpdateDocument(graphene.Mutation):
    class Arguments:
        id = graphene.ID(required=True)
        title = graphene.String()
        body = graphene.String()

    document = graphene.Field(DocumentNode)

    def mutate(root, info, id, title=None, body=None):
        document = relay.Node.get_node_from_global_id(info, id, only_type=DocumentNode)
        if document is None:
            raise GraphQLError("No such document.", extensions={"code": "NOT_FOUND"})
        if document.owner_id != info.context.user.pk:
            raise forbidden("Only the owner may change a document.")
        if title is not None:
            document.title = title
        if body is not None:
            document.body = body
        document.save()
        return UpdateDocument(document=document)


class UpdateProfile(graphene.Mutation):
    class Arguments:
        full_name = graphene.String()
        phone = graphene.String()

    profile = graphene.Field(ProfileType)

    def mutate(root, info, full_name=None, phone=None):
        user = info.context.user
        profile, _ = Profile.objects.get_or_create(user=user, defaults={"full_name": user.get_username()})
        if full_name is not None:
            profile.full_name = full_name
        if phone is not None:
            profile.phone = phone
        profile.save()
        return UpdateProfile(profile=profile)


class ImportDocuments(graphene.Mutation):
    """Create several documents, all or none: a title that is empty fails the lot."""

    class Arguments:
        titles = graphene.List(graphene.NonNull(graphene.String), required=True)

    count = graphene.Int(required=True)

    def mutate(root, info, titles):
        for number, title in enumerate(titles, start=1):
            if not title.strip():
                # Tells graphene-django's ATOMIC_MUTATIONS to roll back what was written.
                setattr(info.context, MUTATION_ERRORS_FLAG, True)
                raise GraphQLError(f"Title {number} is empty.", extensions={"code": "BAD_USER_INPUT"})
            Document.objects.create(owner=info.context.user, title=title)
        return ImportDocuments(count=len(titles))


class DeleteAccount(graphene.Mutation):
    """Delete the caller's own account, with their profile and documents."""

    ok = graphene.Boolean(required=True)

    def mutate(root, info):
        info.context.user.delete()
        return DeleteAccount(ok=True)


class Mutation(graphene.ObjectType):
    token_auth = graphql_jwt.ObtainJSONWebToken.Field()
    verify_token = graphql_jwt.Verify.Field()
    refresh_token = graphql_jwt.Refresh.Field()
    create_document = CreateDocument.Field()
    update_document = UpdateDocument.Field()
    update_profile = UpdateProfile.Field()
    import_documents = ImportDocuments.Field()
    delete_account = DeleteAccount.Field()


schema = graphene.Schema(query=Query, mutation=Mutation)
