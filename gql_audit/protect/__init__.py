"""Limits, the allow-list and throttling: what a request must pass before it runs.

One place where a request is admitted, and one small module per protection, each
with one entry point that admission calls (as strawberry's extensions and
django-axes' handlers are laid out):

- :mod:`~gql_audit.protect.admission`: where every GraphQL request is admitted,
  for every view that executes GraphQL, on the request as received; and the late
  check of a document a view read in a way of its own;
- :mod:`~gql_audit.protect.limits`: ``QUERY_LIMITS`` (size, batch, depth, aliases,
  fields, directives, tokens, cost);
- :mod:`~gql_audit.protect.cost`: the cost estimate (the GraphQL cost directive specification);
- :mod:`~gql_audit.protect.logins`: ``THROTTLE`` for login attempts;
- :mod:`~gql_audit.protect.operations`: ``THROTTLE["operations"]``, per actor;
- :mod:`~gql_audit.protect.failures`: ``THROTTLE["auth_failures"]``, per address;
- :mod:`~gql_audit.protect.csrf`: a session cookie believed only with a passing CSRF check;
- :mod:`~gql_audit.protect.refusal`: what a refused request is told, and its events;
- :mod:`~gql_audit.protect.request`: what an HTTP request asks to run, read as received;
- :mod:`~gql_audit.protect.views`: which views execute GraphQL;
- :mod:`~gql_audit.protect.manifest`: the persisted-operation manifest;
- :mod:`~gql_audit.protect.document`: a document, measured (cached per text);
- :mod:`~gql_audit.protect.counters`: rates counted in Django's cache, within ``THROTTLE_TIMEOUT``;
- :mod:`~gql_audit.protect.checks`: their system checks (tag ``security``).
"""
