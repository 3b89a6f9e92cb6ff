"""QUERY_LIMITS: depth, aliases and fields counted as the operation will execute, before it does."""

from __future__ import annotations

import json
import time
from unittest import mock
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from gql_audit.history import request_trail
from gql_audit.models import RequestReads, SecurityEvent
from gql_audit.protect import document
from gql_audit.protect.document import analyse
from tests.conftest import SQLRecorder, make_token, post_graphql

pytestmark = pytest.mark.django_db


def configured(**values):
    """The test settings with ``values`` added to ``GQL_AUDIT``."""
    return override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **values})


def cost(text, name=None):
    analysis = analyse(text)
    operation = analysis.operation(name)
    return operation.cost if operation is not None else analysis.worst()


@pytest.mark.graphql_core
def test_depth_aliases_and_fields_of_plain_selections():
    assert cost("{ a }") == document.Cost(1, 0, 1)
    assert cost("{ a { b { c } } x: a }") == document.Cost(3, 1, 4)


@pytest.mark.graphql_core
def test_fragments_are_expanded_and_every_spread_counted():
    text = """
    query Q { documents { ...F owner { documents { ...F } } } me { ...G ...G } }
    fragment F on DocumentNode { a1: title a2: title owner { username } }
    fragment G on UserType { documents { ...F } }
    """
    got = cost(text)
    # documents > owner > documents > F.owner > username
    assert got.depth == 5
    # F has 2 aliases: used once directly, once below owner, and twice through G.
    assert got.aliases == 2 * 4
    # F = 4 fields; G = documents + F = 5. Validation compares fields of one name merged into
    # one selection set: the `owner` beside ...F with F's own, the second ...G's `documents`
    # with the first's: one more each.
    assert got.fields == (1 + 4 + 1 + 1 + 1 + 4) + (1 + 5 + 5 + 1)


def test_fields_merged_under_one_name_count_as_the_validator_compares_them():
    # k fields of one response name in a selection set (directly, through inline fragments
    # or spreads) cost graphql-core's validation k * (k - 1) / 2 comparisons: the n-th counts n.
    assert cost("{ a a a }").fields == 1 + 2 + 3
    assert cost("{ a ... { a } ... on T { a } }").fields == 1 + 2 + 3
    assert cost("{ ...F ...F ...F } fragment F on T { a }").fields == 1 + 2 + 3
    assert cost("{ a b: a c: a }").fields == 3  # aliased: three names, nothing to compare


@pytest.mark.graphql_core
def test_inline_fragments_count_their_selections_without_adding_depth():
    assert cost("{ a { ... on T { x: b y: b ... { z: b { c } } } } }") == document.Cost(3, 3, 5)


@pytest.mark.graphql_core
def test_doubling_fragments_are_measured_in_linear_time_and_saturate():
    # F0 spreads F1 twice, F1 spreads F2 twice...: 2**60 aliases as executed.
    n = 60
    fragments = "\n".join(f"fragment F{i} on T {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n))
    text = f"{{ a {{ ...F0 }} }}\n{fragments}\nfragment F{n} on T {{ x: b }}"
    started = time.perf_counter()
    got = cost(text)
    assert time.perf_counter() - started < 1
    assert got.aliases == document.CAP and got.fields == document.CAP and got.depth == 2


@pytest.mark.graphql_core
def test_fragment_cycles_terminate():
    analysis = analyse("{ a { ...A } } fragment A on T { ...B } fragment B on T { x ...A }")
    assert analysis.problem == "cycle" and analysis.operations == ()
    # Unknown fragments count nothing: validation will refuse them.
    assert cost("{ a { ...Missing } }") == document.Cost(1, 0, 1)


@pytest.mark.graphql_core
def test_documents_nested_past_the_parser_are_unmeasurable():
    analysis = analyse("{ a " * 3000 + "}" * 3000)
    assert analysis.problem == "too deep" and analysis.worst() == document.UNMEASURABLE
    assert analyse("{ a ").problem == "syntax"


@pytest.mark.graphql_core
def test_a_repeated_document_is_analysed_once():
    text = "query Once { documents { title } }"
    assert analyse(text) is analyse(text)


@pytest.mark.graphql_core
def test_the_operation_named_is_the_one_measured():
    text = "query A { a } query B { b { c { d } } }"
    assert cost(text, "A").depth == 1 and cost(text, "B").depth == 3
    # No name with two operations: the worst of them (the view will refuse it anyway).
    assert cost(text).depth == 3


DEEP = "{ documents { owner { documents { edges { node { title } } } } } }"
WIDE = "{ serviceStatus { " + " ".join(f"a{i}: ok" for i in range(50)) + " } }"
VIA_FRAGMENTS = """
query Wide { serviceStatus { ...S ...S } publicDocuments { ...D } }
fragment S on ServiceStatus { a: ok b: ok c: ok }
fragment D on DocumentNode { ... on DocumentNode { x: title y: title } }
"""


def limit_events(request_id):
    return list(SecurityEvent.objects.filter(request_id=request_id, kind="query_limit").order_by("message"))


@pytest.mark.parametrize(
    ("query", "limit", "value"),
    [(DEEP, {"max_depth": 4}, 6), (WIDE, {"max_aliases": 10}, 50), (VIA_FRAGMENTS, {"max_aliases": 7}, 8)],
)
def test_enforce_refuses_before_anything_runs(client, users, query, limit, value):
    token = make_token("alice")
    statements = SQLRecorder()
    with configured(QUERY_LIMITS={**limit, "mode": "enforce"}), connection.execute_wrapper(statements):
        response = post_graphql(client, query, token=token, headers={"X-Request-ID": "limit-enforce"})
    # Nothing ran: no document was selected (the token's user was, before the view).
    assert not [sql for sql in statements if "example_service_document" in sql]
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "rule": "QUERY_LIMITS"}
    assert "data" not in response.json()
    trail = request_trail("limit-enforce")
    assert trail.reads == []
    (event,) = limit_events("limit-enforce")
    (name,) = limit
    assert event.details["limit"] == name and event.details["value"] == value
    assert event.details["max"] == limit[name] and event.details["enforced"] is True
    assert event.details["rule"] == "QUERY_LIMITS" and event.severity == "warning"
    assert event.actor_id == users["alice"].pk and event.operation["hash"] == document.document_hash(query)
    # The refusal is the only event: not also a graphql_error for the 400.
    assert [e.kind for e in trail.events] == ["query_limit"]


def test_measure_executes_records_reads_and_the_event(client, users):
    token = make_token("alice")
    with configured(QUERY_LIMITS={"max_depth": 4, "max_fields": 3, "mode": "measure"}):
        response = post_graphql(client, DEEP, token=token, headers={"X-Request-ID": "limit-measure"})
    assert response.status_code == 200 and "errors" not in response.json()
    assert response.json()["data"]["documents"]
    assert request_trail("limit-measure").reads
    events = {e.details["limit"]: e.details for e in limit_events("limit-measure")}
    assert events["max_depth"]["value"] == 6 and events["max_depth"]["enforced"] is False
    assert events["max_fields"]["value"] == 6 and events["max_fields"]["enforced"] is False


def test_within_limits_nothing_is_recorded(client, users):
    with configured(QUERY_LIMITS={"max_depth": 6, "max_aliases": 0, "max_fields": 6}):
        response = post_graphql(client, DEEP, token=make_token("alice"), headers={"X-Request-ID": "limit-ok"})
    assert response.status_code == 200 and response.json()["data"]["documents"]
    assert not SecurityEvent.objects.filter(request_id="limit-ok").exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_get_and_query_string_documents_are_measured(client, users, method):
    # graphene-django reads ?query= before the body, whatever the method.
    with configured(QUERY_LIMITS={"max_aliases": 10}):
        url = "/graphql/?" + urlencode({"query": WIDE})
        response = getattr(client, method)(
            url, content_type="application/json", data="{}" if method == "post" else None
        )
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


@pytest.mark.graphql_core
def test_hostile_documents_get_clear_answers(client, users):
    hostile = [
        "{ a " * 3000 + "}" * 3000,  # past the parser
        "{ a { ...A } } fragment A on T { ...A }",  # a cycle
        "{ serviceStatus { ok } }" + " " * 100_000 + "# \x00 \ud800",  # long, NUL, lone surrogate
        "{ " + "x: __typename " * 20_000 + "}",
    ]
    with configured(QUERY_LIMITS={"max_depth": 10, "max_aliases": 100}):
        for text in hostile:
            response = client.post("/graphql/", {"query": text}, content_type="application/json")
            assert response.status_code in (200, 400), response.content[:200]
            assert b"Traceback" not in response.content
    codes = {e.details["limit"] for e in SecurityEvent.objects.filter(kind="query_limit")}
    assert codes == {"max_depth", "max_aliases"}


def test_every_operation_of_a_batch_is_measured(client, users):
    batch = [{"query": "{ serviceStatus { ok } }"}, {"query": WIDE}]
    with configured(QUERY_LIMITS={"max_aliases": 10}):
        response = client.post("/graphql-batch/", json.dumps(batch), content_type="application/json")
    assert response.status_code == 400
    assert [r["errors"][0]["extensions"]["code"] for r in response.json()] == ["QUERY_TOO_COMPLEX"] * 2


def test_a_refusal_has_its_request_line(client, users, caplog):
    caplog.set_level("INFO", logger="gql_audit.request")
    with configured(QUERY_LIMITS={"max_aliases": 10}):
        post_graphql(client, WIDE, headers={"X-Request-ID": "limit-log"})
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.request"]
    assert (line["request_id"], line["status"], line["error_codes"]) == ("limit-log", 400, ["QUERY_TOO_COMPLEX"])
    assert line["operation"]["hash"] == document.document_hash(WIDE)


HUGE = "{ " + "x: serviceStatus { ok } " * 100_000 + "}"  # 2.4 MB, 500,000 tokens


@pytest.mark.graphql_core
def test_max_tokens_stops_the_parser_and_refuses(client, users, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    with configured(QUERY_LIMITS={"max_tokens": 1000, "max_aliases": 10}):
        started = time.perf_counter()
        response = post_graphql(client, HUGE, headers={"X-Request-ID": "tokens-enforce"})
        elapsed = time.perf_counter() - started
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    (event,) = limit_events("tokens-enforce")
    assert event.details["limit"] == "max_tokens" and event.details["value"] == 1001 and event.details["max"] == 1000
    # Parsing the whole document takes seconds; stopping at 1,000 tokens, a fraction of one.
    assert elapsed < 1, elapsed


@pytest.mark.graphql_core
def test_max_tokens_in_measure_mode_parses_in_full_and_measures_the_rest(client, users):
    with configured(QUERY_LIMITS={"max_tokens": 20, "max_aliases": 10, "mode": "measure"}):
        response = post_graphql(client, WIDE, headers={"X-Request-ID": "tokens-measure"})
    assert response.status_code == 200 and response.json()["data"]["serviceStatus"]["a0"] is True
    events = {e.details["limit"]: e.details for e in limit_events("tokens-measure")}
    assert events["max_tokens"] == {**events["max_tokens"], "value": 21, "max": 20, "enforced": False}
    assert events["max_aliases"]["value"] == 50


def test_the_allow_list_refuses_an_unlisted_document_without_parsing_it(client, users, settings, tmp_path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({document.document_hash(WIDE): WIDE}))
    with (
        configured(PERSISTED_OPERATIONS={"manifest": str(manifest), "mode": "enforce"}),
        mock.patch.object(document, "_analyse", side_effect=AssertionError("parsed")),
    ):
        response = post_graphql(client, HUGE)
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"


# --- max_cost, max_directives, max_request_bytes -----------------------------------------


def estimated(query, variables=None, **limits):
    from example_service.schema import schema
    from gql_audit.protect.cost import estimate

    with configured(QUERY_LIMITS={"max_cost": 10**6, **limits}):
        return estimate(query, document.document_hash(query), schema.graphql_schema, variables).worst


def test_the_cost_of_an_operation_follows_the_cost_specification():
    assert estimated("{ serviceStatus { ok name } }") == 1  # one object, scalars free
    assert estimated("{ documents { title } }") == 100  # a list without a size: default_list_size objects
    assert estimated("{ documents { title } }", default_list_size=20) == 20
    # Nested lists multiply: 100 documents x (1 + owner (1 + a connection of 100 edges x (edge + node))).
    nested = "{ documents { owner { documents { edges { node { title } } } } } }"
    assert estimated(nested) == 100 * (1 + 1 + 1 + 100 * 2)
    # A connection's slicing argument sizes its edges, inline or from a variable (or its default).
    connection = "query Q($n: Int = 4) { documentsConnection(first: $n) { edges { node { title } } } }"
    assert estimated(connection) == 1 + 4 * 2
    assert estimated(connection, {"n": 10}) == 1 + 10 * 2
    # A mutation's root field costs 10; introspection costs nothing (its depth is graphql-core's to bound).
    assert estimated('mutation { tokenAuth(username: "a", password: "b") { token } }') == 10
    assert estimated("{ __schema { types { fields { name } } } }") == 0
    # Per-field overrides.
    costs = {"Query.documents": {"assumed_size": 5, "cost": 3}, "DocumentNode.owner": 7}
    assert estimated("{ documents { owner { username } } }", costs=costs) == 5 * (3 + 7)


@pytest.mark.parametrize("limits", [{"max_depth": 10}, {"max_depth": 10, "mode": "observe"}])
def test_the_cost_is_on_the_records_without_max_cost(client, users, limits):
    token = make_token("alice")
    cheap = "query Cheap { documentsConnection(first: 2) { edges { node { title } } } }"
    sized = "query Sized($n: Int) { documentsConnection(first: $n) { edges { node { title } } } }"
    with configured(QUERY_LIMITS=limits):
        for n in range(2):  # the second time from the kept verdict
            assert post_graphql(client, cheap, token=token, headers={"X-Request-ID": f"cost-{n}"}).status_code == 200
        post_graphql(client, sized, variables={"n": 1}, token=token, headers={"X-Request-ID": "cost-sized"})
    assert [RequestReads.objects.get(request_id=f"cost-{n}").context["cost"] for n in range(2)] == [5, 5]
    assert RequestReads.objects.get(request_id="cost-sized").context["cost"] == 3


def test_max_cost_refuses_and_the_cost_is_on_the_records(client, users):
    token = make_token("alice")
    cheap = "query Cheap { documentsConnection(first: 2) { edges { node { title } } } }"
    expensive = "query Dear { documents { owner { documents { edges { node { title } } } } } }"
    with configured(QUERY_LIMITS={"max_cost": 1000}):
        ok = post_graphql(client, cheap, token=token, headers={"X-Request-ID": "cost-ok"})
        refused = post_graphql(client, expensive, token=token, headers={"X-Request-ID": "cost-over"})
    assert ok.status_code == 200 and ok.json()["data"]["documentsConnection"]["edges"]
    assert request_trail("cost-ok").reads
    assert RequestReads.objects.get(request_id="cost-ok").context["cost"] == 5
    assert refused.status_code == 400
    (event,) = limit_events("cost-over")
    assert (event.details["limit"], event.details["value"], event.details["max"]) == ("max_cost", 20300, 1000)


def test_max_directives_counts_every_directive_as_executed(client, users):
    many = (
        "query Q($t: Boolean = true) { ...F ...F } "
        "fragment F on Query { serviceStatus @include(if: $t) { ok @skip(if: false) } }"
    )
    assert analyse(many).worst().directives == 4
    with configured(QUERY_LIMITS={"max_directives": 3}):
        response = post_graphql(client, many, headers={"X-Request-ID": "directives"})
    assert response.status_code == 400
    (event,) = limit_events("directives")
    assert (event.details["limit"], event.details["value"]) == ("max_directives", 4)


def test_max_request_bytes_refuses_before_the_body_is_parsed(client, users, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    body = json.dumps({"query": "{ serviceStatus { ok } }", "padding": "x" * 1_000_000})
    with (
        configured(QUERY_LIMITS={"max_request_bytes": 100_000}),
        mock.patch("json.loads", side_effect=AssertionError("parsed")),
    ):
        response = client.post("/graphql/", body, content_type="application/json", headers={"X-Request-ID": "big"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "rule": "QUERY_LIMITS"}
    (event,) = limit_events("big")
    assert (event.details["limit"], event.details["value"]) == ("max_request_bytes", len(body))


# --- a document admitted before: its verdict kept, never what must be recorded or re-decided ----


def test_a_document_over_a_limit_in_measure_mode_is_recorded_at_every_request(client, users):
    token = make_token("alice")
    with configured(QUERY_LIMITS={"max_depth": 4, "mode": "measure"}):
        for n in range(3):
            response = post_graphql(client, DEEP, token=token, headers={"X-Request-ID": f"measured-{n}"})
            assert response.status_code == 200 and response.json()["data"]["documents"]
    for n in range(3):
        assert [e.details["limit"] for e in limit_events(f"measured-{n}")] == ["max_depth"]


def test_a_cost_sized_by_a_variable_is_estimated_again_for_each_value(client, users):
    token = make_token("alice")
    sized = "query S($n: Int) { documentsConnection(first: $n) { edges { node { title } } } }"
    with configured(QUERY_LIMITS={"max_cost": 100}):
        small = [
            post_graphql(client, sized, variables={"n": 2}, token=token, headers={"X-Request-ID": f"small-{n}"})
            for n in range(2)
        ]
        large = post_graphql(client, sized, variables={"n": 500}, token=token, headers={"X-Request-ID": "large"})
    assert [r.status_code for r in small] == [200, 200]
    assert RequestReads.objects.get(request_id="small-1").context["cost"] == 5
    assert large.status_code == 400
    assert large.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    (event,) = limit_events("large")
    assert (event.details["limit"], event.details["value"]) == ("max_cost", 1001)


def test_each_operation_of_a_document_admitted_before_is_named_and_costed_as_its_own(client, users):
    token = make_token("alice")
    text = (
        "query Cheap { documentsConnection(first: 2) { edges { node { title } } } }\n"
        "query Dear { documentsConnection(first: 9) { edges { node { title } } } }"
    )

    def send(name, request_id):
        body = json.dumps({"query": text, "operationName": name})
        response = client.post(
            "/graphql/",
            body,
            content_type="application/json",
            headers={"X-Request-ID": request_id},
            HTTP_AUTHORIZATION=f"JWT {token}",
        )
        assert response.status_code == 200, response.content
        row = RequestReads.objects.get(request_id=request_id)
        return row.operation["name"], row.context["cost"]

    with configured(QUERY_LIMITS={"max_cost": 1000}):
        seen = [send(name, f"op-{n}") for n, name in enumerate(["Cheap", "Dear", "Cheap", "Dear"])]
    assert seen == [("Cheap", 5), ("Dear", 19), ("Cheap", 5), ("Dear", 19)]


def test_a_document_dropped_from_the_manifest_is_refused_after_the_settings_change(client, users, tmp_path):
    query = "{ serviceStatus { ok } }"
    listed, empty = tmp_path / "listed.json", tmp_path / "empty.json"
    listed.write_text(json.dumps({document.document_hash(query): query}))
    empty.write_text("{}")
    with configured(PERSISTED_OPERATIONS={"manifest": str(listed), "mode": "enforce"}):
        assert [post_graphql(client, query).status_code for _ in range(2)] == [200, 200]
    with configured(PERSISTED_OPERATIONS={"manifest": str(empty), "mode": "enforce"}):
        refused = post_graphql(client, query)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"


def test_an_unlisted_document_in_observe_mode_is_recorded_at_every_request(client, users, tmp_path):
    query = "{ serviceStatus { ok } }"
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    with configured(PERSISTED_OPERATIONS={"manifest": str(manifest), "mode": "observe"}):
        for n in range(3):
            assert post_graphql(client, query, headers={"X-Request-ID": f"unlisted-{n}"}).status_code == 200
    for n in range(3):
        assert SecurityEvent.objects.filter(request_id=f"unlisted-{n}", kind="operation_unknown").count() == 1


def test_kept_verdicts_are_bounded(client, users):
    from gql_audit.protect import admission

    with configured(QUERY_LIMITS={"max_depth": 10}):
        for n in range(admission.MAX_VERDICTS + 5):
            admission._keep(admission._verdicts(), (f"{{ a{n} }}", 0), admission._Verdict(analyse("{ a }"), {}, None))
        assert len(admission._verdicts()) <= admission.MAX_VERDICTS
        assert post_graphql(client, "{ serviceStatus { ok } }").status_code == 200
        long_text = "{ serviceStatus { ok } }" + " " * admission.VERDICT_MAX_CHARS
        assert post_graphql(client, long_text).status_code == 200
        assert all(len(key[0]) <= admission.VERDICT_MAX_CHARS for key in admission._verdicts())
