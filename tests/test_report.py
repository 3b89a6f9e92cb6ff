"""The data-subject access report: exactly the reads and changes of one person's objects.

The records are made by real GraphQL requests through the Django test client
against the example service's schema, on its demo data (``seed_demo``), in
both access stores.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from example_service.models import Document, Profile
from gql_audit import history
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import RequestReads
from gql_audit.redaction import safe_text
from gql_audit.report import CSV_COLUMNS, ReportEntry, SubjectReport, subject_report, write_csv
from tests.conftest import ACCESS_STORES, make_token

pytestmark = pytest.mark.django_db
SUBJECTS = "example_service.subjects.subject_objects"


@pytest.fixture(autouse=True, params=ACCESS_STORES)
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param, "SUBJECT_OBJECTS": SUBJECTS}
    return request.param


@pytest.fixture
def demo():
    call_command("seed_demo", quiet=True)
    return {user.username: user for user in get_user_model().objects.all()}


def report(*args: str) -> str:
    out = io.StringIO()
    call_command("gql_audit_report", *args, stdout=out)
    return out.getvalue()


def traffic(gql, demo):
    """Requests of alice, bob and an anonymous client: alice's objects are read and changed by some."""
    alice, bob = make_token("alice"), make_token("bob")
    gql(
        "query Me { me { username profile { fullName } documents { edges { node { title } } } } }",
        token=alice,
        headers={"X-Request-ID": "alice-me"},
    )
    gql("query Listing { documents { title body } }", token=bob, headers={"X-Request-ID": "bob-list"})
    gql(
        'mutation Phone { updateProfile(phone: "+1 555 0100") { profile { phone } } }',
        token=alice,
        headers={"X-Request-ID": "alice-phone"},
    )
    gql("query Mine { me { profile { fullName } } }", token=bob, headers={"X-Request-ID": "bob-me"})
    gql("query Public { publicDocuments { title } }", headers={"X-Request-ID": "anonymous"})


def alice_objects(demo):
    alice = demo["alice"]
    return [alice, alice.profile, *Document.objects.filter(owner=alice)]


def test_the_report_lists_exactly_the_reads_and_changes_of_the_subjects_objects(gql, demo):
    traffic(gql, demo)
    alice = demo["alice"]
    doc = {d.classification: str(d.pk) for d in Document.objects.filter(owner=alice)}
    profile = str(alice.profile.pk)
    body = json.loads(report("--subject", "alice"))

    assert body["subject"] == f"auth.User:{alice.pk}" and body["subject_repr"] == "alice"
    assert set(body["objects"]) == {f"{o._meta.label}:{o.pk}" for o in alice_objects(demo)}
    reads = {
        (e["request_id"], e["model"], e["object_pk"], (e["actor"] or {}).get("username"), tuple(e["fields"]))
        for e in body["entries"]
        if e["action"] == "read"
    }
    user_label, doc_label, profile_label = "auth.User", "example_service.Document", "example_service.Profile"
    assert reads == {
        ("alice-me", user_label, str(alice.pk), "alice", ("documents", "profile", "username")),
        ("alice-me", profile_label, profile, "alice", ("fullName",)),
        *(("alice-me", doc_label, pk, "alice", ("title",)) for pk in doc.values()),
        # bob sees alice's public and internal documents, not her confidential one; his own profile is not hers.
        ("bob-list", doc_label, doc["public"], "bob", ("body", "title")),
        ("bob-list", doc_label, doc["internal"], "bob", ("body", "title")),
        ("alice-phone", profile_label, profile, "alice", ("phone",)),
        ("anonymous", doc_label, doc["public"], None, ("title",)),
    }
    # Changes: what auditlog itself holds for each of alice's objects, and nothing else.
    expected_changes = {
        entry.pk
        for obj in alice_objects(demo)
        for entry in LogEntry.objects.get_for_object(obj).exclude(action=LogEntry.Action.ACCESS)
    }
    changes = [e for e in body["entries"] if e["action"] != "read"]
    assert len(changes) == len(expected_changes) >= 6  # 5 creations by seed_demo, the phone update
    (update,) = [e for e in changes if e["request_id"] == "alice-phone"]
    assert update["action"] == "update" and update["model"] == profile_label and update["object_pk"] == profile
    assert update["fields"] == ["phone"] and "+1 555 0100" not in json.dumps(update)  # names, never values
    assert update["actor"] == {"id": str(alice.pk), "username": "alice"}
    assert update["operation"] == {"type": "mutation", "name": "Phone"} and update["remote_addr"] == "127.0.0.1"
    read = next(e for e in body["entries"] if e["request_id"] == "bob-list")
    assert read["operation"] == {"type": "query", "name": "Listing"} and read["remote_addr"] == "127.0.0.1"
    assert read["actor"] == {"id": str(demo["bob"].pk), "username": "bob"}
    times = [e["at"] for e in body["entries"]]
    assert times == sorted(times, reverse=True)
    assert not any(e["request_id"] == "bob-me" for e in body["entries"])


def test_a_subject_named_by_model_and_pk_and_without_subject_objects(gql, demo, settings):
    traffic(gql, demo)
    alice = demo["alice"]
    by_name = json.loads(report("--subject", "alice"))
    by_pk = json.loads(report("--subject", f"auth.User:{alice.pk}"))
    assert by_pk["entries"] == by_name["entries"]
    # A profile as the subject: it stands for itself. SUBJECT_OBJECTS takes a user (the
    # example's callable queries by user, and raised when it was given the profile).
    for setting in (SUBJECTS, None):
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SUBJECT_OBJECTS": setting}
        only_profile = json.loads(report("--subject", f"example_service.Profile:{alice.profile.pk}"))
        assert only_profile["objects"] == [f"example_service.Profile:{alice.profile.pk}"]
        assert {e["request_id"] for e in only_profile["entries"]} == {"alice-me", "alice-phone", ""}


def test_an_empty_report_of_a_user_without_subject_objects_says_why(demo, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SUBJECT_OBJECTS": None}
    LogEntry.objects.all().delete()  # the user's creation: a service not registering its user model has none
    out, err = io.StringIO(), io.StringIO()
    call_command("gql_audit_report", "--subject", "alice", "--format", "csv", stdout=out, stderr=err)
    assert out.getvalue().count("\n") == 1  # the header alone
    assert "SUBJECT_OBJECTS" in err.getvalue() and "auth.User:" in err.getvalue()
    # With the setting, or entries to show, nothing is said.
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SUBJECT_OBJECTS": SUBJECTS}
    err = io.StringIO()
    call_command("gql_audit_report", "--subject", "alice", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""


def test_since_keeps_the_recent_entries(gql, demo):
    from gql_audit.models import ReadObject, RequestReads

    traffic(gql, demo)
    old = "2020-01-01T00:00:00Z"
    LogEntry.objects.filter(cid="alice-phone").update(timestamp=old)
    reads = RequestReads.objects.filter(request_id="alice-phone")
    ReadObject.objects.filter(reads_id__in=list(reads.values_list("id", flat=True))).update(at=old)
    reads.update(at=old)
    recent = json.loads(report("--subject", "alice", "--since", "30d"))
    everything = json.loads(report("--subject", "alice"))
    assert {e["request_id"] for e in everything["entries"]} - {e["request_id"] for e in recent["entries"]} == {
        "alice-phone"
    }
    assert len(everything["entries"]) - len(recent["entries"]) == 2  # its read and its update
    assert recent["since"] is not None and everything["since"] is None


def test_csv_has_one_row_per_entry_and_defuses_formulas(gql, demo):
    attacker = get_user_model().objects.create_user(username='=HYPERLINK("http://evil/")', password="x")
    Profile.objects.create(user=attacker, full_name="+x")
    for name in ("-1+1", "@SUM(1)", "\tTAB"):
        get_user_model().objects.create_user(username=name, password="x")
    for name in (attacker.username, "-1+1", "@SUM(1)", "\tTAB"):
        gql("{ documents { title } }", token=make_token(name), headers={"X-Request-ID": f"r-{len(name)}"})
    rows = list(csv.reader(io.StringIO(report("--subject", "alice", "--format", "csv"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = json.loads(report("--subject", "alice"))
    assert len(rows) - 1 == len(body["entries"])
    usernames = {row[CSV_COLUMNS.index("actor_username")] for row in rows[1:]}
    assert {'\'=HYPERLINK("http://evil/")', "'-1+1", "'@SUM(1)", "'\tTAB"} <= usernames
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)


def test_the_report_costs_the_same_few_queries_whatever_the_number_of_objects(gql, demo, monkeypatch):
    traffic(gql, demo)
    alice = demo["alice"]
    with CaptureQueriesContext(connection) as few:
        small = subject_report(alice)
    Document.objects.bulk_create(Document(owner=alice, title=f"extra {n}") for n in range(40))
    query = "{ me { documents { edges { node { title } } } } }"
    gql(query, token=make_token("alice"), headers={"X-Request-ID": "many"})
    with CaptureQueriesContext(connection) as many:
        large = subject_report(alice)
    # The subject's objects, their reads (two statements: the rows found, then their
    # reads), the change entries per model, and the report's own trail_accessed event.
    assert len(many) == len(few) <= 13
    assert len(large.entries) == len(small.entries) + 1 + 43  # "many" read alice and her 3 + 40 documents
    # Looked up in chunks (the statement size limit), the report is the same.
    monkeypatch.setattr(history, "CHUNK", 3)
    assert subject_report(alice).entries == large.entries


def test_hostile_text_in_the_trail_is_written_as_data(gql, demo):
    # PostgreSQL stores neither NUL nor lone surrogates: those reach the report from SQLite only.
    name = "esc \x1b[31m \u202e rtl" if connection.vendor in POSTGRES_VENDORS else "nul\x00 and \ud800 and \x1b[31m"
    get_user_model().objects.create_user(username="hostile", password="x")
    gql("query Q { documents { title } }", token=make_token("hostile"), headers={"X-Request-ID": "hostile"})
    LogEntry.objects.filter(cid="hostile").update(additional_data={"gql_audit": {"actor": {"username": name}}})
    RequestReads.objects.filter(request_id="hostile").update(actor={"id": 0, "username": name})
    body = json.loads(report("--subject", "alice"))
    hostile = [e for e in body["entries"] if e["request_id"] == "hostile"]
    assert len(hostile) == 2  # alice's public and internal documents
    assert {e["actor"]["username"] for e in hostile} == {safe_text(name)}
    text = report("--subject", "alice", "--format", "csv")
    assert "\x00" not in text and "\ud800" not in text
    text.encode("utf-8")


def test_hostile_strings_in_entries_are_escaped_in_both_formats():
    hostile = "=cmd\x00\ud800\r\n"
    entry = ReportEntry(
        at=timezone.now(),
        action="read",
        model="m.M",
        object_pk=hostile,
        actor_id="1",
        actor_username=hostile,
        fields=[hostile],
        remote_addr=None,
        request_id=hostile,
        operation_type="query",
        operation_name=hostile,
    )
    made = SubjectReport(
        subject="m.M:1", subject_repr=hostile, since=None, generated_at=timezone.now(), objects=[], entries=[entry]
    )
    out = io.StringIO()
    write_csv(made, out)
    (row,) = list(csv.reader(io.StringIO(out.getvalue())))[1:]
    assert row[CSV_COLUMNS.index("actor_username")] == "'=cmd\\x00\\ud800\r\n"
    text = json.dumps(made.as_dict(), ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text)["entries"][0]["operation"]["name"] == "=cmd\\x00\\ud800\r\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subject", "nobody"], "No user has the username 'nobody'"),
        (["--subject", ""], "empty"),
        (["--subject", "auth.User:"], "neither a username nor"),
        (["--subject", "a:b"], "neither a username nor"),
        (["--subject", "nope.Model:1"], "No model nope.Model"),
        (["--subject", "auth.User:abc"], "not a valid primary key"),
        (["--subject", "auth.User:999999"], "No auth.User has the primary key '999999'"),
        (["--subject", "ali\x00ce"], "control characters"),
        (["--subject", "ali\ud800ce"], "invalid text"),
        (["--subject", "a" * 100_000], "longer than 1000 characters"),
        (["--subject", "auth.User:" + "9" * 400], "No auth.User has the primary key"),
        (["--subject", "alice", "--since", "9" * 400 + "d"], "--since reaches back more than 1000 years"),
        (["--subject", "alice", "--since", "99999999d"], "--since reaches back more than 1000 years"),
        (["--subject", "alice", "--since", "90"], "--since takes a number and a unit"),
        (["--subject", "alice", "--since", "0d"], "--since takes a number and a unit"),
        (["--subject", "alice", "--since=-5d"], "--since takes a number and a unit"),
        (["--subject", "alice", "--database", "elsewhere"], "not in DATABASES"),
    ],
)
def test_bad_input_is_a_clear_command_error(demo, args, message):
    with pytest.raises(CommandError) as caught:
        report(*args)
    assert message in str(caught.value)


def failing_subjects(user):
    raise RuntimeError("the CRM is down")


def not_models(user):
    return [user, {"id": 1}]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("nowhere.to.be.found", "SUBJECT_OBJECTS'] cannot be imported"),
        ("tests.test_report.failing_subjects", "raised RuntimeError: the CRM is down"),
        ("tests.test_report.not_models", "returned dict, not a model instance"),
        ("tests.test_report.SUBJECTS", "is not a callable"),
    ],
)
def test_a_broken_subject_objects_is_a_clear_command_error(demo, settings, setting, message):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SUBJECT_OBJECTS": setting}
    with pytest.raises(CommandError) as caught:
        report("--subject", "alice")
    assert message in str(caught.value)


def test_from_the_command_line_an_error_is_one_line_and_exit_status_1(demo, capsys):
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "gql_audit_report", "--subject", "nobody"]).execute()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "CommandError: No user has the username 'nobody'."


def test_history_in_bulk_skips_unsaved_objects_and_reads_of_still_refuses_them(gql, demo):
    traffic(gql, demo)
    alice = demo["alice"]
    assert history.reads_of_objects([Document(owner=alice)]) == []
    with pytest.raises(ValueError):
        history.reads_of(Document(owner=alice))
    document = alice.documents.get(classification="public")
    # Given twice, as an instance and as (model, pk): one object, its reads once.
    assert history.reads_of_objects([document, (Document, document.pk)]) == history.reads_of(document)
    assert [e.action for e in history.changes_of_objects([(Document, document.pk)])] == [LogEntry.Action.CREATE]
