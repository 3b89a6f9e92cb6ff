"""Limits, the allow-list and throttling: what a request must pass before it runs.

One small module per protection, and one place where a request is admitted:

- :mod:`~gql_audit.protect.admission`: where a GraphQL request is admitted, for
  every view that executes GraphQL;
- :mod:`~gql_audit.protect.limits`: ``QUERY_LIMITS``;
- :mod:`~gql_audit.protect.logins`: ``THROTTLE`` for login attempts;
- :mod:`~gql_audit.protect.failures`: ``THROTTLE["auth_failures"]``, per address;
- :mod:`~gql_audit.protect.refusal`: what a refused request is told, and its events;
- :mod:`~gql_audit.protect.document`: a document, measured (cached per text);
- :mod:`~gql_audit.protect.manifest`: the persisted-operation manifest;
- :mod:`~gql_audit.protect.counters`: rates counted in Django's cache;
- :mod:`~gql_audit.protect.views`: which views execute GraphQL;
- :mod:`~gql_audit.protect.checks`: their system checks.
"""
