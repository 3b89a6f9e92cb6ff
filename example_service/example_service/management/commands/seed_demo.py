"""Create the demo users and documents, and say how to use them."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from example_service.models import Document, Profile

DEMO_USERS = [
    # username, password, full name, superuser
    ("alice", "alice-password", "Alice Example", False),
    ("bob", "bob-password", "Bob Example", False),
    ("admin", "admin-password", "Site Admin", True),
]

#: A staff user who may view, never change, the audit records and the audited objects.
AUDITOR = ("auditor", "auditor-password")
AUDITOR_PERMISSIONS = [
    ("gql_audit", "view_requestreads"),
    ("gql_audit", "view_securityevent"),
    ("auditlog", "view_logentry"),
    ("example_service", "view_profile"),
    ("example_service", "view_document"),
    ("auth", "view_user"),
]


class Command(BaseCommand):
    help = "Create demo users (alice, bob, admin, auditor) and documents; safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true", help="Do not print the usage notes.")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL in the notes.")
        parser.add_argument("--migrate", action="store_true", help="Apply migrations first (one start-up for both).")

    def execute(self, *args, **options):
        # Here, not in handle(): handle() runs in a transaction, and migrations bring their own.
        if options.get("migrate"):
            call_command("migrate", interactive=False, verbosity=0)
        return super().execute(*args, **options)

    @transaction.atomic
    def handle(self, *args, quiet=False, url="", migrate=False, **options):
        User = get_user_model()
        for username, password, full_name, is_superuser in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@example.org", "is_staff": is_superuser, "is_superuser": is_superuser},
            )
            if created:
                user.set_password(password)
                user.save()
            Profile.objects.get_or_create(user=user, defaults={"full_name": full_name})
            for classification in Document.Classification.values:
                Document.objects.get_or_create(
                    owner=user,
                    title=f"{full_name}: {classification} note",
                    defaults={"body": f"A {classification} document of {username}.", "classification": classification},
                )
        self.make_auditor(User)
        if quiet:
            return
        base = url.rstrip("/")
        login = r'{"query": "mutation { tokenAuth(username: \"alice\", password: \"alice-password\") { token } }"}'
        change = r'{"query": "mutation { updateProfile(phone: \"+1 555 0100\") { profile { phone } } }"}'
        self.stdout.write(
            f"""
Demo data ready. Users: alice / alice-password, bob / bob-password, admin / admin-password,
auditor / auditor-password (staff: may view the audit records, change nothing).
These are demo credentials: never create them on a real service.

GraphiQL:        {base}/graphql/
Get a token:     curl -s {base}/graphql/ -H 'Content-Type: application/json' \\
                   -d '{login}'
Use it:          curl -s {base}/graphql/ -H 'Content-Type: application/json' -H 'Authorization: JWT <token>' \\
                   -d '{change}'
Audit trail:     {base}/admin/  (log in as auditor / auditor-password, or admin / admin-password)
  Reads:         {base}/admin/gql_audit/requestreads/
  Changes:       {base}/admin/auditlog/logentry/
  Events:        {base}/admin/gql_audit/securityevent/
  One request:   {base}/admin/gql_audit/requestreads/trail/?request_id=<the response's X-Request-ID>
                 every record's actor is the token's user; a profile's, document's or user's
                 admin page links to its access history.
"""
        )

    def make_auditor(self, User):
        username, password = AUDITOR
        auditor, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.org", "is_staff": True}
        )
        if created:
            auditor.set_password(password)
            auditor.save()
        permissions = [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in AUDITOR_PERMISSIONS
        ]
        auditor.user_permissions.add(*permissions)
