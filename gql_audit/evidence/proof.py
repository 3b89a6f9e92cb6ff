"""The offline check of an inclusion proof from ``gql_audit_prove``: no database, no settings.

A proof is the JSON ``gql_audit_prove KIND:ID`` prints::

    {"checkpoint": "<signed note>", "leaf": "<the leaf as text>", "leaf_index": 41,
     "tree_size": 1024, "proof": ["<hex>", ...]}

It holds when the checkpoint is signed by the public key given, names the tree size the
proof claims, and the leaf's hash (``SHA-256(0x00 || UTF-8 of the leaf)``) folds with
the proof's hashes to the checkpoint's root hash by RFC 9162's algorithm.
"""

from __future__ import annotations

from typing import Any

from gql_audit.evidence import merkle, note

#: More hashes than this cannot be an inclusion proof: trees hold fewer than 2**64 leaves.
MAX_PROOF = 64


def verify_proof(proof: Any, public_key_pem: str | bytes) -> bool:
    """Check an inclusion proof printed by ``gql_audit_prove`` (parsed JSON) against the
    log's Ed25519 public key (PEM, as ``str`` or ``bytes``).

    Returns True when the record's leaf is in the signed checkpoint; raises ``ValueError``
    naming what failed otherwise. Needs no database and no Django settings.
    """
    if not isinstance(proof, dict):
        raise ValueError("a proof is a JSON object")
    note_text, leaf, index, size, path = (
        proof.get(name) for name in ("checkpoint", "leaf", "leaf_index", "tree_size", "proof")
    )
    if not isinstance(note_text, str) or not isinstance(leaf, str):
        raise ValueError("a proof has 'checkpoint' and 'leaf' as text")
    if not isinstance(index, int) or isinstance(index, bool) or not isinstance(size, int) or isinstance(size, bool):
        raise ValueError("a proof has 'leaf_index' and 'tree_size' as whole numbers")
    if not isinstance(path, list) or len(path) > MAX_PROOF or not all(isinstance(h, str) for h in path):
        raise ValueError("a proof has 'proof' as a list of hex hashes")
    try:
        hashes = [bytes.fromhex(h) for h in path]
    except ValueError:
        raise ValueError("a proof's hashes are not hex") from None
    if any(len(h) != 32 for h in hashes):
        raise ValueError("a proof's hashes are not 32 bytes each")
    key = note.load_public_key(public_key_pem)
    # The log signs under its origin, the checkpoint's first line.
    origin = note_text.split("\n", 1)[0]
    if not note.valid_name(origin):
        raise ValueError("checkpoint origin is not a key name")
    signed, _ = note.open_note(note_text, [note.public_key(origin, key)])
    checkpoint = note.parse_checkpoint(signed)
    if checkpoint.size != size:
        raise ValueError(f"tree size {size} is not the checkpoint's ({checkpoint.size})")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size}")
    try:
        leaf_bytes = leaf.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the leaf is not valid UTF-8") from None
    if not merkle.verify_inclusion(index, size, merkle.leaf_hash(leaf_bytes), hashes, checkpoint.root):
        raise ValueError("inclusion proof does not lead to the checkpoint's root hash")
    return True
