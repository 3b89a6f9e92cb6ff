"""``EXPORT``: every record shipped to a SIEM, at least once, in order, from an outbox.

One module a job:

- :mod:`~gql_audit.export.outbox`: the outbox rows, written in the same write as the records;
- :mod:`~gql_audit.export.records`: the records an outbox names, loaded and laid out as plain JSON
  (the ``"json"`` format);
- :mod:`~gql_audit.export.ocsf`: the same records as OCSF 1.x events (the ``"ocsf"`` format);
- :mod:`~gql_audit.export.sinks`: where events go, one module a URL scheme behind one interface
  (``file``, ``syslog+tcp``, ``syslog+tls``, ``https``);
- :mod:`~gql_audit.export.ship`: the shipper ``manage.py gql_audit_ship`` runs.

Nothing here is imported by ``gql_audit`` itself when ``EXPORT`` is unset, but the outbox's
few lines the store calls.
"""
