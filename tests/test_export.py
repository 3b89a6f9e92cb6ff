"""``EXPORT``: records put in the outbox in the same write, shipped to a file sink, as OCSF
events that validate against the OCSF schema, or as plain JSON.

The records come from real GraphQL requests and admin pages (a mixed run: reads, change
entries, security events of many kinds, hostile values); ``gql_audit_ship`` ships them.
Each test holds for both access stores.
"""

from __future__ import annotations

import io
import json

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.db import connection

from gql_audit.export import ocsf
from gql_audit.export.records import load
from gql_audit.models import OutboxCursor, OutboxEvent, RequestReads, SecurityEvent
from tests.conftest import ACCESS_STORES, make_token, post_graphql, writes_of_a_request
from tests.ocsf import problems

pytestmark = pytest.mark.django_db

LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"
# PostgreSQL stores no NUL in text or jsonb (gql_audit writes it as an escape): the escape is what travels.
HOSTILE = '"}]\n<13>1 - - evil - - - injected\r\n\x00\x1b[31m\u202e\ud800' + "x" * 3000


@pytest.fixture(params=ACCESS_STORES)
def exporting(request, settings, tmp_path):
    """EXPORT to one file sink, in OCSF, with the access store of the parameter."""
    path = tmp_path / "events.jsonl"
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": request.param,
        "EXPORT": {"format": "ocsf", "sinks": [f"file://{path}"]},
    }
    return path


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mixed_run(client, users, django_user_model) -> dict[str, str]:
    """Requests leaving every kind of record; the secrets they used."""
    alice = make_token("alice")
    post_graphql(
        client,
        "query Mine { me { username profile { phone fullName } } }",
        token=alice,
        headers={"X-Request-ID": "mix-read"},
    )
    post_graphql(
        client,
        'mutation Edit { updateProfile(phone: "555") { profile { phone } } }',
        token=alice,
        headers={"X-Request-ID": "mix-change"},
    )
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "alice-password"}, headers={"X-Request-ID": "mix-in"})
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "wrong-secret-pw"}, headers={"X-Request-ID": "mix-bad"})
    post_graphql(client, "{ me { username } }", token="not.a.token", headers={"X-Request-ID": "mix-token"})
    post_graphql(client, "{ me { username } }", headers={"X-Request-ID": "mix-anon"})
    post_graphql(client, "{ nope }", headers={"X-Request-ID": "mix-400"})
    post_graphql(
        client,
        "query %s { me { username } }" % "Q" * 3,
        token=alice,
        headers={"X-Request-ID": "mix-hostile"},
        variables={"x": HOSTILE},
    )
    post_graphql(client, LOGIN, variables={"u": HOSTILE, "p": "hostile-pw"}, headers={"X-Request-ID": "mix-hu"})
    root = django_user_model.objects.create_superuser("root", "root@example.org", "root-pw")
    client.force_login(root)
    client.get("/admin/gql_audit/securityevent/?kind__exact=login_failed", headers={"X-Request-ID": "mix-admin"})
    client.logout()
    return {"alice-password": "alice-password", "wrong": "wrong-secret-pw", "hostile": "hostile-pw", "jwt": alice}


def all_records() -> set[tuple[str, str]]:
    records = {("event", str(pk)) for pk in SecurityEvent.objects.values_list("pk", flat=True)}
    records |= {("entry", str(pk)) for pk in LogEntry.objects.values_list("pk", flat=True)}
    return records | {("reads", str(pk)) for pk in RequestReads.objects.values_list("pk", flat=True)}


def test_every_record_is_in_the_outbox_and_ships_as_valid_ocsf(client, users, django_user_model, exporting):
    before = all_records()  # the users' own change entries, written before EXPORT was set
    secrets = mixed_run(client, users, django_user_model)
    staged = {(row.kind, row.record_id) for row in OutboxEvent.objects.all()}
    kinds = {kind for kind, _ in staged}
    assert kinds == {"reads" if RequestReads.objects.exists() else "entry", "entry", "event"}
    # Every record written is in the outbox, once.
    records = all_records() - before
    assert staged == records and OutboxEvent.objects.count() == len(records)
    event_kinds = set(SecurityEvent.objects.values_list("kind", flat=True))
    assert {"login_succeeded", "login_failed", "token_invalid", "unauthenticated", "trail_accessed"} <= event_kinds

    call_command("gql_audit_ship")
    shipped = lines(exporting)
    assert len(shipped) == len(records)
    assert {event["metadata"]["uid"] for event in shipped} == {f"{k}:{pk}" for k, pk in records}
    for event in shipped:
        assert problems(event) == [], (event["metadata"]["uid"], problems(event))
    # Delivered to every sink: the outbox is empty, the sink's cursor at the end.
    assert not OutboxEvent.objects.exists()
    assert OutboxCursor.objects.exclude(sink__in=["sequence", "lease"]).get().seq == len(records)
    text = exporting.read_text(encoding="utf-8")
    for secret in secrets.values():
        assert secret not in text, secret
    # What each record is, in OCSF's words.
    by_request = {}
    for event in shipped:
        by_request.setdefault(event["metadata"].get("correlation_uid"), []).append(event)
    reads = [e for e in by_request["mix-read"] if e["class_uid"] == 6003]
    assert reads and all(e["activity_id"] == 2 and e["actor"]["user"]["name"] == "alice" for e in reads)
    resources = [r for e in reads for r in e["resources"]]
    assert any(
        r["type"] == "example_service.Profile" and r["data"]["fields"] == ["fullName", "phone"] for r in resources
    )
    [update] = [e for e in by_request["mix-change"] if e["class_uid"] == 6003 and e["activity_id"] == 3]
    assert update["resources"][0]["data"] == {"changed_fields": ["phone"]} and '"555"' not in json.dumps(update)
    [logon] = [e for e in by_request["mix-in"] if e["class_uid"] == 3002]
    assert (logon["activity_id"], logon["status_id"], logon["user"]["name"]) == (1, 1, "alice")
    [failed] = [e for e in by_request["mix-bad"] if e["class_uid"] == 3002]
    assert (failed["status_id"], failed["user"]["name"], failed["severity_id"]) == (2, "alice", 3)
    [admin] = by_request["mix-admin"]
    assert admin["class_uid"] == 6003 and admin["resources"][0]["name"] == "admin:gql_audit_securityevent_changelist"
    assert admin["actor"]["user"]["name"] == "root"
    [bad_request] = by_request["mix-400"]
    assert bad_request["class_uid"] == 6008


@pytest.mark.parametrize("export_format", ["ocsf", "json"])
def test_signed_checkpoints_are_exported_with_the_records(client, users, settings, tmp_path, export_format):
    from gql_audit.evidence import note
    from gql_audit.models import Checkpoint
    from tests.test_checkpoints import ORIGIN, configure, write_key

    keys = write_key(tmp_path, "log")
    anchor_dir = tmp_path / "anchor"
    anchor_dir.mkdir()
    configure(settings, keys, anchor_dir)
    path = tmp_path / "events.jsonl"
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EXPORT": {"format": export_format, "sinks": [f"file://{path}"]}}
    post_graphql(client, "{ me { username } }", token=make_token("alice"), headers={"X-Request-ID": "cp-read"})
    call_command("gql_audit_checkpoint", stdout=io.StringIO())
    call_command("gql_audit_checkpoint", stdout=io.StringIO())  # a heartbeat: a checkpoint of its own
    checkpoints = list(Checkpoint.objects.order_by("id"))
    assert len(checkpoints) == 2
    # Staged in the checkpoint's own transaction, beside the records.
    assert {("checkpoint", str(c.pk)) for c in checkpoints} <= {
        (row.kind, row.record_id) for row in OutboxEvent.objects.all()
    }

    call_command("gql_audit_ship")
    shipped = [event for event in lines(path) if '"checkpoint:' in json.dumps(event)]
    assert len(shipped) == 2
    public = note.public_key(ORIGIN, keys[2])
    for event, stored in zip(shipped, checkpoints, strict=True):
        if export_format == "ocsf":
            assert problems(event) == [], problems(event)
            assert event["metadata"]["uid"] == f"checkpoint:{stored.pk}"
            assert (event["class_uid"], event["activity_id"], event["status_id"]) == (6003, 1, 1)
            assert event["actor"]["user"]["name"] == "system"
            [resource] = event["resources"]
            assert resource["type"] == "checkpoint" and resource["uid"] == str(stored.tree_size)
            exported = resource["data"]
        else:
            assert event["uid"] == f"checkpoint:{stored.pk}" and event["record"] == "checkpoint"
            exported = event
        assert (exported["tree_size"], exported["root_hash"]) == (stored.tree_size, stored.root_hash)
        # What a SIEM receives is the signed note itself: it checks with the public key alone.
        assert exported["note"] == stored.note
        text, _ = note.open_note(exported["note"], [public])
        assert f"\n{stored.tree_size}\n" in text
    assert not OutboxEvent.objects.exists()


def test_hostile_values_travel_as_data(client, users, django_user_model, exporting):
    mixed_run(client, users, django_user_model)
    call_command("gql_audit_ship")
    raw = exporting.read_bytes()
    raw.decode("utf-8")  # valid UTF-8: a lone surrogate travels as its escape
    assert raw.count(b"\n") == len(lines(exporting))  # no value made a line of its own
    hostile = [e for e in lines(exporting) if e["metadata"].get("correlation_uid") == "mix-hu"]
    assert hostile and all(problems(e) == [] for e in hostile)
    assert any("<13>1 - - evil" in json.dumps(e, ensure_ascii=False) for e in hostile)


def test_the_json_format_is_the_plain_record(client, users, settings, exporting):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EXPORT": {**settings.GQL_AUDIT["EXPORT"], "format": "json"}}
    post_graphql(client, "{ me { profile { phone } } }", token=make_token("alice"), headers={"X-Request-ID": "js-1"})
    call_command("gql_audit_ship")
    shipped = [e for e in lines(exporting) if e["request_id"] == "js-1"]
    assert shipped and all(e["layout"] == 1 and e["actor"]["username"] == "alice" for e in shipped)
    if shipped[0]["record"] == "reads":
        [record] = shipped
        assert {(o["model"], tuple(o["fields"])) for o in record["objects"]} >= {
            ("example_service.Profile", ("phone",))
        }
    else:
        assert {e["object"]["model"] for e in shipped} == {"auth.User", "example_service.Profile"}


def test_without_export_nothing_is_staged(client, users, settings):
    post_graphql(client, "{ me { profile { phone } } }", token=make_token("alice"))
    post_graphql(client, "{ me { username } }", token="bad")
    assert RequestReads.objects.exists() or LogEntry.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_a_record_rolled_back_with_its_transaction_leaves_no_outbox_row(users, exporting):
    from django.db import transaction

    from example_service.models import Profile

    with pytest.raises(RuntimeError), transaction.atomic():
        profile = Profile.objects.get(user=users["alice"])
        profile.phone = "123"
        profile.save()
        assert OutboxEvent.objects.filter(kind="entry").exists()  # staged with the entry
        raise RuntimeError("rolled back")
    assert not OutboxEvent.objects.exists()


def test_a_record_gone_before_shipping_is_skipped_not_fatal(client, users, exporting, caplog):
    post_graphql(client, "{ me { username } }", token="bad", headers={"X-Request-ID": "gone-1"})
    post_graphql(client, "{ me { username } }", token="bad", headers={"X-Request-ID": "gone-2"})
    SecurityEvent.objects.filter(request_id="gone-1").delete()
    call_command("gql_audit_ship")
    ids = {e["metadata"].get("correlation_uid") for e in lines(exporting)}
    assert "gone-2" in ids and "gone-1" not in ids
    assert "no longer exists" in caplog.text and not OutboxEvent.objects.exists()


@pytest.mark.parametrize("kind", ["entry", "checkpoint"])
def test_an_outbox_row_naming_no_possible_key_is_skipped_not_fatal(client, users, exporting, caplog, kind):
    from django.utils import timezone

    post_graphql(client, "{ me { username } }", token="bad", headers={"X-Request-ID": "kept"})
    # Written by someone with the database's hands: not a key, out of the column's range.
    for record_id in ("9" * 40, "x\x01", "²", "-1"):
        OutboxEvent.objects.create(at=timezone.now(), kind=kind, record_id=record_id)
    call_command("gql_audit_ship")
    assert "kept" in {e["metadata"].get("correlation_uid") for e in lines(exporting)}
    assert "no longer exists" in caplog.text and not OutboxEvent.objects.exists()


def test_the_mapping_loads_every_kind_in_a_few_queries(client, users, exporting, django_assert_max_num_queries):
    for _ in range(5):
        post_graphql(client, "{ me { profile { phone } } }", token=make_token("alice"))
        post_graphql(client, "{ me { username } }", token="bad")
    rows = list(OutboxEvent.objects.values_list("kind", "record_id"))
    with django_assert_max_num_queries(4):
        found = load(rows, connection.alias)
    assert len(found) == len(rows)
    assert all(problems(ocsf.event(record)) == [] for record in found.values())


@pytest.mark.parametrize(
    "export, problem",
    [
        ("file:///x", "must be a dict"),
        ({"format": "cef", "sinks": ["file:///x"]}, "'format' is one of"),
        ({"format": "ocsf", "sinks": []}, "non-empty list"),
        ({"sinks": ["ftp://host/x"]}, "unknown sink scheme"),
        ({"sinks": ["file://relative/path"]}, "file:///absolute/path"),
        ({"sinks": ["syslog+tcp://host"]}, "names its port"),
        ({"sinks": ["https:///nohost"]}, "names no host"),
        ({"sinks": [{"url": "https://h/", "token": "x"}]}, "unknown sink option"),
        ({"sinks": [{"url": "https://h/", "headers": {"X": "a\r\nInjected: 1"}}]}, "no line break"),
        ({"sinks": ["file:///x"], "sink": []}, "unknown key"),
    ],
)
def test_a_malformed_export_is_a_system_check_error(settings, export, problem):
    from gql_audit.checks import check_export

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EXPORT": export}
    errors = check_export()
    assert [e.id for e in errors] and {e.id for e in errors} == {"gql_audit.E040"}
    assert any(problem in e.msg for e in errors), [e.msg for e in errors]


def test_sink_urls_are_shown_without_their_credentials():
    from gql_audit.export.sinks import parse_spec

    spec = parse_spec("https://user:s3cret@siem.example.org:8088/services/collector?token=abc")
    assert spec.public_url == "https://siem.example.org:8088/services/collector"
    assert (
        "s3cret" not in repr(spec.public_url)
        and spec.key == parse_spec("https://siem.example.org:8088/services/collector").key
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sealed", [False, True])
def test_on_postgresql_the_outbox_row_rides_in_the_reads_statement(client, users, settings, tmp_path, sealed):
    """In autocommit, a request's reads row, its outbox row (and its seal) are one statement:
    both are written, or neither."""
    from gql_audit.evidence import sealing
    from gql_audit.models import Seal

    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": "gql_audit",
        "EXPORT": {"sinks": [f"file://{tmp_path / 'x.jsonl'}"]},
        "TAMPER_EVIDENCE": {"key": "k" * 40} if sealed else None,
    }
    sealing.forget()
    writes = writes_of_a_request(client, make_token("alice"), "one-stmt")
    assert len(writes) == 1, [w[0][:120] for w in writes]
    sql_text, in_atomic, autocommit = writes[0]
    assert RequestReads._meta.db_table in sql_text and OutboxEvent._meta.db_table in sql_text
    assert (Seal._meta.db_table in sql_text) is sealed and not in_atomic and autocommit
    row = RequestReads.objects.get(request_id="one-stmt")
    assert OutboxEvent.objects.filter(kind="reads", record_id=str(row.pk)).count() == 1
    if sealed:
        from gql_audit.evidence.verify import verify

        assert verify().problems == []
