"""Evidence: what makes the audit trail something an auditor can check without trusting the service.

- :mod:`~gql_audit.evidence.sealing`: every record sealed as it is written
  (``TAMPER_EVIDENCE``), in HMAC chains numbered without a gap;
- :mod:`~gql_audit.evidence.verify`: the check of those seals (``gql_audit_verify``);
- :mod:`~gql_audit.evidence.merkle`: RFC 6962/9162 Merkle trees, inclusion and consistency proofs;
- :mod:`~gql_audit.evidence.note`: C2SP signed checkpoints (Ed25519);
- :mod:`~gql_audit.evidence.log`: the append-only log of every record and its checkpoints
  (``CHECKPOINTS``, ``gql_audit_checkpoint``), and the proofs ``gql_audit_prove`` prints;
- :mod:`~gql_audit.evidence.anchors`: where checkpoints are written outside the database;
- :mod:`~gql_audit.evidence.audit`: the check an auditor runs with the public key alone
  (``gql_audit_verify --public-key``);
- :mod:`~gql_audit.evidence.proof`: :func:`verify_proof`, the offline check of one proof.

Importing this package needs neither Django settings nor a database: :func:`verify_proof`
runs on an auditor's machine.
"""

from __future__ import annotations

from gql_audit.evidence.proof import verify_proof

__all__ = ["verify_proof"]
