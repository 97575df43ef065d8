"""Exact and near-duplicate detection for prompts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy.special import beta, betainc

SHINGLE_CHARS = 3
# (false positive, false negative): a missed duplicate counts four times an extra candidate
LSH_ERROR_WEIGHTS = (0.2, 0.8)


def banding_error_areas(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """The false-positive and false-negative areas of LSH banding with `bands` bands of `rows` rows.

    A pair of Jaccard similarity s shares at least one band with probability P(s) = 1 - (1 - s^r)^b.
    False positives: the area under P over [0, threshold]; false negatives: the area under 1 - P = (1 - s^r)^b
    over [threshold, 1] (the definitions of datasketch.lsh's `_false_positive_probability` and
    `_false_negative_probability`, which integrate numerically). Closed form: with u = s^r,
    the integral of (1 - s^r)^b from 0 to x is B(1/r, b + 1) * I(x^r; 1/r, b + 1) / r, where B is the beta
    function and I the regularized incomplete beta function."""
    whole = beta(1 / rows, bands + 1) / rows
    below_threshold = whole * betainc(1 / rows, bands + 1, threshold**rows)
    return threshold - below_threshold, whole - below_threshold


def lsh_bands_and_rows(threshold: float, num_perm: int, weights: tuple[float, float]) -> tuple[int, int]:
    """The bands b and rows r (b * r <= num_perm) that minimise the weighted error
    weights[0] * false-positive area + weights[1] * false-negative area of `banding_error_areas`, the first
    (smallest b, then r) of equal minima: the rule of datasketch's `MinHashLSH(threshold, num_perm, weights)`."""
    false_positive_weight, false_negative_weight = weights
    best_error, best = float("inf"), (0, 0)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive, false_negative = banding_error_areas(threshold, bands, rows)
            error = false_positive_weight * false_positive + false_negative_weight * false_negative
            if error < best_error:
                best_error, best = error, (bands, rows)
    return best


def normalized_texts(texts: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
    """normalize_text for a whole column at once (polars, no Python loop per row); equal normalized
    texts are exact duplicates."""
    return texts.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"[\W_]+", "")


def minhash_signatures(texts: Sequence[str], num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint64) of the character 3-gram sets of the normalized texts,
    computed column-wise: shingles and their 64-bit hashes in polars, each hash function a seeded
    multiply-shift ((a*h + b) mod 2^64, top 32 bits, a odd) as one vectorized numpy pass, the minimum
    per text by reduceat."""
    frame = pl.DataFrame({"text": normalized_texts(pl.Series(texts, dtype=pl.Utf8))}).with_row_index("row")
    grams = (
        frame.with_columns(
            start=pl.int_ranges(
                0, pl.max_horizontal(pl.col("text").str.len_chars().cast(pl.Int64) - SHINGLE_CHARS + 1, 1)
            )
        )
        .explode("start")
        .select("row", gram=pl.col("text").str.slice(pl.col("start"), SHINGLE_CHARS).hash(seed))
    )  # a repeated 3-gram cannot change a minimum, so the multiset needs no dedup; rows stay ascending
    hashes = grams["gram"].to_numpy().astype(np.uint64)
    starts = np.flatnonzero(np.diff(grams["row"].to_numpy(), prepend=-1))
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
    signatures = np.empty((len(texts), num_perm), dtype=np.uint64)
    permuted = np.empty_like(hashes)
    shift = np.uint64(32)
    with np.errstate(over="ignore"):  # multiplication modulo 2^64 is the hash function
        for k in range(num_perm):
            np.multiply(hashes, a[k], out=permuted)
            np.add(permuted, b[k], out=permuted)
            np.right_shift(permuted, shift, out=permuted)
            signatures[:, k] = np.minimum.reduceat(permuted, starts)
    return signatures


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int, seed: int = 1) -> list[int | None]:
    """For each text, the index of an earlier kept text it nearly duplicates (estimated Jaccard
    similarity of character 3-gram sets at or above threshold), else None. Earlier texts are kept first.
    Candidates come from LSH banding of the MinHash signatures (bands and rows by `lsh_bands_and_rows`,
    weighted against missed duplicates by `LSH_ERROR_WEIGHTS`: every candidate is verified on the full
    signature, so extra candidates cost little), then each pair is verified."""
    if not texts:
        return []
    signatures = minhash_signatures(texts, num_perm, seed)
    bands, rows = lsh_bands_and_rows(threshold, num_perm, LSH_ERROR_WEIGHTS)
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        boundaries = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        starts, ends = np.concatenate(([0], boundaries)), np.concatenate((boundaries, [len(keys)]))
        for group in np.flatnonzero(ends - starts > 1):  # only buckets that hold a candidate pair
            members = np.sort(order[starts[group] : ends[group]]).tolist()
            pairs.update((members[i], later) for i in range(len(members)) for later in members[i + 1 :])
    matches: dict[int, list[int]] = {}
    if pairs:
        earlier, later = np.array(sorted(pairs)).T
        similar = (signatures[earlier] == signatures[later]).mean(axis=1) >= threshold
        for i, j in zip(earlier[similar].tolist(), later[similar].tolist()):
            matches.setdefault(j, []).append(i)
    duplicate_of: list[int | None] = [None] * len(texts)
    for j in sorted(matches):
        duplicate_of[j] = min((i for i in matches[j] if duplicate_of[i] is None), default=None)
    return duplicate_of
