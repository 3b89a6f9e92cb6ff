"""Database settings from the environment, shared by the tests and the benchmarks."""

import os


def postgres_from_environment(test_name):
    """A PostgreSQL ``DATABASES`` entry from libpq's variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "localhost"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "NAME": os.environ.get("PGDATABASE", "gql_audit"),
        "TEST": {"NAME": test_name},
    }
