"""Error codes put in ``extensions.code`` of the GraphQL errors gql_audit raises."""

from __future__ import annotations

TOKEN_EXPIRED = "TOKEN_EXPIRED"
TOKEN_INVALID = "TOKEN_INVALID"
UNAUTHENTICATED = "UNAUTHENTICATED"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
CLIENT_CERT_REQUIRED = "CLIENT_CERT_REQUIRED"

MESSAGES = {
    TOKEN_EXPIRED: "The authentication token has expired.",
    TOKEN_INVALID: "The authentication token is invalid.",
    UNAUTHENTICATED: "Authentication is required for this field.",
    INTROSPECTION_DISABLED: "Introspection is disabled.",
    CLIENT_CERT_REQUIRED: "A verified client certificate is required for this field.",
}
