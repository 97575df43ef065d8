"""Gates for attack_prompts: every required category present and no duplicates left (both blocking)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.diversity.dedup import normalized_texts
from madef_assets.defs.intent.taxonomy import CATEGORIES

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
            description="No two prompts share a normalized text after deduplication.",
        ),
    ]


def attack_prompt_check_results(table: pl.DataFrame, required: tuple[str, ...] | None) -> list[AssetCheckResult]:
    missing = sorted(set(CATEGORIES if required is None else required) - set(table["category"].drop_nulls()))
    hashes = normalized_texts(table["prompt"].cast(pl.Utf8))
    duplicates = hashes.len() - hashes.n_unique()
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
            passed=duplicates == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "duplicate_rows": duplicates,
                "duplicate_rate": round(duplicates / hashes.len(), 4) if hashes.len() else 0.0,
            },
        ),
    ]
