from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView
from graphene_file_upload.django import FileUploadGraphQLView
from graphql_jwt.middleware import JSONWebTokenMiddleware

from example_service.urls import urlpatterns as example_urlpatterns
from gql_audit.graphene import AuditMiddleware
from tests.schemas import argument_schema

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
    # The same, on a schema whose private field takes the token as an argument (JWT_ALLOW_ARGUMENT).
    path(
        "graphql-jwt-argument/",
        csrf_exempt(
            GraphQLView.as_view(schema=argument_schema, middleware=[AuditMiddleware, JSONWebTokenMiddleware])
        ),
    ),
]
