"""Exact and near-duplicate detection for prompts."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH

_NOT_TEXT = re.compile(r"[\W_]+", re.UNICODE)
SHINGLE_CHARS = 3


def normalize_text(text: str) -> str:
    """NFKC, lower case, no whitespace or punctuation: two prompts equal here are exact duplicates."""
    return _NOT_TEXT.sub("", unicodedata.normalize("NFKC", text).lower())


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:20]


def shingles(text: str, size: int = SHINGLE_CHARS) -> set[str]:
    normalized = normalize_text(text)
    if len(normalized) <= size:
        return {normalized}
    return {normalized[i : i + size] for i in range(len(normalized) - size + 1)}


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int, seed: int = 1) -> list[int | None]:
    """For each text, the index of an earlier text it nearly duplicates (estimated Jaccard similarity of
    character 3-gram sets at or above threshold), else None. Earlier texts are kept first."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures: list[MinHash] = []
    duplicate_of: list[int | None] = []
    for index, text in enumerate(texts):
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch([s.encode() for s in shingles(text)])
        signatures.append(signature)
        candidates = [int(c) for c in lsh.query(signature)]
        match = min((c for c in candidates if signatures[c].jaccard(signature) >= threshold), default=None)
        duplicate_of.append(match)
        if match is None:
            lsh.insert(str(index), signature)
    return duplicate_of
