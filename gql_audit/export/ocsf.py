"""The records as OCSF 1.7.0 events (``EXPORT["format"] = "ocsf"``).

| record | OCSF class | activity |
| --- | --- | --- |
| a request's reads, an ACCESS entry | API Activity (6003) | Read (2) |
| a change entry | API Activity (6003) | Create (1), Update (3), Delete (4) |
| ``login_failed``, ``login_succeeded`` | Authentication (3002) | Logon (1) |
| ``token_invalid``, ``token_expired``, ``cert_failed`` | Authentication (3002) | Other (99) |
| a refusal (``unauthenticated``, ``forbidden``, ...) | API Activity (6003) | Read or Other, status Failure |
| ``trail_accessed`` | API Activity (6003) | Read (2), status Success |
| an error (``graphql_error``, ``db_error``, ``db_retry``, ...) | Application Error (6008) | General Error (1) |
| a signed checkpoint (``CHECKPOINTS``) | API Activity (6003) | Create (1), the checkpoint as its resource |

``metadata.uid`` is the record's stable id (``reads:<id>``, ``entry:<id>``,
``event:<id>``, ``checkpoint:<id>``): a consumer drops duplicates on it.
``metadata.correlation_uid`` is the request id. What OCSF has no attribute for (the database context, the client
certificate, the operation's hash, an event's details) is under ``unmapped``.
A record with no actor names ``anonymous`` (a request without a user) or ``system``
(no request): an authenticated user always has a ``uid``.
"""

from __future__ import annotations

import datetime
from typing import Any

from gql_audit.conf import conf
from gql_audit.export.records import CHECKPOINT, ENTRY, READS

VERSION = "1.7.0"

API_ACTIVITY = (6003, "API Activity", 6, "Application Activity")
AUTHENTICATION = (3002, "Authentication", 3, "Identity & Access Management")
APPLICATION_ERROR = (6008, "Application Error", 6, "Application Activity")

#: gql_audit severity -> (OCSF ``severity_id``, ``severity``).
SEVERITY = {"info": (1, "Informational"), "warning": (3, "Medium"), "error": (4, "High")}
API_ACTIVITIES = {"create": (1, "Create"), "access": (2, "Read"), "update": (3, "Update"), "delete": (4, "Delete")}
#: Security event kinds that are authentication, and their activity.
AUTHENTICATION_KINDS = {
    "login_failed": (1, "Logon"),
    "login_succeeded": (1, "Logon"),
    "token_invalid": (99, "Token validation"),
    "token_expired": (99, "Token validation"),
    "cert_failed": (99, "Certificate validation"),
}
#: Security event kinds that are the service's own errors, not a client's.
ERROR_KINDS = frozenset({"graphql_error", "db_error", "db_retry", "task_failed", "throttle_unavailable"})
SUCCESS = (1, "Success")
FAILURE = (2, "Failure")


def product() -> dict[str, Any]:
    def build() -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("gql-audit")
        except PackageNotFoundError:  # run from a source tree
            found = "unknown"
        return {"name": "gql_audit", "vendor_name": "gql_audit", "version": found}

    made: dict[str, Any] = conf.derived("ocsf_product", build)
    return made


def service_name() -> str:
    return str(conf.APPLICATION_NAME or "gql_audit")


def millis(text: str | None) -> int:
    """An ISO 8601 time as OCSF's ``timestamp_t``: milliseconds since the epoch."""
    if not text:
        return 0
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def event(record: dict[str, Any]) -> dict[str, Any]:
    """The OCSF event of a plain record (:mod:`gql_audit.export.records`)."""
    if record["record"] == READS:
        return _api_activity(record, API_ACTIVITIES["access"], SUCCESS, resources=_objects_read(record))
    if record["record"] == ENTRY:
        return _entry(record)
    if record["record"] == CHECKPOINT:
        return _checkpoint(record)
    return _security_event(record)


def _checkpoint(record: dict[str, Any]) -> dict[str, Any]:
    """The checkpointer's signed checkpoint: its note whole, to be checked with the public key."""
    data = {key: record[key] for key in ("tree_size", "root_hash", "key_id", "note")}
    resource = {"uid": str(record["tree_size"]), "type": "checkpoint", "name": "gql_audit log", "data": data}
    found = _api_activity(record, API_ACTIVITIES["create"], SUCCESS, resources=[resource])
    found["message"] = f"signed checkpoint of {record['tree_size']} records, root {record['root_hash']}"
    return found


def _base(
    record: dict[str, Any], cls: tuple[int, str, int, str], activity: tuple[int, str], severity: str
) -> dict[str, Any]:
    class_uid, class_name, category_uid, category_name = cls
    activity_id, activity_name = activity
    severity_id, severity_name = SEVERITY.get(severity, (0, "Unknown"))
    metadata: dict[str, Any] = {"version": VERSION, "uid": record["uid"], "product": product(), "log_name": "gql_audit"}
    if record.get("request_id"):
        metadata["correlation_uid"] = record["request_id"]
    return {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        # An activity of OCSF's "Other" (99) keeps its own name; the type is "Other".
        "type_name": f"{class_name}: {'Other' if activity_id == 99 else activity_name}",
        "time": millis(record.get("time")),
        "severity_id": severity_id,
        "severity": severity_name,
        "metadata": metadata,
    }


def _user(record: dict[str, Any]) -> dict[str, Any]:
    actor = record.get("actor")
    if isinstance(actor, dict) and actor.get("id") is not None:
        user = {"uid": str(actor["id"]), "type_id": 1, "type": "User"}
        if actor.get("username") not in (None, ""):
            user["name"] = str(actor["username"])
        return user
    if record.get("request_id"):
        return {"name": "anonymous", "type_id": 0, "type": "Unknown"}
    return {"name": "system", "type_id": 3, "type": "System"}


def _src_endpoint(record: dict[str, Any]) -> dict[str, Any]:
    address = record.get("remote_addr")
    return {"ip": address} if address else {"name": "unknown"}


def _operation_text(record: dict[str, Any]) -> str:
    operation = record.get("operation")
    if isinstance(operation, dict):
        words = [str(operation[key]) for key in ("type", "name") if operation.get(key)]
        if words:
            return " ".join(words)
    return str(record.get("action") or record.get("kind") or record["record"])


def _api(record: dict[str, Any]) -> dict[str, Any]:
    api: dict[str, Any] = {"operation": _operation_text(record), "service": {"name": service_name()}}
    if record.get("request_id"):
        api["request"] = {"uid": record["request_id"]}
    return api


def _unmapped(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    kept = {key: record[key] for key in keys if record.get(key) not in (None, "", [], {})}
    return {"gql_audit": kept} if kept else {}


def _api_activity(
    record: dict[str, Any],
    activity: tuple[int, str],
    status: tuple[int, str],
    *,
    resources: list[dict[str, Any]] | None = None,
    severity: str = "info",
) -> dict[str, Any]:
    found = _base(record, API_ACTIVITY, activity, severity)
    found.update(
        actor={"user": _user(record)},
        api=_api(record),
        src_endpoint=_src_endpoint(record),
        status_id=status[0],
        status=status[1],
    )
    if resources:
        found["resources"] = resources
    unmapped = _unmapped(record, "operation", "context", "details", "path", "sqlstate", "kind")
    if unmapped:
        found["unmapped"] = unmapped
    return found


def _objects_read(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"uid": str(item["pk"]), "type": item["model"], "data": {"fields": item["fields"], "paths": item["paths"]}}
        for item in record.get("objects") or []
    ]


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    target = record.get("object") or {}
    resource: dict[str, Any] = {"uid": str(target.get("pk", "")), "type": str(target.get("model", ""))}
    if target.get("repr"):
        resource["name"] = str(target["repr"])
    if record.get("action") == "access":
        resource["data"] = {"fields": record.get("fields") or [], "paths": record.get("paths") or []}
    else:
        resource["data"] = {"changed_fields": record.get("changed_fields") or []}
    activity = API_ACTIVITIES.get(str(record.get("action")), (99, str(record.get("action"))))
    return _api_activity(record, activity, SUCCESS, resources=[resource])


def _security_event(record: dict[str, Any]) -> dict[str, Any]:
    kind = str(record.get("kind"))
    severity = str(record.get("severity"))
    message = str(record.get("message") or kind)
    if kind in AUTHENTICATION_KINDS:
        found = _base(record, AUTHENTICATION, AUTHENTICATION_KINDS[kind], severity)
        user = _user(record)
        tried = (record.get("details") or {}).get("username")
        if isinstance(tried, str) and tried and "uid" not in user:
            user = {"name": tried, "type_id": 0, "type": "Unknown"}  # the username tried: nobody was logged in
        status = SUCCESS if kind == "login_succeeded" else FAILURE
        found.update(
            user=user,
            service={"name": service_name()},
            status_id=status[0],
            status=status[1],
            message=message,
        )
        if status is FAILURE:
            found["status_detail"] = message
        if record.get("remote_addr"):
            found["src_endpoint"] = {"ip": record["remote_addr"]}
        unmapped = _unmapped(record, "kind", "operation", "path", "details")
        if unmapped:
            found["unmapped"] = unmapped
        return found
    if kind in ERROR_KINDS:
        found = _base(record, APPLICATION_ERROR, (1, "General Error"), severity)
        found.update(status_id=FAILURE[0], status=FAILURE[1], status_detail=message, message=message)
        unmapped = _unmapped(
            record, "kind", "actor", "remote_addr", "operation", "path", "sqlstate", "details", "request_id"
        )
        if unmapped:
            found["unmapped"] = unmapped
        return found
    if kind == "trail_accessed":
        page = (record.get("details") or {}).get("page")
        resources = [{"name": str(page or "audit trail"), "type": "audit trail"}]
        found = _api_activity(record, API_ACTIVITIES["access"], SUCCESS, resources=resources, severity=severity)
    else:
        found = _api_activity(record, _activity_of(record), FAILURE, severity=severity)
        found["status_detail"] = message
    found["message"] = message
    return found


def _activity_of(record: dict[str, Any]) -> tuple[int, str]:
    """A refused request's activity: Read for a query, Other for a mutation (what it would have changed is
    not known)."""
    operation = record.get("operation")
    if isinstance(operation, dict) and operation.get("type") == "mutation":
        return (99, "Other")
    return API_ACTIVITIES["access"]
