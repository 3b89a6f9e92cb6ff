"""django-cockroachdb's backend on a PostgreSQL server (``GQL_AUDIT_TEST_DB=cockroachdb``).

CockroachDB's Django backend on PostgreSQL, not CockroachDB: see ``base.py``.
"""
