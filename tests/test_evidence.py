"""Trace correlation (OpenTelemetry) and the trail in a service's own tests (``gql_audit.testing``)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from graphql_relay import to_global_id
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from example_service.models import Document
from gql_audit import tracing
from gql_audit.history import request_trail
from gql_audit.testing import capture
from tests.conftest import ACCESS_STORES, make_token, post_graphql

pytestmark = pytest.mark.django_db

EXPORTER = InMemorySpanExporter()


def global_id(document):
    return to_global_id("DocumentNode", document.pk)


@pytest.fixture(scope="module")
def tracer():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    return trace.get_tracer("tests")


@pytest.fixture(params=ACCESS_STORES)
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


def test_records_carry_the_trace_and_the_span_the_operation(client, users, tracer, store):
    EXPORTER.clear()
    query = 'mutation Rename { updateDocument(id: "%s", title: "renamed") { document { title } } } '
    doc = users["alice"].documents.first()
    with tracer.start_as_current_span("POST /graphql/") as span:
        post_graphql(
            client,
            "query Mine { documents { title } }",
            token=make_token("alice"),
            headers={"X-Request-ID": "traced-1"},
        )
        post_graphql(client, query % global_id(doc), token="bad", headers={"X-Request-ID": "traced-2"})
    expected = {
        "trace_id": format(span.get_span_context().trace_id, "032x"),
        "span_id": format(span.get_span_context().span_id, "016x"),
    }
    (finished,) = [s for s in EXPORTER.get_finished_spans() if s.name == "POST /graphql/"]
    # The last operation's attributes, as OpenTelemetry's GraphQL conventions name them.
    assert finished.attributes[tracing.OPERATION_TYPE] == "mutation"
    assert finished.attributes[tracing.OPERATION_NAME] == "Rename"
    assert len(finished.attributes[tracing.DOCUMENT_HASH]) == 64
    assert "graphql.document" not in finished.attributes  # the text can hold secrets
    reads = request_trail("traced-1").reads
    assert reads
    if store == "gql_audit":
        from gql_audit.models import RequestReads

        (row,) = RequestReads.objects.filter(request_id="traced-1")
        assert {k: row.context[k] for k in expected} == expected
    else:
        entry = LogEntry.objects.filter(cid="traced-1", action=LogEntry.Action.ACCESS).first()
        assert {k: entry.additional_data["gql_audit"][k] for k in expected} == expected
    (event,) = request_trail("traced-2").events
    assert {k: event.details[k] for k in expected} == expected


def test_change_entries_carry_the_trace(client, users, tracer):
    doc = users["alice"].documents.first()
    with tracer.start_as_current_span("POST /graphql/") as span:
        post_graphql(
            client,
            'mutation { updateDocument(id: "%s", title: "renamed") { document { title } } }' % global_id(doc),
            token=make_token("alice"),
            headers={"X-Request-ID": "traced-3"},
        )
    (change,) = request_trail("traced-3").changes
    assert change.additional_data["gql_audit"]["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_no_span_no_trace_ids(client, users, tracer):
    post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "untraced"})
    post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": "untraced-2"})
    (event,) = request_trail("untraced-2").events
    assert "trace_id" not in event.details


def test_without_opentelemetry_nothing_is_recorded(client, users, monkeypatch, tracer):
    monkeypatch.setattr(tracing, "_trace", None)
    with tracer.start_as_current_span("POST /graphql/"):
        assert tracing.trace_ids() is None
        post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": "no-otel"})
        tracing.annotate_operation({"type": "query", "name": None, "hash": "0" * 64})
    (event,) = request_trail("no-otel").events
    assert "trace_id" not in event.details


def test_capture_collects_reads_changes_and_events_in_either_store(client, users, store):
    post_graphql(client, "{ documents { title } }", token=make_token("bob"), headers={"X-Request-ID": "before"})
    doc = users["alice"].documents.first()
    with capture() as trail:
        post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "inside"})
        post_graphql(
            client,
            'mutation { updateDocument(id: "%s", title: "renamed") { document { title } } }' % global_id(doc),
            token=make_token("alice"),
            headers={"X-Request-ID": "inside-2"},
        )
        post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": "inside-3"})
    post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": "after"})
    assert {read.request_id for read in trail.reads} == {"inside", "inside-2"}
    visible = Document.objects.filter(classification__in=["public", "internal"]) | Document.objects.filter(
        owner=users["alice"]
    )
    assert {read.object_pk for read in trail.reads if read.request_id == "inside"} == {str(d.pk) for d in visible}
    assert all(read.actor == {"id": users["alice"].pk, "username": "alice"} for read in trail.reads)
    (change,) = trail.changes
    assert change.object_pk == str(doc.pk) and change.actor_id == users["alice"].pk
    assert [e.kind for e in trail.events] == ["token_invalid"]
    assert trail.events.get().request_id == "inside-3"


def test_capture_leaves_out_a_change_rolled_back(users):
    from django.db import transaction

    with capture() as trail:
        with pytest.raises(RuntimeError), transaction.atomic():
            Document.objects.create(title="gone", body="", owner=users["alice"])
            raise RuntimeError("roll it back")
        kept = Document.objects.create(title="kept", body="", owner=users["alice"])
    assert [c.object_pk for c in trail.changes] == [str(kept.pk)]
