"""The admin answers an auditor precisely, and reading the trail is itself on the trail.

Records are made by real GraphQL requests; the admin pages are then read as an auditor
would read them. Each test holds for both access stores where reads are involved.
"""

from __future__ import annotations

import re

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from graphql_relay import to_global_id

from gql_audit.models import RequestReads, SecurityEvent
from tests.conftest import ACCESS_STORES, make_token, post_graphql

pytestmark = pytest.mark.django_db

READS = "/admin/gql_audit/requestreads/"
ENTRIES = "/admin/auditlog/logentry/"
EVENTS = "/admin/gql_audit/securityevent/"
LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(user)
    return user


@pytest.fixture(params=ACCESS_STORES)
def access_store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


@pytest.fixture
def own_store(settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}


def run(gql, query, user, request_id, **kwargs):
    return gql(query, token=make_token(user), headers={"X-Request-ID": request_id}, **kwargs)


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def rows(page: str) -> int:
    body = page.split('id="result_list"', 1)
    return body[1].split("</table>", 1)[0].count("<tr") - 1 if len(body) == 2 else 0


def events_of(kind: str, request_id: str | None = None):
    found = SecurityEvent.objects.filter(kind=kind)
    return list(found.filter(request_id=request_id) if request_id else found)


# -- filters that name nothing say so -----------------------------------------------------------


@pytest.mark.parametrize(
    "path, query, says",
    [
        (READS, "since=yesterday", "not a date or date-time"),
        (READS, "until=2026-13-01", "not a date or date-time"),
        (READS, "object=nomodel", "app_label.Model:pk"),
        (READS, "within=2h", "within is one of"),
        (READS, "object=example_service.Profile:abc", "is not a primary key"),
        (ENTRIES, "object=auth.User", "app_label.Model:pk"),
        (ENTRIES, "action__exact=nine", "Nothing is listed"),
        (EVENTS, "actr=alice", "Nothing is listed"),
        (EVENTS, "within=%00", "Nothing is listed"),
    ],
)
def test_a_filter_that_cannot_apply_lists_nothing_and_says_why(client, root, users, gql, own_store, path, query, says):
    run(gql, "{ me { profile { phone } } }", "alice", "nf-1")
    run(gql, 'mutation { updateProfile(phone: "1") { profile { phone } } }', "alice", "nf-2")
    run(gql, "{ me { username } }", "nobody-such", "nf-3")
    assert rows(text(client.get(path))) > 0
    response = client.get(f"{path}?{query}")
    page = text(response)  # never the redirect to the unfiltered list (?e=1)
    assert says in page and "Nothing is listed" in page, page[-3000:]
    assert rows(page) == 0 and "nf-" not in page.split('id="result_list"')[-1]


def test_an_unknown_actor_or_a_deleted_object_is_said_beside_what_matches(client, root, users, gql, own_store):
    run(gql, "{ me { profile { phone } } }", "alice", "who-1")
    page = text(client.get(READS + "?actor=alcie"))
    assert "no user has the username &#x27;alcie&#x27; now" in page and rows(page) == 0
    profile = users["alice"].profile
    pk = profile.pk
    key = f"example_service.Profile:{pk}"
    assert "who-1" in text(client.get(READS + "?object=" + key))
    profile.delete()
    page = text(client.get(READS + "?object=" + key))
    assert f"no example_service.Profile has the primary key &#x27;{pk}&#x27; now" in page
    assert "who-1" in page  # its past reads are still listed


# -- reads: per object, the fields read on it; objects by name -----------------------------------


def test_object_and_field_filters_match_the_field_read_on_that_object(client, root, users, gql, own_store):
    alice_profile = users["alice"].profile
    bobs_public = users["bob"].documents.get(classification="public")
    bob_doc = to_global_id("DocumentNode", bobs_public.pk)
    # Alice's name only; a phone read, but on bob's profile.
    mixed = '{ me { profile { fullName } } document(id: "%s") { owner { profile { phone } } } }' % bob_doc
    body = run(gql, mixed, "alice", "of-name-only")
    assert body["data"]["document"]["owner"]["profile"]["phone"] is not None or "errors" not in body
    run(gql, "{ me { profile { phone } } }", "alice", "of-phone")
    alice = f"example_service.Profile:{alice_profile.pk}"
    bob = f"example_service.Profile:{users['bob'].profile.pk}"
    page = text(client.get(READS + f"?object={alice}&field=phone"))
    assert "of-phone" in page and "of-name-only" not in page
    assert "of-name-only" in text(client.get(READS + f"?object={alice}&field=fullName"))
    assert "of-name-only" in text(client.get(READS + f"?object={bob}&field=phone"))
    # The field alone: exact names, not parts of them nor other letter cases.
    assert "of-phone" in text(client.get(READS + "?field=phone"))
    assert "of-phone" not in text(client.get(READS + "?field=Phone"))
    assert "of-phone" not in text(client.get(READS + "?field=pho"))


def test_the_reads_list_shows_each_objects_name_key_and_fields(client, root, users, gql, own_store):
    run(gql, "{ me { username profile { phone fullName } } }", "alice", "names-1")
    profile = users["alice"].profile
    page = text(client.get(READS + "?request_id=names-1"))
    cell = re.search(r'<td class="field-objects_read">(.*?)</td>', page, re.S)[1]
    assert f"Profile of {users['alice'].pk}" in cell and f"example_service.Profile {profile.pk}" in cell
    assert "fullName, phone" in cell and "alice" in cell  # the user, by name, with the field read on them
    # Filtered on one object, that object's fields come first.
    page = text(client.get(READS + f"?request_id=names-1&object=example_service.Profile:{profile.pk}"))
    cell = re.search(r'<td class="field-objects_read">(.*?)</td>', page, re.S)[1]
    assert cell.index("Profile of") < cell.index("username")


def test_the_trail_and_the_access_history_name_objects(client, root, users, gql, access_store):
    run(gql, "{ me { profile { phone } } }", "alice", "tn-1")
    trail = text(client.get(reverse("admin:gql_audit_trail") + "?request_id=tn-1"))
    assert f"Profile of {users['alice'].pk}" in trail


# -- time filters on the access history ---------------------------------------------------------


def test_the_access_history_has_time_filters(client, root, users, gql, access_store):
    profile = users["alice"].profile
    run(gql, "{ me { profile { phone } } }", "alice", "th-read")
    run(gql, 'mutation { updateProfile(phone: "2") { profile { phone } } }', "alice", "th-change")
    url = reverse("admin:example_service_profile_access_history", args=[profile.pk])
    page = text(client.get(url))
    assert "th-read" in page and "th-change" in page and 'name="since"' in page
    page = text(client.get(url + "?since=2000-01-01&until=2999-12-31"))
    assert "th-read" in page and "th-change" in page
    for window in ("until=2000-01-01", "since=2999-01-01"):
        page = text(client.get(f"{url}?{window}"))
        assert "th-read" not in page and "th-change" not in page and "Reads (0" in page
    page = text(client.get(url + "?since=yesterday"))
    assert "not a date or date-time" in page and "th-read" not in page
    # The link to the whole list keeps the window.
    assert "since=2000-01-01" in text(client.get(url + "?since=2000-01-01")).split("All reads of this object")[0]


# -- logins ---------------------------------------------------------------------------------------


def test_a_successful_login_is_an_event_naming_the_user_never_the_password(client, users):
    response = post_graphql(
        client, LOGIN, variables={"u": "alice", "p": "alice-password"}, headers={"X-Request-ID": "login-ok"}
    )
    assert response.json()["data"]["tokenAuth"]["token"]
    [event] = events_of("login_succeeded", "login-ok")
    assert event.severity == "info" and event.details["username"] == "alice"
    assert event.actor_id == users["alice"].pk
    stored = str(SecurityEvent.objects.filter(request_id="login-ok").values())
    assert "alice-password" not in stored and response.json()["data"]["tokenAuth"]["token"] not in stored
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "wrong"}, headers={"X-Request-ID": "login-bad"})
    assert not events_of("login_succeeded", "login-bad") and events_of("login_failed", "login-bad")


def test_failed_logins_show_and_filter_by_the_username_tried(client, root, users):
    client.logout()
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "guess"}, headers={"X-Request-ID": "fl-alice"})
    post_graphql(client, LOGIN, variables={"u": "ghost", "p": "guess"}, headers={"X-Request-ID": "fl-ghost"})
    client.force_login(root)
    page = text(client.get(EVENTS + "?kind__exact=login_failed"))
    assert re.search(r'<td class="field-username">alice <span class="gql-audit-tried">\(tried\)</span>', page)
    alice = text(client.get(EVENTS + "?actor=alice"))
    assert "fl-alice" in alice and "fl-ghost" not in alice
    ghost = text(client.get(EVENTS + "?actor=ghost"))  # nobody of that name: the attempts still are found
    assert "fl-ghost" in ghost and "fl-alice" not in ghost and "no user has the username" in ghost


# -- access to the trail is on the trail ---------------------------------------------------------


def test_opening_the_security_events_list_leaves_a_trail_accessed_event(client, root, users, gql):
    run(gql, "{ me { username } }", "nobody-such", "ta-1")
    response = client.get(EVENTS + "?kind__exact=token_invalid", headers={"X-Request-ID": "ta-list"})
    text(response)
    [event] = events_of("trail_accessed", "ta-list")
    assert event.details["page"] == "admin:gql_audit_securityevent_changelist"
    assert event.details["filters"] == {"kind__exact": "token_invalid"}
    assert event.actor_id == root.pk and event.details["actor"]["username"] == "root"


def test_every_page_of_audit_records_is_on_the_trail(client, root, users, gql, access_store):
    run(gql, 'mutation { updateProfile(phone: "5") { profile { phone } } }', "alice", "tp-1")
    profile = users["alice"].profile
    entry = LogEntry.objects.filter(cid="tp-1").first()
    pages = {
        "admin:auditlog_logentry_changelist": ENTRIES,
        "admin:auditlog_logentry_change": f"{ENTRIES}{entry.pk}/change/",
        "admin:gql_audit_trail": reverse("admin:gql_audit_trail") + "?request_id=tp-1",
        "admin:example_service_profile_access_history": reverse(
            "admin:example_service_profile_access_history", args=[profile.pk]
        ),
        "admin:gql_audit_requestreads_changelist": READS,
    }
    if RequestReads.objects.filter(request_id="tp-1").exists():
        row = RequestReads.objects.get(request_id="tp-1")
        pages["admin:gql_audit_requestreads_change"] = f"{READS}{row.pk}/change/"
    for number, (name, url) in enumerate(pages.items()):
        text(client.get(url, headers={"X-Request-ID": f"tp-page-{number}"}))
        [event] = events_of("trail_accessed", f"tp-page-{number}")
        assert event.details["page"] == name, (name, event.details)
    number = list(pages).index("admin:example_service_profile_access_history")
    history = events_of("trail_accessed", f"tp-page-{number}")
    assert history[0].details["object"] == f"example_service.Profile:{profile.pk}"
    # A page refused, or a redirect, shows nothing: no event.
    client.logout()
    client.get(EVENTS, headers={"X-Request-ID": "tp-anon"})
    assert not events_of("trail_accessed", "tp-anon")


def test_the_subject_report_is_on_the_trail(users, capsys):
    from django.core.management import call_command

    call_command("gql_audit_report", "--subject", "alice", "--since", "30d")
    [event] = events_of("trail_accessed")
    assert event.details["page"] == "subject_report"
    assert event.details["filters"]["subject"] == f"auth.User:{users['alice'].pk}"
