"""Create the demo users and documents, and say how to use them."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from example_service.models import Document, Profile

DEMO_USERS = [
    # username, password, full name, superuser
    ("alice", "alice-password", "Alice Example", False),
    ("bob", "bob-password", "Bob Example", False),
    ("admin", "admin-password", "Site Admin", True),
]


class Command(BaseCommand):
    help = "Create demo users (alice, bob, admin) and documents; safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true", help="Do not print the usage notes.")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL in the notes.")

    @transaction.atomic
    def handle(self, *args, quiet=False, url="", **options):
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
        if quiet:
            return
        base = url.rstrip("/")
        login = r'{"query": "mutation { tokenAuth(username: \"alice\", password: \"alice-password\") { token } }"}'
        change = r'{"query": "mutation { updateProfile(phone: \"+1 555 0100\") { profile { phone } } }"}'
        self.stdout.write(
            f"""
Demo data ready. Users: alice / alice-password, bob / bob-password, admin / admin-password.

GraphiQL:        {base}/graphql/
Get a token:     curl -s {base}/graphql/ -H 'Content-Type: application/json' \\
                   -d '{login}'
Use it:          curl -s {base}/graphql/ -H 'Content-Type: application/json' -H 'Authorization: JWT <token>' \\
                   -d '{change}'
Audit trail:     {base}/admin/auditlog/logentry/  (log in as admin / admin-password)
                 every entry's actor is the token's user, its cid the X-Request-ID of the response.
"""
        )
