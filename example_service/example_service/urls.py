from django.contrib import admin
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from example_service.views import ExampleGraphQLView
from gql_audit.views import health, metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health),
    # Prometheus metrics (GQL_AUDIT["METRICS"]): for the monitoring system only, see docs/metrics.md.
    path("metrics/", metrics),
    # Tokens travel in the Authorization header, not in cookies, so the API
    # is exempt from CSRF checks (see docs/faq.md before enabling JWT cookies).
    path("graphql/", csrf_exempt(ExampleGraphQLView.as_view(graphiql=True))),
]
