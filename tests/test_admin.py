"""The admin as an auditor's tool: records made by real GraphQL requests, read back through the admin pages."""

from __future__ import annotations

import functools
import re

import pytest
from auditlog.models import LogEntry
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from graphql_relay import to_global_id

from example_service.models import Document, Profile
from gql_audit import admin as audit_admin
from gql_audit.models import RequestReads, SecurityEvent
from tests.conftest import make_token

pytestmark = pytest.mark.django_db

READS = "/admin/gql_audit/requestreads/"
ENTRIES = "/admin/auditlog/logentry/"
EVENTS = "/admin/gql_audit/securityevent/"
TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(user)
    return user


def run(gql, query, user, request_id, **kwargs):
    body = gql(query, token=make_token(user), headers={"X-Request-ID": request_id}, **kwargs)
    return body


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_auditlogs_admin_is_replaced_a_services_own_kept():
    import auditlog.admin

    assert type(django_admin.site.get_model_admin(LogEntry)) is audit_admin.LogEntryAdmin
    site = django_admin.AdminSite(name="auditlogs")
    site.register(LogEntry, auditlog.admin.LogEntryAdmin)
    audit_admin.replace_auditlogs_admin(site)
    assert type(site.get_model_admin(LogEntry)) is audit_admin.LogEntryAdmin

    class ServicesOwn(django_admin.ModelAdmin):
        pass

    site = django_admin.AdminSite(name="services")
    site.register(LogEntry, ServicesOwn)
    audit_admin.replace_auditlogs_admin(site)
    assert type(site.get_model_admin(LogEntry)) is ServicesOwn


@pytest.mark.parametrize("path", [READS, ENTRIES, EVENTS])
def test_read_only_for_superusers(client, root, users, gql, path):
    run(gql, "{ me { profile { phone } } }", "alice", "ro-1")
    record = {READS: RequestReads, ENTRIES: LogEntry, EVENTS: SecurityEvent}[path]
    if record is LogEntry:
        run(gql, 'mutation { updateProfile(phone: "1") { profile { phone } } }', "alice", "ro-2")
    if record is SecurityEvent:
        run(gql, "{ me { username } }", "nobody-such", "ro-3")
    obj = record.objects.first()
    assert obj is not None
    assert client.get(path + "add/").status_code == 403
    page = text(client.get(f"{path}{obj.pk}/change/"))
    assert 'name="_save"' not in page and "deletelink" not in page
    assert client.post(f"{path}{obj.pk}/change/", {}).status_code == 403
    assert client.get(f"{path}{obj.pk}/delete/").status_code == 403
    assert client.post(path, {"action": "delete_selected", "_selected_action": [obj.pk]}).status_code in (200, 302)
    assert record.objects.filter(pk=obj.pk).exists()


def test_a_read_shows_its_fields_address_operation_and_database(client, root, users, gql):
    run(gql, "query ProfileOfMe { me { username profile { phone fullName } } }", "alice", "read-1")
    row = RequestReads.objects.get(request_id="read-1")
    listing = text(client.get(READS))
    assert 'href="/admin/gql_audit/requestreads/trail/" class="gql-audit-find-request"' in listing
    assert "alice" in listing and "query ProfileOfMe" in listing and TIME.search(listing.encode())
    assert reverse("admin:gql_audit_trail") + "?request_id=read-1" in listing
    page = text(client.get(f"{READS}{row.pk}/change/"))
    for shown in ("phone", "fullName", "127.0.0.1", "ProfileOfMe", "query", connection.vendor, "alice"):
        assert shown in page, shown
    profile = users["alice"].profile
    assert f"/admin/example_service/profile/{profile.pk}/change/" in page


def test_an_access_entry_shows_fields_not_an_empty_change(client, root, users, gql, settings):
    # Reads are ACCESS entries only in the auditlog store: how auditlog's admin shows them.
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "auditlog"}
    run(gql, "query Mine { me { profile { phone } } }", "alice", "acc-1")
    entry = LogEntry.objects.get(cid="acc-1", action=LogEntry.Action.ACCESS, content_type__model="profile")
    page = text(client.get(f"{ENTRIES}{entry.pk}/change/"))
    assert "phone" in page and "127.0.0.1" in page and "Mine" in page and connection.vendor in page
    listing = text(client.get(ENTRIES + "?action__exact=%d" % LogEntry.Action.ACCESS))
    assert "read: phone" in listing


def test_search_for_a_field_finds_its_changes_and_its_reads(client, root, users, gql, settings):
    # auditlog's admin finds reads among its entries: only the auditlog store writes them there.
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "auditlog"}
    run(gql, 'mutation { updateProfile(phone: "+1 555") { profile { fullName } } }', "alice", "s-change")
    run(gql, "{ me { profile { phone } } }", "bob", "s-read")
    run(gql, "{ me { profile { fullName } } }", "bob", "s-other")
    listing = text(client.get(ENTRIES + "?q=phone"))
    assert "changed: phone" in listing and "read: phone" in listing
    assert "s-other" not in listing


@pytest.mark.parametrize("access_store", ["gql_audit", "auditlog"])
def test_the_trail_of_a_request_that_only_read(client, root, users, gql, settings, access_store):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": access_store}
    run(gql, "query OnlyReads { me { profile { phone } } }", "alice", "only-reads")
    page = text(client.get(reverse("admin:gql_audit_trail") + "?request_id=only-reads"))
    assert "Reads (2)" in page and "Change entries (0)" in page and "Security events (0)" in page
    assert "query OnlyReads" in page and "127.0.0.1" in page and connection.vendor in page


def test_request_id_filter_and_trail_link(client, root, users, gql):
    run(gql, "{ me { username } }", "alice", "rid-1")
    run(gql, "{ me { username } }", "bob", "rid-2")
    listing = text(client.get(READS + "?request_id=rid-1"))
    assert "rid-1" in listing and "rid-2" not in listing
    entries = text(client.get(ENTRIES + "?request_id=rid-1"))
    assert "rid-2" not in entries
    # Typed-in filters keep the others.
    both = text(client.get(READS + "?request_id=rid-1&actor=alice"))
    assert 'name="actor" value="alice"' in both and 'type="hidden" name="request_id" value="rid-1"' in both


def test_the_trail_joins_reads_changes_and_events(client, root, users, gql):
    bobs = users["bob"].documents.first()
    query = (
        'mutation Mixed { updateProfile(phone: "42") { profile { phone } } '
        'updateDocument(id: "%s", title: "x") { document { title } } }'
    )
    run(gql, query % to_global_id("DocumentNode", bobs.pk), "alice", "trail-1")
    page = text(client.get(reverse("admin:gql_audit_trail") + "?request_id=trail-1"))
    assert "Reads (1)" in page and "Change entries (1)" in page and "Security events (1)" in page
    assert "forbidden" in page and "Only the owner may change a document." in page
    assert "mutation Mixed" in page and "alice" in page and "phone" in page
    empty = text(client.get(reverse("admin:gql_audit_trail") + "?request_id=nothing-here"))
    assert "Nothing recorded" in empty


def test_security_events_username_seconds_whole_message_and_filters(client, root, users, gql):
    bobs = users["bob"].documents.first()
    query = 'mutation { updateDocument(id: "%s", title: "x") { document { title } } }'
    run(gql, query % to_global_id("DocumentNode", bobs.pk), "alice", "ev-1")
    run(gql, "{ me { username } }", "nobody-such", "ev-2")
    listing = text(client.get(EVENTS + "?kind=forbidden&actor=alice"))
    assert "ev-1" in listing and "ev-2" not in listing and TIME.search(listing.encode())
    assert re.search(r'<td class="field-username"><a href="[^"]+">alice</a>', listing)
    assert "ev-1" not in text(client.get(EVENTS + "?kind=forbidden&actor=bob"))
    assert "ev-1" in text(client.get(EVENTS + "?within=1h&since=2000-01-01&until=2999-12-31"))
    assert "ev-1" not in text(client.get(EVENTS + "?until=2000-01-01"))
    event = SecurityEvent.objects.get(request_id="ev-1")
    page = text(client.get(f"{EVENTS}{event.pk}/change/"))
    assert "Only the owner may change a document." in page and "alice" in page


@pytest.mark.django_db(transaction=True)
def test_a_deleted_users_entries_name_them_and_system_means_no_actor(client, users, gql, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    run(gql, 'mutation { updateProfile(phone: "7") { profile { phone } } }', "alice", "del-1")
    run(gql, "mutation { deleteAccount { ok } }", "alice", "del-2")
    Document.objects.create(owner=users["bob"], title="written by a job")
    client.force_login(root)
    entry = LogEntry.objects.get(cid="del-1", content_type__model="profile", action=LogEntry.Action.UPDATE)
    assert entry.actor_id is None
    page = text(client.get(f"{ENTRIES}{entry.pk}/change/"))
    assert "alice" in page
    listing = text(client.get(ENTRIES + "?actor=alice"))
    assert "del-1" in listing and "del-2" in listing and "system" not in listing
    job = LogEntry.objects.get(object_repr="written by a job")
    assert "system" in text(client.get(f"{ENTRIES}{job.pk}/change/"))


@pytest.mark.parametrize("access_store", ["gql_audit", "auditlog"])
def test_the_mixin_links_an_object_to_its_reads_and_changes(client, root, users, gql, settings, access_store):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": access_store}
    profile = users["alice"].profile
    run(gql, "{ me { profile { phone } } }", "bob", "mx-read-other")  # bob's own profile
    run(gql, "query Read { me { profile { phone fullName } } }", "alice", "mx-read")
    run(gql, 'mutation { updateProfile(phone: "9") { profile { phone } } }', "alice", "mx-change")
    change_page = text(client.get(f"/admin/example_service/profile/{profile.pk}/change/"))
    url = reverse("admin:example_service_profile_access_history", args=[profile.pk])
    assert url in change_page
    history = text(client.get(url))
    assert "mx-read" in history and "mx-change" in history and "mx-read-other" not in history
    assert "fullName" in history and "query Read" in history
    reads_url = re.search(r'href="([^"]+)">All reads of this object', history)[1].replace("&amp;", "&")
    reads_list = text(client.get(reads_url))
    assert "mx-read" in reads_list and "mx-read-other" not in reads_list


def test_the_mixin_needs_the_audit_permissions(client, users, django_user_model):
    staff = django_user_model.objects.create_user("editor", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_profile"))
    client.force_login(staff)
    profile = users["alice"].profile
    url = reverse("admin:example_service_profile_access_history", args=[profile.pk])
    assert url not in text(client.get(f"/admin/example_service/profile/{profile.pk}/change/"))
    assert client.get(url).status_code == 403
    assert client.get(reverse("admin:gql_audit_trail") + "?request_id=x").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_logentry", content_type__app_label="auditlog"))
    assert re.search(r"Changes \(\d+\)", text(client.get(url)))
    assert client.get(reverse("admin:example_service_profile_access_history", args=[99999])).status_code == 404


def test_hostile_operation_names_usernames_paths_render_escaped(client, root, users, gql, django_user_model):
    # PostgreSQL stores no NUL in text or jsonb (gql_audit removes it before writing): SQLite keeps it.
    nul = "\x00" if connection.vendor == "sqlite" else ""
    HOSTILE = f'<script>alert("x")</script>\x1b[31m{nul}\u202e\x7f'
    hostile_user = django_user_model.objects.create_user(username=HOSTILE, password="pw")
    Profile.objects.create(user=hostile_user, full_name=HOSTILE)
    # Records as gql_audit writes them, holding what a client or a user name could put there.
    operation = {"type": "query", "name": HOSTILE, "hash": HOSTILE}
    snapshot = {"id": hostile_user.pk, "username": HOSTILE}
    RequestReads.objects.create(
        at="2026-01-01T00:00:00Z",
        request_id="hostile-1",
        actor_id=str(hostile_user.pk),
        actor=snapshot,
        operation=operation,
        context={"client_cert": {"subject": HOSTILE}, "extra_data": {HOSTILE: HOSTILE}},
        keys=[f"example_service.profile:{HOSTILE}"],
        shape_of=[0],
        shapes=[{"fields": [HOSTILE], "paths": [HOSTILE]}],
    )
    event = SecurityEvent.objects.create(
        created_at="2026-01-01T00:00:00Z",
        kind="forbidden",
        severity="warning",
        request_id="hostile-1",
        actor=hostile_user,
        operation=operation,
        path=HOSTILE,
        message=HOSTILE * 50,
        details={"actor": snapshot, "deep": functools.reduce(lambda inner, _: [inner], range(60), HOSTILE)},
    )
    run(gql, 'mutation { updateProfile(phone: "1") { profile { phone } } }', HOSTILE, "hostile-1")
    pages = [READS, EVENTS, ENTRIES, reverse("admin:gql_audit_trail") + "?request_id=hostile-1"]
    pages += [f"{READS}{row.pk}/change/" for row in RequestReads.objects.filter(request_id="hostile-1")]
    pages += [f"{EVENTS}{event.pk}/change/"]
    pages += [f"{ENTRIES}{LogEntry.objects.filter(cid='hostile-1').first().pk}/change/"]
    pages += [reverse("admin:example_service_profile_access_history", args=[hostile_user.profile.pk])]
    for url in pages:
        page = text(client.get(url))
        assert "<script>alert" not in page, url
        assert "\x00" not in page and "\x1b" not in page, url
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\x1b[31m" in page, url
        assert "\x7f" not in page and "\u202e" not in page and ("\\x00" in page or not nul), url


def test_lists_never_count_a_whole_table(client, root, users, gql, monkeypatch):
    for number in range(7):
        run(gql, "{ me { username } }", "alice", f"count-{number}")
    monkeypatch.setattr(audit_admin.base, "COUNT_CAP", 5)
    for path in (READS, ENTRIES, EVENTS, READS + "?actor=alice", ENTRIES + "?action__exact=3"):
        with CaptureQueriesContext(connection) as queries:
            page = text(client.get(path))
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert all("LIMIT" in sql.upper() for sql in counts), counts
    assert "More than 5 records match" in text(client.get(READS))
    assert "More than" not in page or "?action__exact=3" in path


def test_object_type_filter_lists_the_registered_models(client, root):
    page = text(client.get(ENTRIES))
    assert "example_service.Document" in page and "example_service.Profile" in page


def test_object_filter_finds_the_reads_of_one_object(client, root, users, gql):
    run(gql, "{ me { profile { phone } } }", "alice", "obj-alice")
    run(gql, "{ me { profile { phone } } }", "bob", "obj-bob")
    profile = users["alice"].profile
    listing = text(client.get(READS + f"?object=example_service.Profile:{profile.pk}"))
    assert "obj-alice" in listing and "obj-bob" not in listing
    assert "obj-alice" in text(client.get(READS + "?field=phone"))
    assert "obj-alice" not in text(client.get(READS + "?field=body"))


@pytest.mark.parametrize(
    "value", ["%00", "a%00b", "%ED%A0%80", "%1b%5b31m", "x" * 5000, "%3Cscript%3E", "9" * 25, "%D9%A3"]
)
def test_hostile_filter_and_search_values_are_never_a_server_error(client, root, users, gql, value):
    run(gql, "{ me { username } }", "alice", "hv-1")
    urls = [
        f"{path}?{name}={value}"
        for path, names in (
            (READS, ["actor", "object", "field", "request_id", "since", "until"]),
            (ENTRIES, ["actor", "object", "request_id", "q", "resource_type"]),
            (EVENTS, ["actor", "request_id", "until"]),
        )
        for name in names
    ]
    urls.append(reverse("admin:gql_audit_trail") + f"?request_id={value}")
    for url in urls:
        response = client.get(url)
        assert response.status_code in (200, 302), (url[:80], response.status_code)
        if response.status_code == 200:
            assert b"<script>" not in response.content.split(b"</h1>")[-1].split(b'<div id="footer">')[0]


@pytest.mark.parametrize("access_store", ["gql_audit", "auditlog"])
def test_the_client_certificate_is_shown_on_reads_entries_and_events(client, root, users, settings, access_store):
    from urllib.parse import quote

    from gql_audit import mtls
    from tests.certs import make_ca, make_leaf
    from tests.conftest import post_graphql

    leaf = make_leaf(make_ca())
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": access_store,
        "CLIENT_CERT_SOURCE": "nginx",
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
    }
    headers = {
        "X-SSL-Client-Cert": quote(leaf.pem, safe=""),
        "X-SSL-Client-Verify": "SUCCESS",
        "X-Request-ID": "cert-1",
        "Authorization": f"JWT {make_token('alice')}",
    }
    query = 'mutation { updateProfile(phone: "3") { profile { phone } } updateDocument(id: "x") { document { id } } }'
    post_graphql(client, query, headers=headers, REMOTE_ADDR="10.1.2.3")
    fingerprint = mtls.ClientCertificate.from_pem(leaf.pem, verify="", source="").fingerprint_sha256
    if access_store == "gql_audit":
        read_page = f"{READS}{RequestReads.objects.get(request_id='cert-1').pk}/change/"
    else:
        read_page = f"{ENTRIES}{LogEntry.objects.get(cid='cert-1', action=LogEntry.Action.ACCESS).pk}/change/"
    change = LogEntry.objects.get(cid="cert-1", action=LogEntry.Action.UPDATE)
    pages = [read_page, f"{ENTRIES}{change.pk}/change/"]
    pages += [f"{EVENTS}{event.pk}/change/" for event in SecurityEvent.objects.filter(request_id="cert-1")]
    assert len(pages) >= 3
    for url in pages:
        page = text(client.get(url))
        assert fingerprint in page and "SUCCESS" in page and "10.1.2.3" in page, url
    assert fingerprint in text(client.get(reverse("admin:gql_audit_trail") + "?request_id=cert-1"))
