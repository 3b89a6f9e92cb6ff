"""Print a token for a demo user: a valid one, or one that expired an hour ago."""

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from graphql_jwt.utils import jwt_encode, jwt_payload


class Command(BaseCommand):
    help = "Print a JSON Web Token for a demo user (--expired: one whose time ran out an hour ago)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expired", action="store_true", help="A token that expired an hour ago.")

    def handle(self, *args, username="", expired=False, **options):
        try:
            user = get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}: run seed_demo first") from None
        payload = jwt_payload(user)
        if expired:
            payload["exp"] = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        self.stdout.write(jwt_encode(payload))
