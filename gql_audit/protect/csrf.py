"""A Django session cookie authenticates a GraphQL request only when the request passes
Django's CSRF check, whether or not the view is ``csrf_exempt``.

A browser attaches the session cookie to a form another site posts, and
GraphQL views are usually exempt from Django's CSRF middleware (their clients
send tokens in a header). As DRF's ``SessionAuthentication`` does, a request
that authenticated by its session alone and fails the check runs as anonymous,
and a ``forbidden`` event (rule ``csrf``) says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser

from gql_audit.auth import cookie_csrf_failure
from gql_audit.compat import set_session_user_cache
from gql_audit.events import record_event

if TYPE_CHECKING:
    from django.http import HttpRequest

    from gql_audit import context


def check_session(request: HttpRequest, ctx: context.RequestContext) -> None:
    """Drop the session's user from a GraphQL request that fails the CSRF check."""
    from django.conf import settings

    if ctx.authenticated_by_token or settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return
    reason = cookie_csrf_failure(request)
    if reason is None:
        return
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return
    request.user = AnonymousUser()
    # graphql_jwt's middleware, if kept, asks Django for the session user on every field.
    set_session_user_cache(request, request.user)
    record_event(
        "forbidden",
        message="session cookie ignored: the request failed the CSRF check",
        details={"rule": "csrf", "reason": reason, "cookie": "session"},
    )
