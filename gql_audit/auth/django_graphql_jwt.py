"""django-graphql-jwt, an optional extra (``pip install "gql-audit[graphql-jwt]"``).

Every module that meets one of its names asks here, so that without the package
gql_audit still imports, runs its checks and authenticates with another
``AUTHENTICATOR`` (such as :func:`gql_audit.auth.bearer_authenticator`): without
it no graphql_jwt token, error or login mutation can exist, and each answer says so.
"""

from __future__ import annotations

import functools
from importlib.util import find_spec
from typing import Any, NamedTuple

#: What ``pip`` calls the package; the extra that installs it.
DISTRIBUTION = "django-graphql-jwt"
EXTRA = "graphql-jwt"


class Names(NamedTuple):
    #: ``graphql_jwt.settings.jwt_settings`` (it follows ``GRAPHQL_JWT`` itself).
    settings: Any
    #: ``JSONWebTokenError``: its messages are meant for the client.
    error: type[Exception]
    expired: type[Exception]
    permission_denied: type[Exception]
    #: The base of ``ObtainJSONWebToken`` and its relay twin: a login mutation.
    login_mixin: type


@functools.cache
def names() -> Names | None:
    """graphql_jwt's names gql_audit uses, or None when it is not installed.

    Imported on first use: graphql_jwt reads Django's settings when imported.
    """
    if find_spec("graphql_jwt") is None:
        return None
    from graphql_jwt.exceptions import JSONWebTokenError, JSONWebTokenExpired, PermissionDenied
    from graphql_jwt.mixins import ObtainJSONWebTokenMixin
    from graphql_jwt.settings import jwt_settings

    return Names(jwt_settings, JSONWebTokenError, JSONWebTokenExpired, PermissionDenied, ObtainJSONWebTokenMixin)


def installed() -> bool:
    return names() is not None


def error_types() -> tuple[type[Exception], ...]:
    found = names()
    return (found.error,) if found is not None else ()


def expired_types() -> tuple[type[Exception], ...]:
    found = names()
    return (found.expired,) if found is not None else ()


def permission_denied_types() -> tuple[type[Exception], ...]:
    found = names()
    return (found.permission_denied,) if found is not None else ()


def is_login_mutation(graphene_type: Any) -> bool:
    """Whether ``graphene_type`` is graphql_jwt's ``ObtainJSONWebToken`` (or a subclass)."""
    found = names()
    return found is not None and isinstance(graphene_type, type) and issubclass(graphene_type, found.login_mixin)


def missing_message() -> str:
    return f"{DISTRIBUTION} is not installed: install it with the extra, pip install 'gql-audit[{EXTRA}]'."
