"""The admin's lists on a million records of each kind, on PostgreSQL.

    DATABASE_URL=postgres://user:password@host:5432/scratch_db \\
        PYTHONPATH=.:example_service python -m bench.admin_million [--rows 1000000] [--keep]

Fills a scratch database (migrated here; its audit tables are emptied first)
with ``--rows`` reads, change entries and security events made by
``INSERT ... SELECT generate_series``, then loads each admin list with the
filters an auditor uses, through Django's test client, and prints the time of
each page and of its slowest statement (median of three loads after a warm-up).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

USERS = 1000
OBJECTS = 10_000


def fill(rows: int, *, entries: int | None = None, events: int | None = None) -> None:
    """``rows`` reads (one row a request, three objects each) and, unless told otherwise,
    as many change entries and security events, spread over the last 90 days."""
    entries = rows if entries is None else entries
    events = rows if events is None else events
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    from example_service.models import Document, Profile

    User = get_user_model()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE gql_audit_requestreads, gql_audit_readobject, gql_audit_securityevent, auditlog_logentry"
        )
    if User.objects.filter(username__regex=r"^bench-[0-9]+$").count() < USERS:
        User.objects.bulk_create(
            [User(username=f"bench-{n}", email=f"bench-{n}@example.org") for n in range(USERS)],
            ignore_conflicts=True,
        )
    user_ids = list(User.objects.filter(username__regex=r"^bench-[0-9]+$").order_by("pk").values_list("pk", flat=True))
    first, last = user_ids[0], user_ids[-1]
    assert last - first + 1 == USERS, "bench users are not contiguous: use a fresh database"
    profile = ContentType.objects.get_for_model(Profile).pk
    document = ContentType.objects.get_for_model(Document).pk
    statements = [
        # Reads: one row a request, three objects each, over the last 90 days.
        f"""
        INSERT INTO gql_audit_requestreads
            (id, at, request_id, actor_id, actor, remote_addr, operation, context, keys, shape_of, shapes)
        SELECT gen_random_uuid(),
               now() - (n * interval '90 days' / {rows}),
               'req-' || n,
               ({first} + n % {USERS})::text,
               jsonb_build_object('id', {first} + n % {USERS}, 'username', 'bench-' || (n % {USERS})),
               ('10.0.' || (n % 250) || '.' || (n % 200))::inet,
               jsonb_build_object('type', 'query', 'name', 'Op' || (n % 50), 'hash', md5(n::text)),
               jsonb_build_object('db', jsonb_build_object('vendor', 'postgresql', 'alias', 'default')),
               jsonb_build_array('example_service.profile:' || (n % {OBJECTS}),
                                 'example_service.document:' || (n % {OBJECTS}),
                                 'auth.user:' || ({first} + n % {USERS})),
               '[0, 1, 1]'::jsonb,
               CASE WHEN n % 10 = 0
                    THEN '[{{"fields": ["fullName", "phone"], "paths": ["me.profile"]}},
                           {{"fields": ["title"], "paths": ["documents"]}}]'::jsonb
                    ELSE '[{{"fields": ["fullName"], "paths": ["me.profile"]}},
                           {{"fields": ["title"], "paths": ["documents"]}}]'::jsonb END
        FROM generate_series(1, {rows}) AS n
        """,
        f"""
        INSERT INTO gql_audit_securityevent
            (id, created_at, kind, severity, request_id, actor_id, remote_addr, operation, path, message, sqlstate,
             details)
        SELECT gen_random_uuid(),
               now() - (n * interval '90 days' / {events}),
               (ARRAY['token_invalid', 'token_expired', 'unauthenticated', 'forbidden', 'graphql_error',
                      'db_error', 'login_failed'])[1 + n % 7],
               'warning',
               'req-' || n,
               CASE WHEN n % 3 = 0 THEN NULL ELSE {first} + n % {USERS} END,
               ('10.0.' || (n % 250) || '.' || (n % 200))::inet,
               jsonb_build_object('type', 'mutation', 'name', 'Op' || (n % 50)),
               'updateDocument',
               'Only the owner may change a document.',
               '',
               CASE WHEN n % 3 = 0 THEN '{{"count": 1}}'::jsonb
                    ELSE jsonb_build_object('count', 1, 'actor',
                         jsonb_build_object('id', {first} + n % {USERS}, 'username', 'bench-' || (n % {USERS}))) END
        FROM generate_series(1, {events}) AS n
        """,
        f"""
        INSERT INTO auditlog_logentry
            (content_type_id, object_pk, object_id, object_repr, action, changes, changes_text, actor_id, cid,
             remote_addr, timestamp, additional_data, actor_email, serialized_data)
        SELECT CASE WHEN n % 2 = 0 THEN {profile} ELSE {document} END,
               (n % {OBJECTS})::text, n % {OBJECTS}, 'object ' || (n % {OBJECTS}),
               n % 4,
               CASE WHEN n % 4 = 1 THEN '{{"phone": ["1", "2"]}}'::jsonb
                    WHEN n % 4 = 0 THEN '{{"title": [null, "t"]}}'::jsonb ELSE NULL END,
               '',
               {first} + n % {USERS},
               'req-' || n,
               ('10.0.' || (n % 250) || '.' || (n % 200))::inet,
               now() - (n * interval '90 days' / {entries}),
               jsonb_build_object('gql_audit', jsonb_build_object(
                   'request_id', 'req-' || n,
                   'operation', jsonb_build_object('type', 'mutation', 'name', 'Op' || (n % 50)),
                   'actor', jsonb_build_object('id', {first} + n % {USERS}, 'username', 'bench-' || (n % {USERS})),
                   'fields', CASE WHEN n % 4 = 3 THEN '["phone"]'::jsonb ELSE NULL END)),
               'bench-' || (n % {USERS}) || '@example.org',
               NULL
        FROM generate_series(1, {entries}) AS n
        """,
        "ANALYZE gql_audit_requestreads, gql_audit_securityevent, auditlog_logentry",
    ]
    with connection.cursor() as cursor:
        for sql in statements:
            started = time.perf_counter()
            cursor.execute(sql)
            print(f"  filled in {time.perf_counter() - started:6.1f} s: {sql.split()[2]}")


def pages() -> list[tuple[str, str]]:
    from auditlog.models import LogEntry

    reads, entries, events = (
        "/admin/gql_audit/requestreads/",
        "/admin/auditlog/logentry/",
        "/admin/gql_audit/securityevent/",
    )
    access = LogEntry.Action.ACCESS
    month_ago = (datetime.date.today() - datetime.timedelta(days=30)).isoformat()
    return [
        ("reads: newest", reads),
        ("reads: by actor", reads + "?actor=bench-500"),
        ("reads: by object", reads + "?object=example_service.Profile:4242"),
        ("reads: by request id", reads + "?request_id=req-777777"),
        ("reads: last 24 hours", reads + "?within=24h"),
        ("reads: one day a month ago", reads + f"?since={month_ago}&until={month_ago}"),
        ("reads: by field read", reads + "?field=phone"),
        ("reads: field never read (scan)", reads + "?field=dateOfBirth"),
        ("reads: field never read, 7 days", reads + "?field=dateOfBirth&within=7d"),
        ("reads: deleted actor (snapshot)", reads + "?actor=bench-7&gone=1"),
        ("reads: unknown actor (scan)", reads + "?actor=nobody-such"),
        ("reads: actor and 7 days", reads + "?actor=bench-500&within=7d"),
        ("reads: page 100", reads + "?p=100"),
        ("entries: newest", entries),
        ("entries: by action (access)", entries + f"?action__exact={access}"),
        ("entries: by actor", entries + "?actor=bench-500"),
        ("entries: deleted actor (snapshot)", entries + "?actor=bench-7&gone=1"),
        ("entries: by object", entries + "?object=example_service.Profile:4242"),
        ("entries: by object type", entries + "?resource_type=%s"),
        ("entries: by request id", entries + "?request_id=req-777777"),
        ("entries: search 'phone'", entries + "?q=phone"),
        ("entries: search, no match (scan)", entries + "?q=dateOfBirth"),
        ("entries: last 24 hours", entries + "?within=24h"),
        ("events: newest", events),
        ("events: by kind", events + "?kind__exact=forbidden"),
        ("events: by kind and actor", events + "?kind__exact=forbidden&actor=bench-500"),
        ("events: deleted actor (snapshot)", events + "?actor=bench-7&gone=1"),
        ("events: by request id", events + "?request_id=req-777777"),
        ("events: last 24 hours", events + "?within=24h"),
        ("trail of one request", "/admin/gql_audit/requestreads/trail/?request_id=req-777777"),
        ("access history of one object", "/admin/example_service/profile/4242/access-history/"),
    ]


def measure(loads: int) -> list[tuple[str, float, float, int]]:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from example_service.models import Profile

    User = get_user_model()
    root, _ = User.objects.get_or_create(username="bench-root", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(root)
    profile_type = ContentType.objects.get_for_model(Profile).pk
    results = []
    # The profile whose access history is shown: 100 reads and 100 change entries in the tables.
    owner = User.objects.get(username="bench-42")
    Profile.objects.get_or_create(pk=4242, defaults={"user": owner, "full_name": "Bench Profile"})
    # "bench-7" deleted: its records keep the snapshot (the foreign keys of entries and events go NULL).
    gone = User.objects.filter(username="bench-7").first()
    if gone is not None:
        gone_id = gone.pk
        gone.delete()
        print(f"  deleted user bench-7 (id {gone_id})")
    for name, url in pages():
        url = url.replace("%s", str(profile_type)).replace("&gone=1", "")
        assert client.get(url).status_code == 200, url  # warm-up
        totals, slowest, statements = [], [], 0
        for _ in range(loads):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                totals.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
            slowest.append(max(float(q["time"]) for q in queries.captured_queries))
            statements = len(queries.captured_queries)
        results.append((name, statistics.median(totals) * 1000, statistics.median(slowest) * 1000, statements))
    return results


def on_scratch_database(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, once the example service is set up and migrated on ``DATABASE_URL``."""
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        parser.error("DATABASE_URL must name a scratch PostgreSQL database")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_service.settings")
    os.environ.setdefault("EXAMPLE_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["testserver"]
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--no-fill", action="store_true", help="measure the rows already there")
    args = on_scratch_database(parser)
    if not args.no_fill:
        print(f"Filling {args.rows:,} reads, change entries and security events")
        fill(args.rows)
    print(f"{'page':32} {'page ms':>8} {'slowest SQL ms':>15} {'statements':>11}")
    for name, total, slowest, statements in measure(args.loads):
        print(f"{name:32} {total:8.1f} {slowest:15.1f} {statements:11d}")


if __name__ == "__main__":
    main()
