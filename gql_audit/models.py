"""``SecurityEvent``: one row per failure worth an operator's eye."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from gql_audit.kinds import KINDS, SEVERITIES


class SecurityEvent(models.Model):
    # Random keys: sequential ones make a write hot spot on CockroachDB.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=[(k, label) for k, (label, _) in KINDS.items()], db_index=True)
    severity = models.CharField(max_length=10, choices=[(s, s) for s in SEVERITIES])
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    operation = models.JSONField(null=True, blank=True)
    path = models.CharField(max_length=512, blank=True)
    message = models.TextField(blank=True)
    sqlstate = models.CharField(max_length=5, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "security event"
        verbose_name_plural = "security events"

    def __str__(self) -> str:
        return f"{self.kind} {self.request_id or ''}".strip()


class RequestReads(models.Model):
    """The reads of one request: every object its responses exposed, in one row.

    ``ACCESS_STORE = "gql_audit"``. One INSERT a request whatever the number
    of objects; "who read this object" is answered by ``keys``, indexed by
    object: a GIN index on PostgreSQL, an inverted index on CockroachDB, and
    :class:`ReadObject` rows on databases with neither. No foreign keys: the
    actor is a plain id beside a snapshot, so the row outlives the user and
    commits without locking the user table. Read it through ``gql_audit.history``.
    """

    # Random keys: sequential ones make a write hot spot on CockroachDB.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    at = models.DateTimeField(db_index=True)
    request_id = models.CharField(max_length=128, db_index=True)
    #: ``str(pk)`` of the actor when the reads were written (indexed: "what did this user read").
    actor_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    #: ``{"id", "username"}`` of that actor.
    actor = models.JSONField(null=True, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    operation = models.JSONField(null=True, blank=True)
    #: The rest of the request's ``"gql_audit"`` object: certificate, database, extra data.
    context = models.JSONField(default=dict, blank=True)
    #: ``"app_label.model:pk"`` of every object read, in one indexed array.
    keys = models.JSONField(default=list)
    #: For each key, the index of its entry in ``shapes``.
    shape_of = models.JSONField(default=list)
    #: ``{"fields": [...], "paths": [...]}`` of the ways objects were read: objects read alike share one.
    shapes = models.JSONField(default=list)

    class Meta:
        ordering = ["-at"]
        verbose_name = "request's reads"
        verbose_name_plural = "requests' reads"

    def __str__(self) -> str:
        return f"{len(self.keys)} reads {self.request_id}"


class ReadObject(models.Model):
    """One object of a :class:`RequestReads` row, where the database has no index on arrays (SQLite).

    Built in bulk from :class:`ReadIndexQueue`, off the request path
    (``gql_audit.store.index``); indexed by object and time, so that an object's newest
    reads are the first rows of its range. Never written on PostgreSQL or CockroachDB
    (their index on ``keys`` answers), so its sequential key makes no hot spot.
    """

    id = models.BigAutoField(primary_key=True)
    reads_id = models.UUIDField(db_index=True)
    key = models.CharField(max_length=255)
    at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "object read"
        indexes = [models.Index(fields=["key", "at"], name="gql_audit_readobject_key_at")]


class ReadIndexQueue(models.Model):
    """A :class:`RequestReads` row whose objects are not yet in :class:`ReadObject` (SQLite).

    Filled by a trigger on the INSERT of every ``RequestReads`` row, in that statement:
    the row and its place here commit together, whatever wrote the row. Emptied, in
    order, by ``gql_audit.store.index.catch_up``, in the transaction that indexes the
    rows. Readers search these rows directly, so a read is found the moment it is written.
    """

    #: SQLite's rowid: each row is appended at the end.
    id = models.IntegerField(primary_key=True)
    reads_id = models.UUIDField()

    class Meta:
        verbose_name = "reads row to index"


class Seal(models.Model):
    """``TAMPER_EVIDENCE``: the records one request (or one write) left, sealed in a chain.

    ``entries`` lists ``[kind, pk, sha256 of the stored record, subkind, actor pk, time]``;
    ``mac`` is the HMAC of the chain, position, ``previous`` (the previous seal's
    ``mac``), time, key and entries. ``python manage.py gql_audit_verify`` walks the chains.
    """

    #: Keyed by its place, nothing else: one index to maintain per request. The chain
    #: id starts with its random part, so concurrent writers' seals spread over the
    #: key space (CockroachDB gets no hot range).
    pk = models.CompositePrimaryKey("chain", "seq")
    chain = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    at = models.DateTimeField()
    key_id = models.CharField(max_length=16)
    entries = models.JSONField(default=list)
    #: The ``mac`` of the seal before it (the chain's anchor for the first): covered by
    #: ``mac``, so each seal can be checked on its own, even next to a missing one.
    previous = models.CharField(max_length=64)
    mac = models.CharField(max_length=64)

    class Meta:
        ordering = ["chain", "seq"]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq}"


class SealChain(models.Model):
    """One writer's chain of seals for one day: where it starts, its newest seal, sealed.

    ``number`` counts chains from 1 without a gap (:class:`SealCounter`), so that a
    chain deleted whole shows; ``base_*`` is where verification starts (the anchor,
    or the last seal a purge removed); ``head_*`` the newest seal; ``mac`` the HMAC
    of all of them.
    """

    chain = models.CharField(max_length=64, primary_key=True)
    number = models.BigIntegerField(null=True, unique=True)
    started_at = models.DateTimeField()
    base_seq = models.BigIntegerField(default=0)
    base_mac = models.CharField(max_length=64)
    head_seq = models.BigIntegerField(default=0)
    head_mac = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)
    mac = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return self.chain


class OutboxEvent(models.Model):
    """``EXPORT``: a record to ship, written in the same write as the record itself.

    Names the record (its kind, as ``gql_audit_verify`` names them, and its key);
    ``gql_audit_ship`` renders it when it ships it. ``seq`` is given by the shipper
    in the order rows become visible, after their transaction committed, so that no
    row committed late is passed over; each sink's cursor is a ``seq``. A row is
    deleted once every sink has it.
    """

    # Random keys: sequential ones make a write hot spot on CockroachDB.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    at = models.DateTimeField()
    #: ``reads``, ``entry`` or ``event``.
    kind = models.CharField(max_length=16)
    record_id = models.CharField(max_length=64)
    seq = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["seq", "at"], name="gql_audit_outbox_seq_at")]
        verbose_name = "outbox event"

    def __str__(self) -> str:
        return f"{self.kind}:{self.record_id}"


class OutboxCursor(models.Model):
    """How far one export sink has been delivered (and, named ``sequence``, the last ``seq`` given)."""

    #: The sink's key (a hash of its URL, credentials left out), or ``sequence``.
    sink = models.CharField(max_length=64, primary_key=True)
    #: The sink's URL without credentials, for people.
    url = models.TextField(blank=True)
    seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.url or self.sink} @ {self.seq}"


class SealCounter(models.Model):
    """How many seal chains were ever started (``name = "chains"``), sealed.

    Raised in the transaction that starts a chain, so chain numbers have no gap: a
    number missing is a chain deleted.
    """

    name = models.CharField(max_length=16, primary_key=True)
    value = models.BigIntegerField(default=0)
    #: Set when the row had been deleted and was made again, counting on after this number.
    restarted_after = models.BigIntegerField(null=True, blank=True)
    key_id = models.CharField(max_length=16, blank=True)
    mac = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


class LogLeaf(models.Model):
    """``CHECKPOINTS``: one record in the append-only log, at its place in the Merkle tree.

    ``leaf`` is the text that is hashed (``SHA-256(0x00 || UTF-8 of leaf)``): a JSON
    object naming the record's kind and key, with its time, actor and the SHA-256 of its
    stored content. Written only by ``gql_audit_checkpoint``, with the checkpoint that
    signs it; kept after the record itself is purged, so that the tree still verifies.
    """

    index = models.BigIntegerField(primary_key=True)
    #: ``reads``, ``entry``, ``event``, or ``purge`` (a purge's own record).
    kind = models.CharField(max_length=16)
    record_id = models.CharField(max_length=255)
    #: The leaf's ``type`` and ``at`` again, for ``gql_audit_purge`` to find the oldest of a
    #: kind in SQL (verification reads the leaf itself).
    type = models.CharField(max_length=32)
    at = models.DateTimeField(null=True)
    leaf = models.TextField()

    class Meta:
        indexes = [
            models.Index(fields=["kind", "record_id"], name="gql_audit_leaf_record"),
            models.Index(fields=["kind", "type", "at"], name="gql_audit_leaf_age"),
        ]
        verbose_name = "logged record"

    def __str__(self) -> str:
        return f"#{self.index} {self.kind}:{self.record_id}"


class Checkpoint(models.Model):
    """``CHECKPOINTS``: the log's tree at one moment, signed (a C2SP signed note).

    ``note`` is the whole signed note; ``created_at`` its time line, ``tree_size`` and
    ``root_hash`` its size and root (verification reads them from the note).
    ``frontier`` holds the roots of the tree's right edge, from which the next run
    appends without reading the leaves again.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    tree_size = models.BigIntegerField()
    root_hash = models.CharField(max_length=64)
    #: The C2SP key ID (hex) of the key that signed it.
    key_id = models.CharField(max_length=8)
    note = models.TextField()
    frontier = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"{self.tree_size} at {self.created_at:%Y-%m-%dT%H:%M:%SZ}"


class LogCursor(models.Model):
    """``CHECKPOINTS`` with ``TAMPER_EVIDENCE``: how far the log has taken a seal chain
    (its newest seal logged, and that seal's HMAC, which the next must follow)."""

    chain = models.CharField(max_length=64, primary_key=True)
    seq = models.BigIntegerField()
    mac = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq}"
