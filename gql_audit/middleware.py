"""``AuditContextMiddleware``: request id, client address and early authentication."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser

from gql_audit import context
from gql_audit.access import registered_models
from gql_audit.auth import authenticate, scrub_credentials
from gql_audit.conf import conf
from gql_audit.events import record_event
from gql_audit.mtls import client_identity, read_client_certificate
from gql_audit.net import client_address, request_id
from gql_audit.storage import flush

request_logger = logging.getLogger("gql_audit.request")

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from django.http import HttpRequest, HttpResponseBase


def begin(request: HttpRequest) -> context.RequestContext:
    """Build the request's context (no I/O, so it is shared by both call paths)."""
    ctx = context.RequestContext(
        request_id=request_id(request),
        request=request,
        remote_addr=client_address(request),
        started=time.perf_counter(),
    )
    if conf.ACCESS_LOG:
        ctx.accessed = {}
        ctx.audited = registered_models()
    return ctx


def read_certificate(request: HttpRequest, ctx: context.RequestContext) -> None:
    """``request.client_cert``: recorded events need the bound context, hence apart from begin()."""
    cert = read_client_certificate(request)
    request.client_cert = ctx.client_cert = cert  # type: ignore[attr-defined]
    ctx.client_identity = client_identity(cert)


def authenticate_request(request: HttpRequest, ctx: context.RequestContext) -> None:
    """Run the ``AUTHENTICATOR`` once and keep, never raise, its failure."""
    authenticator = conf.AUTHENTICATOR
    if authenticator is None:
        return
    user, error = authenticate(request, authenticator)
    if error is not None:
        ctx.auth_error = error
        record_event(
            error.event_kind,
            message=error.message,
            details={"reason": scrub_credentials(request, error.reason), "code": error.code},
        )
        # A bad token must not fall back to a session identity.
        request.user = AnonymousUser()
    elif user is not None:
        request.user = user
    else:
        return
    # Credentials were handled here: graphql_jwt's backend, if its Graphene
    # middleware is also installed, must not read them again (and raise).
    request._jwt_token_auth = True  # type: ignore[attr-defined]


def finish(response: HttpResponseBase, ctx: context.RequestContext) -> HttpResponseBase:
    """Write what the request recorded (outside the view's transaction), echo the id."""
    response = flush(ctx, response)
    response[conf.REQUEST_ID_HEADER] = ctx.request_id
    if (
        conf.REQUEST_LOG
        and (ctx.operation is not None or ctx.error_codes)
        and request_logger.isEnabledFor(logging.INFO)
    ):
        log_request(ctx, response)
    return response


def log_request(ctx: context.RequestContext, response: HttpResponseBase) -> None:
    """One ``gql_audit.request`` line per GraphQL operation."""
    from gql_audit.storage import log_payload

    cert = ctx.client_cert
    log_payload(
        request_logger,
        logging.INFO,
        {
            "event": "graphql_request",
            "request_id": ctx.request_id,
            "operation": ctx.operation,
            "variables": ctx.redacted_variables(),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "error_codes": sorted(ctx.error_codes),
            "objects_accessed": ctx.objects_accessed,
            "actor_id": ctx.actor()[0],
            "remote_addr": ctx.remote_addr,
            "client_cert_fingerprint": cert.fingerprint_sha256 if cert is not None else None,
            "db_retries": ctx.db_retries,
        },
    )


class AuditContextMiddleware:
    """Binds the audit context for the request and authenticates before the view.

    Use it instead of auditlog's ``AuditlogMiddleware`` and after Django's
    ``AuthenticationMiddleware``. Sync and async capable.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        ctx = begin(request)
        token = context.bind(ctx)
        try:
            read_certificate(request, ctx)
            authenticate_request(request, ctx)
            response = finish(self.get_response(request), ctx)  # type: ignore[arg-type]
        finally:
            context.reset(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        ctx = begin(request)
        token = context.bind(ctx)
        try:
            read_certificate(request, ctx)
            await sync_to_async(authenticate_request, thread_sensitive=True)(request, ctx)
            response = await self.get_response(request)  # type: ignore[misc]
            response = await sync_to_async(finish, thread_sensitive=True)(response, ctx)
        finally:
            context.reset(token)
        return response
