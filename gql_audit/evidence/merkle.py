"""Merkle trees as RFC 6962 and RFC 9162 hash them: roots, inclusion and consistency proofs.

A leaf's hash is ``SHA-256(0x00 || leaf)``, a node's ``SHA-256(0x01 || left || right)``,
the empty tree's ``SHA-256()``. A tree of ``n`` leaves splits at ``k``, the largest
power of two below ``n``. Proofs are built as RFC 6962 section 2.1 builds them (``PATH``,
``SUBPROOF``) and checked as RFC 9162 sections 2.1.3.2 and 2.1.4.2 check them.

Pure Python and ``hashlib``: an auditor's machine needs nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "Frontier",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(hashes: Sequence[bytes]) -> bytes:
    """The root (``MTH``) of the tree whose leaf hashes are ``hashes``."""
    frontier = Frontier()
    for value in hashes:
        frontier.append(value)
    return frontier.root()


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """``PATH(index, D[n])``: the audit path of leaf ``index`` in the tree of ``hashes``."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"leaf {index} is not in a tree of {len(hashes)}")
    path: list[bytes] = []
    low, high = 0, len(hashes)
    # From the root down, each sibling subtree's root; the path lists them leaf first.
    while high - low > 1:
        k = _split(high - low)
        if index - low < k:
            path.append(root(hashes[low + k : high]))
            high = low + k
        else:
            path.append(root(hashes[low : low + k]))
            low += k
    return path[::-1]


def consistency_proof(first: int, hashes: Sequence[bytes]) -> list[bytes]:
    """``PROOF(first, D[n])``: that the tree of the first ``first`` leaves is a prefix of
    the tree of ``hashes``."""
    n = len(hashes)
    if not 0 <= first <= n:
        raise ValueError(f"a tree of {first} is not a prefix of a tree of {n}")
    if first in (0, n):
        return []
    proof: list[bytes] = []
    low, high, m, whole = 0, n, first, True
    # SUBPROOF(m, D[low:high], whole), unrolled; its parts come out root first.
    while m != high - low:
        k = _split(high - low)
        if m <= k:
            proof.append(root(hashes[low + k : high]))
            high = low + k
        else:
            proof.append(root(hashes[low : low + k]))
            low, m, whole = low + k, m - k, False
    if not whole:
        proof.append(root(hashes[low:high]))
    return proof[::-1]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: whether ``proof`` shows the leaf hash ``leaf`` at ``index``
    in the tree of ``size`` leaves whose root is ``expected_root``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: whether ``proof`` shows the tree of ``first`` leaves
    (``first_root``) to be a prefix of the tree of ``second`` leaves (``second_root``).
    An empty tree is a prefix of any; a tree is one of itself when the roots are equal."""
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not proof and (second > 0 or first_root == second_root == EMPTY_ROOT)
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the first tree is a subtree of the second
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


class Frontier:
    """A tree's right edge: the roots of its perfect subtrees, largest first, from which
    leaves are appended and its root computed in ``O(log n)``, without the leaves."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        #: ``(leaves, root)`` of each perfect subtree, left to right.
        self.subtrees: list[tuple[int, bytes]] = []
        values = list(hashes)
        for bit in range(size.bit_length() - 1, -1, -1):
            if size >> bit & 1:
                if not values:
                    raise ValueError(f"a tree of {size} has {bin(size).count('1')} subtrees on its edge")
                self.subtrees.append((1 << bit, values.pop(0)))
        if values:
            raise ValueError(f"a tree of {size} has {bin(size).count('1')} subtrees on its edge")

    def append(self, leaf: bytes) -> None:
        """Append a leaf by its hash."""
        subtrees = self.subtrees
        subtrees.append((1, leaf))
        while len(subtrees) > 1 and subtrees[-1][0] == subtrees[-2][0]:
            (width, right), (_, left) = subtrees.pop(), subtrees.pop()
            subtrees.append((width * 2, node_hash(left, right)))
        self.size += 1

    def root(self) -> bytes:
        if not self.subtrees:
            return EMPTY_ROOT
        value = self.subtrees[-1][1]
        for _, left in reversed(self.subtrees[:-1]):
            value = node_hash(left, value)
        return value

    def hashes(self) -> list[bytes]:
        """The subtrees' roots, left to right: with the size, all that resuming needs."""
        return [value for _, value in self.subtrees]
