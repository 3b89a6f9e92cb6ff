"""What every authenticator here shares: the exceptions it raises (credentials
judged bad, with the code the client gets, or a dependency that failed before
they could be judged) and the bound on a token's size."""

from __future__ import annotations

from gql_audit.errors import MESSAGES, TOKEN_EXPIRED, TOKEN_INVALID

#: Longer bearer values are rejected before any decoding is attempted.
MAX_TOKEN_LENGTH = 8192


class AuthenticationFailed(Exception):
    """Raise from a custom ``AUTHENTICATOR`` to pick the code and client message."""

    code = TOKEN_INVALID

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.client_message = message or MESSAGES[self.code]
        super().__init__(self.client_message)


class TokenExpired(AuthenticationFailed):
    code = TOKEN_EXPIRED


class AuthUnavailable(Exception):
    """Raise from a custom ``AUTHENTICATOR`` when a dependency (directory, cache,
    identity provider) failed: the credentials were not judged, so they are not bad."""
