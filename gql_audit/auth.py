"""Authenticators and the classification of their failures.

An authenticator is ``callable(request) -> user | None``: None means "no
credentials"; raising means "credentials were presented and are bad". The
middleware never lets that exception escape: it becomes an :class:`AuthError`
kept on the request context and reported only on private fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gql_audit.errors import MESSAGES, TOKEN_EXPIRED, TOKEN_INVALID

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger("gql_audit.auth")

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


@dataclass(frozen=True)
class AuthError:
    """A deferred authentication failure.

    ``message`` is safe to show to the client; ``reason`` is for operators
    (exception type and text, never the credential itself).
    """

    code: str
    message: str
    reason: str

    @property
    def event_kind(self) -> str:
        """The ``SecurityEvent`` kind this failure is recorded as."""
        return "token_expired" if self.code == TOKEN_EXPIRED else "token_invalid"


def classify(exc: BaseException) -> AuthError:
    from graphql_jwt.exceptions import JSONWebTokenExpired

    reason = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, AuthenticationFailed):
        return AuthError(exc.code, exc.client_message, reason)
    if isinstance(exc, JSONWebTokenExpired):
        return AuthError(TOKEN_EXPIRED, MESSAGES[TOKEN_EXPIRED], reason)
    # Anything else an authenticator raises means the credentials were not
    # accepted; its text may carry internals, so the client gets a fixed one.
    return AuthError(TOKEN_INVALID, MESSAGES[TOKEN_INVALID], reason)


def authenticate(request: HttpRequest, authenticator: Any) -> tuple[Any, AuthError | None]:
    """Run ``authenticator`` once; never raises for a failure of the credentials."""
    try:
        return authenticator(request), None
    except Exception as exc:  # noqa: BLE001 - any failure is a deferred auth error
        error = classify(exc)
        logger.debug("authentication failed with %s", error.code)
        return None, error


def scrub_credentials(request: HttpRequest, text: str) -> str:
    """``text`` without any credential the request carried (header or JWT cookie)."""
    from graphql_jwt.settings import jwt_settings

    secrets = request.META.get(jwt_settings.JWT_AUTH_HEADER_NAME, "").split()
    cookie = request.COOKIES.get(jwt_settings.JWT_COOKIE_NAME)
    if cookie:
        secrets.append(cookie)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text


def jwt_credentials(request: HttpRequest) -> str | None:
    """The django-graphql-jwt token of ``request``: header first, then cookie.

    Follows graphql_jwt's ``JWT_AUTH_HEADER_NAME``, ``JWT_AUTH_HEADER_PREFIX``
    and ``JWT_COOKIE_NAME``. A header that starts with the prefix but is not
    exactly ``<prefix> <token>`` is a bad credential, not an absent one.
    """
    from graphql_jwt.settings import jwt_settings

    header = request.META.get(jwt_settings.JWT_AUTH_HEADER_NAME, "")
    parts = header.split()
    prefix = jwt_settings.JWT_AUTH_HEADER_PREFIX.lower()
    if parts and parts[0].lower() == prefix:
        if len(parts) != 2:
            raise AuthenticationFailed(code=TOKEN_INVALID)
        token: str | None = parts[1]
    else:
        token = request.COOKIES.get(jwt_settings.JWT_COOKIE_NAME) or None
    if token is not None and len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationFailed(code=TOKEN_INVALID)
    return token


def jwt_authenticator(request: HttpRequest) -> Any:
    """The default ``AUTHENTICATOR``: django-graphql-jwt tokens.

    Raises graphql_jwt's ``JSONWebTokenExpired`` / ``JSONWebTokenError`` (an
    inactive user included, as graphql_jwt does), and ``AuthenticationFailed``
    for a well-signed token whose user no longer exists.
    """
    from graphql_jwt.shortcuts import get_user_by_token

    token = jwt_credentials(request)
    if token is None:
        return None
    user = get_user_by_token(token, request)
    if user is None:
        raise AuthenticationFailed(code=TOKEN_INVALID)
    return user
