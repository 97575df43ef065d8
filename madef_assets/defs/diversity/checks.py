"""Gates for attack_prompts: every required category present and no duplicates left (both blocking). The
duplicate gate re-checks the dedup by other means than the dedup itself used: exact duplicates by hashes of
Python's normalization (the dedup used a polars expression), near duplicates by exact Jaccard similarity of
3-gram sets between neighbours in two sorted orders (the dedup used MinHash with LSH banding)."""

import hashlib
from collections import deque
from dataclasses import dataclass

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.diversity.dedup import SHINGLE_CHARS
from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.defs.text import normalize_text

ATTACK_PROMPTS = AssetKey("attack_prompts")


def attack_prompt_check_specs() -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            "every_category_present",
            asset=ATTACK_PROMPTS,
            blocking=True,
            description="Every category in method.required_categories (default: all 14) has at least one prompt.",
        ),
        AssetCheckSpec(
            "no_duplicates_after_dedup",
            asset=ATTACK_PROMPTS,
            blocking=True,
            description="Re-checked independently of the dedup: no two prompts share a normalized text (hashes of "
            "Python's normalization), and no neighbours in sorted order (by text and by reversed text) have an exact "
            "3-gram Jaccard similarity halfway between method.near_duplicate_threshold and 1 or above.",
        ),
    ]


def shingles(normalized: str) -> frozenset[str]:
    """The character 3-grams of a normalized text (a shorter text is its own single shingle)."""
    if len(normalized) <= SHINGLE_CHARS:
        return frozenset([normalized])
    return frozenset(normalized[i : i + SHINGLE_CHARS] for i in range(len(normalized) - SHINGLE_CHARS + 1))


def jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    return len(first & second) / len(first | second) if first or second else 1.0


@dataclass(frozen=True)
class DuplicateRecheck:
    exact_pairs: list[tuple[int, int]]  # (earlier row, later row) with the same normalized text
    near_pairs: list[tuple[int, int, float]]  # (row, row, exact Jaccard) at or above the threshold
    compared: int  # neighbour comparisons made (a pair neighbouring in both orders counts twice)


def recheck_duplicates(prompts: list[str], threshold: float, window: int = 4) -> DuplicateRecheck:
    """Exact duplicates by sha256 of normalize_text; near duplicates among each prompt's `window` neighbours in
    the sorted order of the normalized texts and of their reverses (near copies share a start or an end), by
    the exact Jaccard similarity of their 3-gram sets."""
    normalized = [normalize_text(p) for p in prompts]
    first_seen: dict[bytes, int] = {}
    exact = []
    digests = [hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in normalized]
    for row, digest in enumerate(digests):
        if digest in first_seen:
            exact.append((first_seen[digest], row))
        else:
            first_seen[digest] = row
    compared = 0
    near: dict[tuple[int, int], float] = {}
    for key in (lambda row: normalized[row], lambda row: normalized[row][::-1]):
        recent: deque[tuple[int, frozenset[str]]] = deque(maxlen=window)  # the last `window` rows in this order
        for row in sorted(range(len(prompts)), key=key):
            grams = shingles(normalized[row])
            for other, other_grams in recent:
                pair = (min(row, other), max(row, other))
                compared += 1
                if digests[row] != digests[other] and (similarity := jaccard(grams, other_grams)) >= threshold:
                    near[pair] = round(similarity, 4)
            recent.append((row, grams))
    return DuplicateRecheck(exact, [(a, b, s) for (a, b), s in sorted(near.items())], compared)


def attack_prompt_check_results(
    table: pl.DataFrame, required: tuple[str, ...] | None, near_threshold: float
) -> list[AssetCheckResult]:
    missing = sorted(set(CATEGORIES if required is None else required) - set(table["category"].drop_nulls()))
    prompts = table["prompt"].cast(pl.Utf8).fill_null("").to_list()
    recheck = recheck_duplicates(prompts, near_threshold)
    # MinHash estimates similarity: a pair just above the threshold may be missed by chance, one halfway to
    # identical may not.
    clear = [(a, b, s) for a, b, s in recheck.near_pairs if s >= (1 + near_threshold) / 2]
    ids = table["prompt_id"].to_list() if "prompt_id" in table.columns else list(range(table.height))
    return [
        AssetCheckResult(
            asset_key=ATTACK_PROMPTS,
            check_name="every_category_present",
            passed=not missing,
            severity=AssetCheckSeverity.ERROR,
            metadata={"missing": ", ".join(missing) or "none"},
        ),
        AssetCheckResult(
            asset_key=ATTACK_PROMPTS,
            check_name="no_duplicates_after_dedup",
            passed=not recheck.exact_pairs and not clear,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "duplicate_rows": len(recheck.exact_pairs),
                "near_pairs_compared": recheck.compared,
                "near_duplicates_at_threshold": len(recheck.near_pairs),
                "clear_near_duplicates": len(clear),
                "examples": [
                    f"{ids[a]} ~ {ids[b]} ({s})" for a, b, s in [*((a, b, 1.0) for a, b in recheck.exact_pairs), *clear]
                ][:10],
            },
        ),
    ]
