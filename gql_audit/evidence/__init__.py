"""Evidence: what makes the audit trail something an auditor can check.

- :mod:`~gql_audit.evidence.sealing`: every record sealed as it is written
  (``TAMPER_EVIDENCE``), in HMAC chains;
- :mod:`~gql_audit.evidence.verify`: the check of those seals (``gql_audit_verify``).
"""

from __future__ import annotations
