"""The per-request audit context, carried in a ``contextvars.ContextVar``.

``AuditContextMiddleware`` binds a :class:`RequestContext` when a request
starts and resets it when the response is returned, so the context follows the
request across threads handed work by asgiref and never leaks between asyncio
tasks (which is what ``threading.local`` does).
"""

from __future__ import annotations

import contextvars
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gql_audit.dbcontext import connection_context
from gql_audit.net import parse_ip, valid_port
from gql_audit.params import graphql_params
from gql_audit.redaction import (
    Scrubber,
    is_secret_key,
    operation_secrets,
    redact_variables,
    safe_data,
    safe_text,
    secret_leaves,
    string_literals,
)
from gql_audit.tracing import annotate_operation

if TYPE_CHECKING:
    from django.http import HttpRequest

    from gql_audit.access import AccessRecord
    from gql_audit.auth import AuthError


#: Attribute of the ``HttpRequest`` holding its context, for what runs after the
#: middleware returned (Django's own request log line).
REQUEST_ATTRIBUTE = "gql_audit_context"

#: ``LogEntry.actor_email`` is a CharField(max_length=254).
EMAIL_MAX_LENGTH = 254


@dataclass(eq=False)
class RequestContext:
    """What gql_audit knows about the request being handled."""

    request_id: str
    request: HttpRequest | None = None
    #: A well-formed request id sent by a peer not in ``TRUSTED_PROXIES``: kept, never used as the id.
    client_request_id: str | None = None
    remote_addr: str | None = None
    #: The client's port: ``X-Forwarded-Port`` from a trusted proxy, else the socket's (auditlog's ``remote_port``).
    remote_port: int | None = None
    #: The deferred authentication failure, if the authenticator raised.
    auth_error: AuthError | None = None
    #: ``{"type": ..., "name": ..., "hash": ...}`` of the GraphQL operation.
    operation: dict[str, Any] | None = None
    #: Response key of the root field being resolved, e.g. ``["updateDocument"]``.
    path: list[str | int] | None = None
    #: Primary keys of users deleted during this request: never set as actor.
    deleted_actor_pks: set[Any] = field(default_factory=set)
    #: Objects exposed so far, by identity; None when ``ACCESS_LOG`` is off.
    accessed: dict[int, AccessRecord] | None = None
    #: Whether records hold the model instances they were made from until they are
    #: written (auditlog's store and log lines name an object by its ``__str__``);
    #: otherwise an instance is freed as soon as the response no longer needs it.
    keep_objects: bool = True
    #: Models registered with auditlog: objects of these are access-logged.
    audited: frozenset[type[Any]] = frozenset()
    #: The client certificate the proxy forwarded (``gql_audit.mtls.ClientCertificate``).
    client_cert: Any = None
    #: ``CLIENT_CERT_IDENTITY`` of a verified certificate: the service acting.
    client_identity: str | None = None
    #: ``time.perf_counter()`` when the request entered the middleware.
    started: float = 0.0
    #: The operation's variables as received (set by the first root field);
    #: redact with ``redacted_variables()`` before writing them anywhere.
    variables: Any = None
    #: ``extensions.code`` (or failure kind) of every error of the operation.
    error_codes: set[str] = field(default_factory=set)
    #: Objects the response exposed, counted when they are written.
    objects_accessed: int = 0
    #: Transactions retried by ``run_in_transaction`` during this request.
    db_retries: int = 0
    #: Field names selected per (object type, field nodes): computed once a list.
    selections: dict[tuple[Any, ...], frozenset[str]] = field(default_factory=dict)
    #: Security events recorded so far, written after the view.
    events: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    #: Set once the request's ``request_aborted`` line is logged: never twice.
    aborted: bool = False
    #: Its records are written when the server closes the response (``WRITE_AFTER_RESPONSE``):
    #: it stays among the requests in flight until then.
    writes_on_close: bool = False
    #: The ``graphql.GraphQLSchema`` the view will execute, when the middleware could tell
    #: (graphene-django's ``GraphQLView``): its fields can then be instrumented.
    view_schema: Any = None
    #: ``{"trace_id", "span_id"}`` of the OpenTelemetry span active when the request began.
    trace: dict[str, str] | None = None
    #: The user a Celery task acts for (``gql_audit.celery``): there is no request.
    acting_user: Any = None
    #: ``{"id", "name"}`` of the Celery task this context is bound for.
    task: dict[str, str] | None = None
    #: Primary keys of the change entries saved so far, sealed with the request's records.
    changes_to_seal: list[Any] = field(default_factory=list)
    #: Set by ``AuditMiddleware`` when it works through the instrumented fields of
    #: ``view_schema`` instead of wrapping every field of the response.
    instrumented: bool = False
    #: Refused before the view ran (a limit, the allow-list, a throttle): no message echoes its document.
    refused: bool = False
    #: Hashes of the documents admission checked (``gql_audit.protect``); None when it did not
    #: run. A document executed outside this set is checked when its first root field resolves.
    admitted: set[str] | None = None
    #: What that late check refused (every root field of the operation gets it).
    refusal: Any = None
    #: Database aliases whose connection had already failed when the request began.
    failed_databases: frozenset[str] = frozenset()
    #: SQLSTATE of a database error the view answered outside every resolver (its COMMIT).
    unlocated_sqlstate: str | None = None
    #: The view executes GraphQL (its request was admitted by ``gql_audit.protect``).
    graphql_view: bool = False
    #: ``AUTHENTICATOR`` decided who the request is (a user, or a bad token): a session
    #: cookie is then not who it is.
    authenticated_by_token: bool = False
    #: ``time.monotonic()`` past which this request no longer waits on the throttle cache.
    throttle_deadline: float | None = None
    #: The estimated cost (``QUERY_LIMITS["max_cost"]``) of each operation admitted, by
    #: ``(document hash, operation name)``; ``cost`` is the one of ``operation``.
    costs: dict[tuple[str, str | None], int] = field(default_factory=dict)
    cost: int | None = None
    _operation_node: Any = field(default=None, repr=False)
    #: The operation and the named fragments it may spread: where secret arguments are looked for.
    _document_nodes: tuple[Any, ...] = field(default=(), repr=False)
    #: ``operation_secrets()`` of the operation and its fragments: walked once.
    _operation_secrets: tuple[frozenset[str], list[Any]] | None = field(default=None, repr=False)
    _scrubber: Scrubber | None = field(default=None, repr=False)
    _cid: str | None = field(default=None, repr=False)
    _redacted_variables: Any = field(default=None, repr=False)

    def client_cert_summary(self) -> dict[str, Any] | None:
        """The certificate summary on records, with the mapped service identity."""
        if self.client_cert is None:
            return None
        summary: dict[str, Any] = {**self.client_cert.summary(), "identity": self.client_identity}
        return summary

    def redacted_variables(self) -> Any:
        """The operation's variables, redacted (computed once: every failing field reports them)."""
        if not self.variables:
            return self.variables
        if self._redacted_variables is None:
            self._redacted_variables = redact_variables(self.variables, self.secret_variables())
        return self._redacted_variables

    def secret_variables(self) -> frozenset[str]:
        """Variables of the current operation that feed secret arguments (computed once)."""
        return self._secrets_in_operation()[0]

    def _secrets_in_operation(self) -> tuple[frozenset[str], list[Any]]:
        if self._operation_secrets is None:
            self._operation_secrets = operation_secrets(self._document_nodes)
        return self._operation_secrets

    def scrubber(self) -> Scrubber:
        """Removes this request's secret values from text (built on first use, then kept).

        The secrets: credentials in headers whose names match ``REDACT_KEYS``
        (``Authorization``, ``Cookie``, ``X-Api-Key``...), every cookie value, and
        the values of variables and inline arguments that are secret by name, as
        the client sent them (a value of the wrong type is echoed by the error
        that rejects it, before any resolver runs).
        """
        if self._scrubber is None:
            try:
                secrets = self._secret_values()
            except Exception:  # noqa: BLE001 - a request no parser can read must not stop its records
                secrets = []
            self._scrubber = Scrubber(secrets)
        return self._scrubber

    def _secret_values(self) -> list[str]:
        request = self.request
        if request is None:
            return []
        values: list[str] = []
        for key, value in request.META.items():
            if key.startswith("HTTP_") and isinstance(value, str) and is_secret_key(key[5:]):
                values.append(value)
                values.extend(part for part in value.replace(";", " ").split() if len(part) >= 8)
        try:
            values.extend(str(v) for v in request.COOKIES.values() if v)
        except Exception:  # noqa: BLE001 - a cookie header Django cannot parse: kept whole above
            pass
        # A request refused before it ran echoes nothing of its body, which may be huge: not read.
        query, variables = graphql_params(request) if not self.refused else (None, None)
        if self._document_nodes:
            names, literals = self._secrets_in_operation()
        elif self.refused:  # nothing to find, and a refused document may be huge
            names, literals = frozenset(), []
        else:  # never executed (a 400): the document as sent, if it parses
            document = _parse_quietly(query) if isinstance(query, str) else None
            names, literals = operation_secrets(document) if document is not None else (frozenset(), [])
            if document is None and isinstance(query, str):
                # A syntax error quotes a token of its own choosing: every string of the text is a secret.
                literals = [*literals, *string_literals(query)]
        values.extend(secret_leaves(literals, secret=True))
        if isinstance(variables, dict):
            values.extend(secret_leaves(variables))
            values.extend(secret_leaves([variables[n] for n in names if n in variables], secret=True))
        return values

    def record_data(self, using: str, reader: Reader | None = None) -> dict[str, Any]:
        """The ``"gql_audit"`` object of a record written now on database ``using``
        (by ``reader``, when given: its actor and address, worked out once for its records).

        One picture of who and where for every kind of record; each adds its own
        fields (an ACCESS entry its ``fields``, an event its ``details``).
        """
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "operation": self.operation,
            "path": self.path,
            "remote_addr": self.entry_remote_addr() if reader is None else reader.remote_addr,
            "actor": self.actor_snapshot() if reader is None else reader.actor,
        }
        # Certificate names and usernames are the client's text: stored as safe data.
        safe: dict[str, Any] = safe_data(data)
        safe.update(self.record_context(using))
        return safe

    def record_context(self, using: str) -> dict[str, Any]:
        """What :meth:`record_data` says besides who, where and which operation: the
        certificate, the database, the client's own request id, the trace, the task."""
        data: dict[str, Any] = {
            "client_cert": self.client_cert_summary(),
            "db": connection_context(using, self.db_retries),
        }
        if self.client_request_id is not None:
            data["client_request_id"] = self.client_request_id
        if self.cost is not None:
            data["cost"] = self.cost
        if self.trace is not None:
            data.update(self.trace)
        if self.task is not None:
            data["task"] = self.task
        safe: dict[str, Any] = safe_data(data)
        return safe

    def correlation_id(self) -> str:
        """The ``cid`` of the request's auditlog entries, reads included: auditlog's
        ``AUDITLOG_CID_GETTER`` when the service set one (asked once), else the request id."""
        if self._cid is None:
            from django.conf import settings

            cid = None
            if getattr(settings, "AUDITLOG_CID_GETTER", None):
                from auditlog.cid import get_cid

                cid = get_cid()
            self._cid = safe_text(str(cid))[:255] if cid else self.request_id
        return self._cid

    def reader(self, block: dict[str, Any] | None = None) -> Reader:
        """Who read, for reads recorded now: the request's user, or what auditlog's
        ``set_actor`` / ``set_extra_data`` block in force (``block``) says instead."""
        user: Any = self.user
        if block and _is_user(block.get("actor")):
            user = block["actor"]
        actor_id, actor_email, snapshot = self._identify(user)
        reader = Reader(actor_id, actor_email, snapshot, self.entry_remote_addr(), self.remote_port, {})
        if not block:
            return reader
        for key, value in block.items():
            if key in ("actor", "signal_duid"):
                continue
            value = value() if callable(value) else value
            if key == "remote_addr":  # typed columns: a malformed value must not fail the write
                ip = parse_ip(str(value)) if value is not None else None
                reader.remote_addr = str(ip) if ip is not None else None
            elif key == "remote_port":
                reader.remote_port = valid_port(value)
            else:
                reader.extra[key] = value
        return reader

    def entry_remote_addr(self) -> str | None:
        """The client address for change entries and reads: none with auditlog's
        ``AUDITLOG_DISABLE_REMOTE_ADDR`` (security events keep theirs)."""
        from django.conf import settings

        return None if getattr(settings, "AUDITLOG_DISABLE_REMOTE_ADDR", False) else self.remote_addr

    def actor_snapshot(self) -> dict[str, Any] | None:
        """``{"id", "username"}`` of the request's authenticated user now, or None.

        Records carry it so they still name their actor once the user's row is
        gone (the foreign key is then NULL), whether or not the user had an email.
        """
        return self._identify(self.user)[2]

    @property
    def user(self) -> Any:
        """The request's user as it is now (not as it was when the request began)."""
        if self.request is None:
            return self.acting_user
        return getattr(self.request, "user", None)

    def actor(self) -> tuple[Any, str | None]:
        """``(pk, email)`` of the request's authenticated user now, or ``(None, None)``."""
        actor_id, email, _ = self._identify(self.user)
        return actor_id, email

    def _identify(self, user: Any) -> tuple[Any, str | None, dict[str, Any] | None]:
        """``(pk for the actor column, email, {"id", "username"} snapshot)`` of ``user``.

        Only authenticated users of the user model count (a record's actor is a
        foreign key to it). A user being deleted in this request keeps the email
        and the snapshot but not the pk: no record may point at the row going away.
        """
        if not _is_user(user):
            return None, None, None
        email = getattr(user, user.get_email_field_name(), None)
        pk = user.pk
        snapshot = {"id": pk, "username": str(user.get_username())}
        actor_id = None if pk in self.deleted_actor_pks else pk
        return actor_id, (str(email)[:EMAIL_MAX_LENGTH] if email else None), snapshot

    def set_operation(self, operation_node: Any, fragments: dict[str, Any] | None = None) -> None:
        """Record the GraphQL operation once per operation definition node
        (``fragments``: the document's named fragments, which may hold secret arguments)."""
        if operation_node is self._operation_node:
            return
        self._operation_node = operation_node
        self._document_nodes = (operation_node, *(fragments or {}).values())
        self._operation_secrets = None
        self._redacted_variables = None
        self._scrubber = None
        loc = getattr(operation_node, "loc", None)
        body = loc.source.body if loc is not None else ""
        name = operation_node.name.value if operation_node.name is not None else None
        self.operation = {
            "type": operation_node.operation.value,
            "name": name,
            "hash": hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest(),
        }
        if self.costs:
            self.cost = self.costs.get((self.operation["hash"], name))
        annotate_operation(self.operation)


@dataclass
class Reader:
    """Who read, as written on a read: actor, address, and auditlog block values."""

    actor_id: Any
    actor_email: str | None
    actor: dict[str, Any] | None
    remote_addr: str | None
    remote_port: int | None
    #: Other values of auditlog's ``set_extra_data`` block (auditlog sets those naming ``LogEntry`` fields).
    extra: dict[str, Any]


def _is_user(user: Any) -> bool:
    """An authenticated instance of the user model (a record's actor is a foreign key to it)."""
    from django.contrib.auth import get_user_model

    return user is not None and getattr(user, "is_authenticated", False) and isinstance(user, get_user_model())


def _parse_quietly(query: str) -> Any:
    """The document ``query``, or None when it does not parse."""
    from graphql import parse

    try:
        return parse(query, no_location=True)
    except Exception:  # noqa: BLE001 - RecursionError too: a client's malformed document
        return None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "gql_audit_request_context", default=None
)


def current() -> RequestContext | None:
    """The context of the request being handled, or None outside a request."""
    return _current.get()


#: Contexts bound and not yet reset, by id: what a dying worker still owes the log.
_in_flight: dict[int, RequestContext] = {}


def bind(context: RequestContext) -> contextvars.Token[RequestContext | None]:
    _in_flight[id(context)] = context
    return _current.set(context)


def reset(token: contextvars.Token[RequestContext | None]) -> None:
    bound = _current.get()
    if bound is not None and not bound.writes_on_close:
        _in_flight.pop(id(bound), None)
    _current.reset(token)


def in_flight() -> list[RequestContext]:
    """The requests of this process being handled now (any thread or task)."""
    return list(_in_flight.values())
