"""GraphiQL served without a CDN, under a strict Content-Security-Policy."""

from graphene_django.views import GraphQLView

#: Scripts, styles and requests from the service only; fonts and images also as data: URLs (GraphiQL's CSS).
GRAPHIQL_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)


class ExampleGraphQLView(GraphQLView):
    """graphene-django's view whose GraphiQL page loads the files vendored in static/example_service/graphiql/.

    The versions and integrity hashes are those files' (see the README.md beside
    them), pinned here so that an upgrade of graphene-django cannot ask for others.
    """

    graphiql_template = "example_service/graphiql.html"
    whatwg_fetch_version = "3.6.2"
    whatwg_fetch_sri = "sha256-+pQdxwAcHJdQ3e/9S4RK6g8ZkwdMgFQuHvLuN5uyk5c="
    react_version = "17.0.2"
    react_sri = "sha256-Ipu/TQ50iCCVZBUsZyNJfxrDk0E2yhaEIz0vqI+kFG8="
    react_dom_sri = "sha256-nbMykgB6tsOFJ7OdVmPpdqMFVk4ZsqWocT6issAPUF0="
    graphiql_version = "2.4.7"
    graphiql_sri = "sha256-n/LKaELupC1H/PU6joz+ybeRJHT2xCdekEt6OYMOOZU="
    graphiql_css_sri = "sha256-OsbM+LQHcnFHi0iH7AUKueZvDcEBoy/z4hJ7jx1cpsM="
    subscriptions_transport_ws_version = "5.13.1"
    subscriptions_transport_ws_sri = "sha256-EZhvg6ANJrBsgLvLAa0uuHNLepLJVCFYS+xlb5U/bqw="
    graphiql_plugin_explorer_version = "0.1.15"
    graphiql_plugin_explorer_sri = "sha256-3hUuhBXdXlfCj6RTeEkJFtEh/kUG+TCDASFpFPLrzvE="
    graphiql_plugin_explorer_css_sri = "sha256-fA0LPUlukMNR6L4SPSeFqDTYav8QdWjQ2nr559Zln1U="

    def render_graphiql(self, request, **data):
        data["graphene_settings"] = {
            "subscriptionPath": data.get("subscription_path") or None,
            "graphiqlHeaderEditorEnabled": bool(data.get("graphiql_header_editor_enabled")),
            "graphiqlShouldPersistHeaders": bool(data.get("graphiql_should_persist_headers")),
            "graphiqlInputValueDeprecation": bool(data.get("graphiql_input_value_deprecation")),
        }
        response = super().render_graphiql(request, **data)
        response["Content-Security-Policy"] = GRAPHIQL_CSP
        return response
