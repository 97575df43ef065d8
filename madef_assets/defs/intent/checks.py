"""Gate for intent recognition: label coverage (warn); the labeler's own gates are in llm_steps."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

LABEL_COVERAGE_CHECK = "labeled_prompts_have_a_mapped_category"
MIN_LABEL_COVERAGE = 0.5


def coverage_check_spec() -> AssetCheckSpec:
    return AssetCheckSpec(
        LABEL_COVERAGE_CHECK,
        asset=AssetKey("prompt_categories"),
        description=f"Warns when under {MIN_LABEL_COVERAGE:.0%} of labeled prompts have an intent label "
        "mapped to a category.",
    )


def coverage_result(asset_key: AssetKey, prompt_categories: pl.DataFrame) -> AssetCheckResult:
    labeled = prompt_categories.filter(pl.col("labeled"))
    covered = labeled.filter(pl.col("category_origin") == "intent").height
    share = covered / labeled.height if labeled.height else 0.0
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=LABEL_COVERAGE_CHECK,
        passed=share >= MIN_LABEL_COVERAGE,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "coverage": round(share, 4),
            "labeled": labeled.height,
            "with_mapped_intent": covered,
            "without_any_category": prompt_categories.filter(pl.col("category").is_null()).height,
        },
    )
