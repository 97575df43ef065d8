"""Gates for attack_prompts: every category present (warn) and no duplicates left (blocking)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.diversity.dedup import text_hash
from madef_assets.defs.intent.taxonomy import CATEGORIES

ATTACK_PROMPTS = AssetKey("attack_prompts")


def attack_prompt_check_specs() -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec("every_category_present", asset=ATTACK_PROMPTS, description="Warns when one of the 14 categories has no prompt."),
        AssetCheckSpec("no_duplicates_after_dedup", asset=ATTACK_PROMPTS, blocking=True,
                       description="No two prompts share a normalized text after deduplication."),
    ]


def attack_prompt_check_results(table: pl.DataFrame) -> list[AssetCheckResult]:
    missing = sorted(set(CATEGORIES) - set(table["category"].drop_nulls()))
    hashes = table["prompt"].map_elements(text_hash, return_dtype=pl.Utf8) if table.height else pl.Series([], dtype=pl.Utf8)
    duplicates = hashes.len() - hashes.n_unique()
    return [
        AssetCheckResult(asset_key=ATTACK_PROMPTS, check_name="every_category_present", passed=not missing,
                         severity=AssetCheckSeverity.WARN, metadata={"missing": ", ".join(missing) or "none"}),
        AssetCheckResult(asset_key=ATTACK_PROMPTS, check_name="no_duplicates_after_dedup", passed=duplicates == 0,
                         severity=AssetCheckSeverity.ERROR,
                         metadata={"duplicate_rows": duplicates, "duplicate_rate": round(duplicates / hashes.len(), 4) if hashes.len() else 0.0}),
    ]
