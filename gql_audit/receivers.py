"""Signal receivers connected once, at start-up (``AppConfig.ready``).

The actor is resolved lazily: each ``LogEntry`` is stamped at the moment it is
saved with the user the request is authenticated as *then*, whoever set it
(our middleware, graphql_jwt's Graphene middleware, or a login mid-request).
Nothing is connected per request, so no receiver can leak (django-auditlog #846).
"""

from __future__ import annotations

import contextvars
from typing import Any

from gql_audit import context, metrics
from gql_audit.compat import auditlog_block_values
from gql_audit.logging import log_failed_entry


def _explicit_auditlog_actor() -> bool:
    """Whether service code wrapped this save in auditlog's own ``set_actor``."""
    block = auditlog_block_values()
    return block is not None and block.get("actor") is not None


def merge_additional_data(existing: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """Add our object beside what the service put there; never drop theirs."""
    if existing is None:
        return {"gql_audit": ours}
    if isinstance(existing, dict):
        return {**existing, "gql_audit": ours}
    return {"value": existing, "gql_audit": ours}


#: The ``LogEntry`` being saved: what the fallback log gets if its INSERT fails.
_entry_being_saved: contextvars.ContextVar[Any] = contextvars.ContextVar("gql_audit_entry_being_saved", default=None)


def stamp_log_entry(sender: Any, instance: Any, raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
    """``pre_save`` of auditlog's ``LogEntry``: actor, email, cid, address, context."""
    _entry_being_saved.set(instance)
    ctx = context.current()
    if ctx is None or raw:
        return
    if instance.actor_id is None and not _explicit_auditlog_actor():
        actor_id, email = ctx.actor()
        instance.actor_id = actor_id
        if email and not instance.actor_email:
            instance.actor_email = email
    if not instance.cid:
        instance.cid = ctx.correlation_id()
    if instance.remote_addr is None:
        instance.remote_addr = ctx.entry_remote_addr()
    if getattr(instance, "remote_port", None) is None and ctx.remote_port is not None:
        instance.remote_port = ctx.remote_port
    instance.additional_data = merge_additional_data(instance.additional_data, ctx.record_data(using or "default"))


def log_failed_change_entry(
    sender: Any, instance: Any, action: Any = None, error: BaseException | None = None, **kwargs: Any
) -> None:
    """auditlog's ``post_log`` with an error: its own INSERT failed.

    The entry goes, complete, to the ``gql_audit.audit`` log before auditlog
    raises the error on. auditlog writes CREATE and DELETE entries after the
    change: without a transaction around it (check ``gql_audit.W004``) the
    change stays committed. UPDATE entries are written before the save, which
    their failure stops.
    """
    if error is None:
        return
    entry = _entry_being_saved.get()
    _entry_being_saved.set(None)
    metrics.records_fallback("change", 1)
    log_failed_entry(sender, instance, action, kwargs.get("changes"), entry, error)


def defer_access_entry(sender: Any, instance: Any, action: Any = None, **kwargs: Any) -> bool | None:
    """auditlog's ``pre_log``, sent before every entry auditlog builds: an ACCESS
    entry from service code (``accessed.send``) is deferred.

    During a request it joins the request's access records, written after the
    view with the same actor and context, and returning False stops auditlog
    writing its own row inside the view's transaction, where a rollback would
    take it.
    """
    from auditlog import get_logentry_model

    # auditlog is about to build an entry: one saved earlier is not this one.
    _entry_being_saved.set(None)
    ctx = context.current()
    if ctx is None or ctx.accessed is None or action != get_logentry_model().Action.ACCESS:
        return None
    from gql_audit.access import record_instance

    record_instance(instance)
    return False


def note_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_delete`` of the user model.

    Entries saved while the user is being deleted (their own DELETE entry, the
    cascade's) cannot point at the row being removed: they keep the actor's
    email and leave ``actor`` empty, which is what ``SET_NULL`` does to the
    user's older entries anyway (django-auditlog #245).
    """
    ctx = context.current()
    if ctx is not None and instance.pk is not None:
        ctx.deleted_actor_pks.add(instance.pk)


def note_change_entry(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """``TAMPER_EVIDENCE``: a ``LogEntry`` saved in a request is sealed with the request's
    records; one saved elsewhere, when its transaction commits. ``EXPORT``: it is put in the
    outbox at once."""
    from gql_audit.evidence import sealing
    from gql_audit.export import outbox

    if created:
        outbox.stage_entry(instance._state.db or "default", instance.pk)  # EXPORT: in the entry's transaction
        metrics.records_written("change", 1)
    if not created or not sealing.enabled():
        return
    ctx = context.current()
    if ctx is not None:
        ctx.changes_to_seal.append(instance.pk)
        return
    from django.db import transaction

    alias = instance._state.db or "default"
    pk = instance.pk
    transaction.on_commit(lambda: seal_later(alias, pk), using=alias)


def seal_later(alias: str, pk: Any) -> None:
    from gql_audit.store import seal_quietly

    seal_quietly(alias, {"entry": [pk]})
