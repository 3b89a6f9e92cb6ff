from django.contrib import admin
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView
from graphql_jwt.middleware import JSONWebTokenMiddleware

from bench.schema import bare_example_schema, bare_record_schema, record_schema
from gql_audit.graphene import AuditMiddleware

urlpatterns = [
    path("admin/", admin.site.urls),
    # Bare graphene-django: no Graphene middleware at all.
    path("bare/", csrf_exempt(GraphQLView.as_view(schema=bare_example_schema, middleware=[]))),
    # Bare graphene-django authenticating with graphql_jwt's own middleware.
    path("jwt/", csrf_exempt(GraphQLView.as_view(schema=bare_example_schema, middleware=[JSONWebTokenMiddleware]))),
    # gql_audit.
    path("audit/", csrf_exempt(GraphQLView.as_view(middleware=[AuditMiddleware]))),
    path("records/bare/", csrf_exempt(GraphQLView.as_view(schema=bare_record_schema, middleware=[]))),
    path("records/audit/", csrf_exempt(GraphQLView.as_view(schema=record_schema, middleware=[AuditMiddleware]))),
]
