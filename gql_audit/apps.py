from __future__ import annotations

from django.apps import AppConfig


class GqlAuditConfig(AppConfig):
    name = "gql_audit"
    verbose_name = "GraphQL audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditlog import get_logentry_model
        from django.apps import apps
        from django.contrib.auth import get_user_model
        from django.core.checks import Tags, register
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_save, pre_delete, pre_save

        from gql_audit import checks, db, receivers  # noqa: F401  (registers checks)
        from gql_audit.protect.checks import check_protections

        register(check_protections, Tags.security)

        connection_created.connect(db.on_connection_created, dispatch_uid="gql_audit.on_connection_created")

        from django.core.signals import request_finished

        from gql_audit import store
        from gql_audit.store import index

        # Once the client has its response: the object index of reads caught up in bulk (SQLite).
        request_finished.connect(index.catch_up_when_due, dispatch_uid="gql_audit.index_catch_up")

        # Audit writes run again after a serialization failure, as any transaction here does.
        store.use_retries(db.retry_write)

        from gql_audit import compat, middleware

        # A database error graphene-django's view answers itself (a mutation's COMMIT) is masked.
        compat.observe_view_errors(middleware.note_view_error)

        from importlib.util import find_spec

        if find_spec("celery") is not None:
            from gql_audit import celery

            celery.connect()

        if not apps.is_installed("auditlog"):
            return  # check gql_audit.E008 says so
        pre_save.connect(
            receivers.stamp_log_entry,
            sender=get_logentry_model(),
            dispatch_uid="gql_audit.stamp_log_entry",
        )
        post_save.connect(
            receivers.note_change_entry,
            sender=get_logentry_model(),
            dispatch_uid="gql_audit.note_change_entry",
        )
        pre_delete.connect(
            receivers.note_deleted_user,
            sender=get_user_model(),
            dispatch_uid="gql_audit.note_deleted_user",
        )
        from auditlog.signals import post_log, pre_log

        pre_log.connect(receivers.defer_access_entry, dispatch_uid="gql_audit.defer_access_entry")
        post_log.connect(receivers.log_failed_change_entry, dispatch_uid="gql_audit.log_failed_change_entry")
