"""Authenticators and the classification of their failures.

An authenticator is ``callable(request) -> user | None``: None means "no
credentials"; raising means "credentials were presented and are bad". The
middleware never lets that exception escape: it becomes an :class:`AuthError`
kept on the request context and reported only on private fields.

Two authenticators ship: :func:`jwt_authenticator` (the default) reads
django-graphql-jwt's tokens, an optional extra (:mod:`.django_graphql_jwt`);
:func:`bearer_authenticator` verifies ``Authorization: Bearer`` tokens with PyJWT
(:mod:`.bearer`), such as those of an OpenID Connect provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jwt import ExpiredSignatureError

from gql_audit.auth import django_graphql_jwt
from gql_audit.auth.base import MAX_TOKEN_LENGTH, AuthenticationFailed, AuthUnavailable, TokenExpired
from gql_audit.auth.bearer import bearer_authenticator
from gql_audit.conf import conf
from gql_audit.errors import AUTH_UNAVAILABLE, MESSAGES, TOKEN_EXPIRED, TOKEN_INVALID, describe_database_error

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "AuthError",
    "AuthUnavailable",
    "AuthenticationFailed",
    "TokenExpired",
    "authenticate",
    "bearer_authenticator",
    "jwt_authenticator",
]

logger = logging.getLogger("gql_audit.auth")


@dataclass(frozen=True)
class AuthError:
    """A deferred authentication failure.

    ``message`` is safe to show to the client; ``reason`` is for operators
    (exception type and text, never the credential itself).
    """

    code: str
    message: str
    reason: str
    #: The database's SQLSTATE when a database failure kept the authenticator from deciding.
    sqlstate: str = ""

    @property
    def event_kind(self) -> str:
        """The ``SecurityEvent`` kind this failure is recorded as."""
        if self.code == AUTH_UNAVAILABLE:
            return "db_error"
        return "token_expired" if self.code == TOKEN_EXPIRED else "token_invalid"


def dependency_failure(exc: BaseException) -> BaseException | None:
    """The database or network error behind ``exc`` (itself or what caused it), if any."""
    from django.db import Error as DatabaseError

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (DatabaseError, OSError, AuthUnavailable)):
            return current
        # Only what the exception says it was raised from: an error merely handled
        # nearby (``__context__``) did not keep the authenticator from deciding.
        current = current.__cause__
        seen += 1
    return None


def describe_dependency_failure(exc: BaseException) -> tuple[str, str]:
    """``(reason, sqlstate)`` for an operator, without hosts, ports or credentials
    (see :func:`gql_audit.errors.describe_database_error`)."""
    if isinstance(exc, AuthUnavailable):
        return f"{type(exc).__name__}: {exc}"[:500], ""
    return describe_database_error(exc)


def classify(exc: BaseException) -> AuthError:
    failure = dependency_failure(exc)
    if failure is not None:
        reason, sqlstate = describe_dependency_failure(failure)
        return AuthError(AUTH_UNAVAILABLE, MESSAGES[AUTH_UNAVAILABLE], reason, sqlstate)
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, AuthenticationFailed):
        return AuthError(exc.code, exc.client_message, reason)
    if isinstance(exc, (ExpiredSignatureError, *django_graphql_jwt.expired_types())):
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


def jwt_header(request: HttpRequest, jwt_settings: Any) -> list[str] | None:
    """The words of graphql_jwt's header when it carries a token (well formed or not).

    Its scheme is ``JWT_AUTH_HEADER_PREFIX``; while ``GRAPHQL_JWT`` does not set
    one, ``Bearer`` (RFC 6750's, which most HTTP clients send) is read too:
    graphql_jwt's default ``JWT`` alone made a valid token sent as ``Bearer``
    look like no token at all. A prefix set on purpose is followed exactly.
    """
    header: str = request.META.get(jwt_settings.JWT_AUTH_HEADER_NAME, "")
    parts = header.split()
    if not parts:
        return None
    scheme = parts[0].lower()
    if scheme == jwt_settings.JWT_AUTH_HEADER_PREFIX.lower() or (scheme == "bearer" and _bearer_read_too()):
        return parts
    return None


def _bearer_read_too() -> bool:
    def build() -> bool:
        from django.conf import settings

        return "JWT_AUTH_HEADER_PREFIX" not in (getattr(settings, "GRAPHQL_JWT", None) or {})

    read: bool = conf.derived("jwt_bearer_alias", build)
    return read


def header_token_present(request: HttpRequest) -> bool:
    """Whether the request carries a token in graphql_jwt's header (well formed or not)."""
    found = django_graphql_jwt.names()
    return found is not None and jwt_header(request, found.settings) is not None


def refuse_cookie_without_csrf(request: HttpRequest) -> str | None:
    """Drop graphql_jwt's token cookie from a request that fails Django's CSRF check.

    A browser attaches cookies to a cross-site form POST, so a cookie-borne
    token proves nothing about who sent the request unless the CSRF check
    passes, whether or not the view is ``csrf_exempt`` (DRF treats session
    authentication the same way), nor on any request the browser marks as
    started by another site (``Sec-Fetch-Site: cross-site``: a link or a form
    GET from elsewhere passes the CSRF check). A token in the header needs no
    such check: a cross-site page cannot set it. Returns the reason when the
    cookie was dropped, else None. Without django-graphql-jwt there is no such cookie.
    """
    found = django_graphql_jwt.names()
    if found is None:
        return None
    name = found.settings.JWT_COOKIE_NAME
    if name not in request.COOKIES or header_token_present(request):
        return None
    reason = cookie_csrf_failure(request)
    if reason is None:
        return None
    del request.COOKIES[name]
    return reason


def cookie_csrf_failure(request: HttpRequest) -> str | None:
    """Why a cookie of ``request`` proves nothing about who sent it, or None.

    It fails Django's CSRF check, or the browser marked it as started by another
    site (``Sec-Fetch-Site: cross-site``: a link or a form GET from elsewhere
    passes the CSRF check).
    """
    from gql_audit.compat import csrf_failure_reason

    if request.META.get("HTTP_SEC_FETCH_SITE") == "cross-site":
        return "the browser marked the request cross-site (Sec-Fetch-Site)"
    return csrf_failure_reason(request)


def jwt_credentials(request: HttpRequest) -> str | None:
    """The django-graphql-jwt token of ``request``: header first, then cookie.

    Follows graphql_jwt's ``JWT_AUTH_HEADER_NAME``, ``JWT_AUTH_HEADER_PREFIX``
    (and ``Bearer``, see :func:`jwt_header`) and ``JWT_COOKIE_NAME``. A header
    that starts with the prefix but is not exactly ``<prefix> <token>`` is a bad
    credential, not an absent one.
    """
    found = django_graphql_jwt.names()
    if found is None:
        raise AuthUnavailable(django_graphql_jwt.missing_message())
    jwt_settings = found.settings
    parts = jwt_header(request, jwt_settings)
    if parts is not None:
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
    for a well-signed token whose user no longer exists. Needs the
    ``graphql-jwt`` extra: without it, raises :class:`AuthUnavailable` (and
    check ``gql_audit.E054`` says so at start-up).
    """
    token = jwt_credentials(request)
    from graphql_jwt.shortcuts import get_user_by_token

    if token is None:
        return None
    user = get_user_by_token(token, request)
    if user is None:
        raise AuthenticationFailed(code=TOKEN_INVALID)
    return user
