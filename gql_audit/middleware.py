"""``AuditContextMiddleware``: request id, client address and early authentication.

Before the view it binds the request's context, reads the client certificate
and authenticates (user code and the database may be involved: under ASGI this
runs in a thread, where the ORM is allowed). After the view it writes what the
request recorded, outside the view's transaction, and decides what the client
is told when the request itself was malformed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import JsonResponse

from gql_audit import context, metrics
from gql_audit.access import registered_models
from gql_audit.auth import authenticate, refuse_cookie_without_csrf
from gql_audit.compat import mark_jwt_credentials_handled, set_session_user_cache
from gql_audit.conf import conf
from gql_audit.errors import AUDIT_UNAVAILABLE, BAD_REQUEST, INTERNAL_ERROR, MESSAGES, sqlstate_of
from gql_audit.events import record_event
from gql_audit.logging import log_aborted, log_request, remember_answered
from gql_audit.mtls import client_identity, read_client_certificate
from gql_audit.net import client_address, client_port, is_trusted, parse_ip, request_ids
from gql_audit.params import FORM_TYPES, content_type
from gql_audit.protect import admission, failures
from gql_audit.protect.refusal import Refused, respond
from gql_audit.store import flush
from gql_audit.tracing import trace_ids

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger("gql_audit.middleware")

#: GraphQL errors of a request that never reached a resolver: at most this many kept.
MAX_REPORTED_ERRORS = 5
#: graphql-core's suggestions name fields and types: "... Did you mean 'documents'?"
_SUGGESTION = re.compile(r"\s*Did you mean\b.*\?\s*$", re.DOTALL)
#: Bodies graphene-django parses; a failure to parse one is the client's.
_GRAPHQL_BODIES = frozenset({"application/json", "application/graphql", *FORM_TYPES})


def begin(request: HttpRequest) -> context.RequestContext:
    """Build the request's context (no I/O, so it is shared by both call paths)."""
    # The socket peer, parsed and judged once: every forwarded header depends on it.
    peer = parse_ip(request.META.get("REMOTE_ADDR"))
    trusted = is_trusted(peer)
    request_id, client_request_id = request_ids(request, trusted)
    ctx = context.RequestContext(
        request_id=request_id,
        client_request_id=client_request_id,
        request=request,
        remote_addr=client_address(request, peer),
        remote_port=client_port(request, trusted),
        started=time.perf_counter(),
        trace=trace_ids(),
    )
    if conf.ACCESS_LOG:
        ctx.accessed = {}
        ctx.audited = registered_models()
        ctx.keep_objects = conf.ACCESS_STORE == "auditlog" or conf.EVENT_SINK != "database"
    ctx.failed_databases = _failed_databases()
    setattr(request, context.REQUEST_ATTRIBUTE, ctx)
    return ctx


def _failed_databases() -> frozenset[str]:
    """Connections that saw a database error (Django's ``errors_occurred``, reset when a
    connection is checked at the start of a request)."""
    from django.db import connections

    return frozenset(c.alias for c in connections.all(initialized_only=True) if c.errors_occurred)


def prepare(request: HttpRequest, ctx: context.RequestContext) -> HttpResponseBase | None:
    """Everything before the view that may run user code or query the database;
    a response when the request is refused before it authenticates."""
    read_certificate(request, ctx)
    if conf.THROTTLE:
        refusal = failures.check_address(ctx)
        if refusal is not None:
            return respond(ctx, refusal)
    reason = refuse_cookie_without_csrf(request)
    if reason is not None:
        record_event(
            "forbidden",
            message="token cookie ignored: the request failed the CSRF check",
            details={"rule": "csrf", "reason": reason},
        )
    authenticate_request(request, ctx)
    return None


def read_certificate(request: HttpRequest, ctx: context.RequestContext) -> None:
    """``request.client_cert`` and the identity ``CLIENT_CERT_IDENTITY`` maps it to."""
    cert = read_client_certificate(request, record_event)
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
            sqlstate=error.sqlstate,
            details={"rule": "AUTHENTICATOR", "reason": error.reason, "code": error.code},
            once=True,
        )
        # A bad token must not fall back to a session identity.
        user = AnonymousUser()
    elif user is None:
        return
    ctx.authenticated_by_token = True
    request.user = user
    # graphql_jwt's middleware, if kept, asks Django for the session user on
    # every field (JWT_ALLOW_ARGUMENT) and must get this one; and its backend
    # must not read the credentials handled here again (and raise).
    set_session_user_cache(request, user)
    mark_jwt_credentials_handled(request)


def finish(response: HttpResponseBase, ctx: context.RequestContext) -> HttpResponseBase:
    """Write what the request recorded (outside the view's transaction), echo the id."""
    if response.status_code in (400, 405) and not isinstance(response, Refused):
        response = inspect_rejected(ctx, response)
    if conf.THROTTLE:
        failures.count_failures(ctx)
    if conf.WRITE_AFTER_RESPONSE:
        response[conf.REQUEST_ID_HEADER] = ctx.request_id
        write_when_closed(response, ctx)
        count_request(ctx, response.status_code)
        return response
    if not flush(ctx) and conf.FAIL_CLOSED:
        response = JsonResponse(
            {"errors": [{"message": MESSAGES[AUDIT_UNAVAILABLE], "extensions": {"code": AUDIT_UNAVAILABLE}}]},
            status=503,
        )
    response[conf.REQUEST_ID_HEADER] = ctx.request_id
    log_request(ctx, response.status_code)
    count_request(ctx, response.status_code)
    return response


def count_request(ctx: context.RequestContext, status: int) -> None:
    """``METRICS``: a GraphQL request answered (as ``log_request`` has it: one that named an operation
    or failed as one)."""
    if conf.METRICS and (ctx.operation is not None or ctx.error_codes):
        metrics.request_done(ctx.operation, ctx.error_codes, status)


def write_when_closed(response: HttpResponseBase, ctx: context.RequestContext) -> None:
    """``WRITE_AFTER_RESPONSE``: write when the server closes the response, which
    WSGI servers and Django's ASGI handler do once the client has all of it."""
    close = response.close
    ctx.writes_on_close = True

    def write_then_close() -> None:
        token = context.bind(ctx)
        try:
            flush(ctx)
            log_request(ctx, response.status_code)
        except Exception:  # noqa: BLE001 - the client is gone; the log is the last place to tell
            logger.exception("writing the request's records after the response failed")
        finally:
            ctx.writes_on_close = False
            context.reset(token)
            close()

    response.close = write_then_close  # type: ignore[method-assign]


def inspect_rejected(ctx: context.RequestContext, response: HttpResponseBase) -> HttpResponseBase:
    """A 400 with GraphQL errors (syntax, validation, variables): no resolver saw it.

    Recorded as a ``graphql_error`` of severity ``warning`` (the client's own
    mistake); with ``INTROSPECTION`` other than ``"public"`` the schema-revealing
    "Did you mean ...?" suggestions are cut from the messages the client gets.
    """
    if getattr(response, "streaming", False) or (response.status_code == 405 and not ctx.graphql_view):
        return response
    if not response.get("Content-Type", "").startswith("application/json"):
        # Refused before any GraphQL was read (Django's own 400 page): still on record.
        if ctx.request is not None and content_type(ctx.request) in _GRAPHQL_BODIES:
            ctx.error_codes.add(BAD_REQUEST)
            record_event(
                "graphql_error",
                message="request refused before it was read",
                details={"status": 400},
                severity="warning",
            )
        return response
    try:
        body = json.loads(response.content)  # type: ignore[attr-defined]
        errors = body.get("errors") if isinstance(body, dict) else None
    except (ValueError, RecursionError):
        return response
    if not isinstance(errors, list) or not errors:
        return response
    changed = ctx.graphql_view and mask_unlocated(ctx, errors)
    messages = [str(e.get("message", "")) if isinstance(e, dict) else str(e) for e in errors]
    first = errors[0] if isinstance(errors[0], dict) else {}
    code = (first.get("extensions") or {}).get("code") if isinstance(first.get("extensions"), dict) else None
    ctx.error_codes.add(str(code) if code else "GRAPHQL_VALIDATION_FAILED")
    if code != INTERNAL_ERROR:  # a masked error is recorded as what it was
        record_event(
            "graphql_error",
            message=messages[0],
            details={
                "status": response.status_code,
                "errors": messages[:MAX_REPORTED_ERRORS],
                "errors_total": len(messages),
            },
            severity="warning",
        )
    if conf.INTROSPECTION == "public" and not changed:
        return response
    for error in errors if conf.INTROSPECTION != "public" else ():
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            cut = _SUGGESTION.sub("", error["message"])
            if cut != error["message"]:
                error["message"] = cut
                changed = True
    if changed:
        response.content = json.dumps(body, separators=(",", ":"))  # type: ignore[attr-defined]
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
    return response


#: What graphene-django's view says on purpose about a request it refuses (its ``HttpError``
#: texts): anything else without a location or a path is an exception's own text.
_VIEW_MESSAGES = re.compile(
    r"GraphQL only supports GET and POST requests\.|Must provide query string\.|Variables are invalid JSON\."
    r"|POST body sent invalid JSON\.|Batch requests should receive a list|Received an empty list in the batch"
    r"|The received data is not a valid JSON query\.|Can only perform a \w+ operation from a POST request\."
)


def mask_unlocated(ctx: context.RequestContext, errors: list[Any]) -> bool:
    """Mask, under ``MASK_ERRORS``, the errors an exception raised outside every resolver
    (opening the connection or the transaction of a mutation, committing it): graphene-django
    answers them with the exception's own text, which for a database names hosts and ports.
    Whether the database failed in this request is what Django's connections say
    (``errors_occurred``). Whether anything was masked."""
    mode = conf.MASK_ERRORS
    if mode == "none":
        return False
    database = bool(_failed_databases() - ctx.failed_databases) or ctx.unlocated_sqlstate is not None
    changed = False
    for index, error in enumerate(errors):
        if not isinstance(error, dict) or set(error) != {"message"} or not isinstance(error["message"], str):
            continue
        if not database and (mode != "all" or _VIEW_MESSAGES.match(error["message"])):
            continue
        record_event(
            "db_error" if database else "graphql_error",
            message="a database error outside any resolver (its text withheld: it names hosts)"
            if database
            else error["message"],
            sqlstate=(ctx.unlocated_sqlstate or "") if database else "",
            details={"outside": "resolvers"},
        )
        errors[index] = {
            "message": f"{MESSAGES[INTERNAL_ERROR]} Request id: {ctx.request_id}",
            "extensions": {"code": INTERNAL_ERROR, "request_id": ctx.request_id},
        }
        changed = True
    return changed


def note_view_error(error: BaseException) -> None:
    """graphene-django's view answers ``error`` with its text (see
    :func:`gql_audit.compat.observe_view_errors`): a database's is masked as one."""
    from django.db import DatabaseError

    ctx = context.current()
    if ctx is not None and isinstance(error, DatabaseError):
        ctx.unlocated_sqlstate = sqlstate_of(error)


#: Methods of graphene-django's ``GraphQLView`` that decide which schema a request executes.
_SCHEMA_METHODS = ("dispatch", "get_response", "execute_graphql_request", "get_middleware")


def view_schema(view_func: Any) -> Any:
    """The ``graphql.GraphQLSchema`` ``view_func`` will execute, or None when that cannot be known.

    Known only for graphene-django's ``GraphQLView`` (and subclasses that keep the methods
    choosing the schema): the view is built as Django's ``as_view()`` will build it, from
    ``view_class`` and ``view_initkwargs`` (also through decorators such as ``csrf_exempt``,
    which copy them), and its ``schema`` is the answer.
    """
    view_class = getattr(view_func, "view_class", None)
    if not isinstance(view_class, type):
        return None
    from graphene_django.views import GraphQLView

    if not issubclass(view_class, GraphQLView):
        return None
    if any(getattr(view_class, name) is not getattr(GraphQLView, name) for name in _SCHEMA_METHODS):
        return None
    try:
        view = view_class(**getattr(view_func, "view_initkwargs", {}))
        return view.schema.graphql_schema
    except Exception:  # noqa: BLE001 - the view will raise it itself, with its own words
        return None


def bad_body(request: HttpRequest, exc: Exception) -> JsonResponse | None:
    """The 400 for a body the view could not parse (nested past Python's stack, not
    UTF-8, a form Django refuses), or None for any other failure of the view."""
    from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
    from django.http.multipartparser import MultiPartParserError

    if content_type(request) not in _GRAPHQL_BODIES:
        return None
    if isinstance(exc, RecursionError):
        reason = "nested too deeply"
    elif isinstance(exc, UnicodeDecodeError):
        reason = "not valid UTF-8"
    elif isinstance(exc, (TooManyFieldsSent, RequestDataTooBig)):
        reason = "too many fields or too large"
    elif isinstance(exc, (MultiPartParserError, SuspiciousOperation)):
        reason = "not a well-formed form"
    else:
        return None
    # Recorded by inspect_rejected() on the way out, like every other 400.
    message = f"The request body could not be read: {reason}."
    return JsonResponse({"errors": [{"message": message, "extensions": {"code": BAD_REQUEST}}]}, status=400)


class Aborted(JsonResponse):
    """The 500 of a request whose worker is being killed: it carries the request id, then the
    ``SystemExit`` goes on once the server has sent it (the worker still exits)."""

    def __init__(self, ctx: context.RequestContext, exit: SystemExit) -> None:
        body = {
            "errors": [
                {
                    "message": f"{MESSAGES[INTERNAL_ERROR]} Request id: {ctx.request_id}",
                    "extensions": {"code": INTERNAL_ERROR, "request_id": ctx.request_id},
                }
            ]
        }
        super().__init__(body, status=500)
        self[conf.REQUEST_ID_HEADER] = ctx.request_id
        self.exit = exit

    def __iter__(self) -> Any:
        yield from super().__iter__()
        raise self.exit


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
            response = prepare(request, ctx)
            if response is None:
                response = self.get_response(request)  # type: ignore[assignment]
            response = finish(response, ctx)  # type: ignore[arg-type]
        except SystemExit as exc:
            # A worker timeout (gunicorn's SIGABRT): the request dies here, and leaves its trace
            # in the log on the way, and its id on the 500 the client gets.
            log_aborted(ctx, type(exc).__name__)
            return Aborted(ctx, exc)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt
                log_aborted(ctx, type(exc).__name__)
            raise
        finally:
            remember_answered(ctx.request_id, request)
            context.reset(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        ctx = begin(request)
        token = context.bind(ctx)
        try:
            response = await sync_to_async(prepare, thread_sensitive=True)(request, ctx)
            if response is None:
                response = await self.get_response(request)  # type: ignore[misc]
            response = await sync_to_async(finish, thread_sensitive=True)(response, ctx)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # CancelledError: the client went away, or shutdown
                log_aborted(ctx, type(exc).__name__)
            raise
        finally:
            context.reset(token)
        return response

    def process_view(self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any) -> Refused | None:
        """Learn the schema the view will execute (its fields are then instrumented), then
        check limits, the allow-list and the login throttle, once the view is known to be a
        GraphQL one."""
        ctx = context.current()
        if ctx is None:
            return None
        if conf.INSTRUMENT_SCHEMA:
            ctx.view_schema = view_schema(view_func)
        return admission.admit(request, ctx, view_func)

    def process_exception(self, request: HttpRequest, exception: Exception) -> JsonResponse | None:
        return bad_body(request, exception)
