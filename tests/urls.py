from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView
from graphene_file_upload.django import FileUploadGraphQLView
from graphql_jwt.middleware import JSONWebTokenMiddleware

from example_service.urls import urlpatterns as example_urlpatterns
from gql_audit.graphene import AuditMiddleware
from tests.schemas import argument_schema


class HeaderDocumentView(GraphQLView):
    """A view of a service's own that reads its document where no GraphQL server does (a
    header): admission cannot see it, so it is checked when it executes."""

    @staticmethod
    def get_graphql_params(request, data):
        query, variables, operation_name, request_id = GraphQLView.get_graphql_params(request, data)
        return request.headers.get("X-Document") or query, variables, operation_name, request_id


urlpatterns = [
    *example_urlpatterns,
    # graphql_jwt's own Graphene middleware kept beside ours (listed after: it runs first).
    path(
        "graphql-jwt/",
        csrf_exempt(GraphQLView.as_view(middleware=[AuditMiddleware, JSONWebTokenMiddleware])),
    ),
    # Batched requests (a JSON list of operations), for the persisted-operation and limit checks.
    path("graphql-batch/", csrf_exempt(GraphQLView.as_view(batch=True))),
    # graphene-file-upload's view: the GraphQL multipart request specification (``operations``, ``map``).
    path("graphql-upload/", csrf_exempt(FileUploadGraphQLView.as_view())),
    path("graphql-header/", csrf_exempt(HeaderDocumentView.as_view())),
    # The same, on a schema whose private field takes the token as an argument (JWT_ALLOW_ARGUMENT).
    path(
        "graphql-jwt-argument/",
        csrf_exempt(GraphQLView.as_view(schema=argument_schema, middleware=[AuditMiddleware, JSONWebTokenMiddleware])),
    ),
]
