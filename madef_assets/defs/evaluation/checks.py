"""Evaluation gates: the benchmark stays disjoint from the SFT set (blocking); no category regresses (warn)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.selection.contamination import contaminated
from madef_assets.settings import MethodConfig

NEW_SAFETY_BENCHMARK = AssetKey("new_safety_benchmark")
EVAL_REPORT = AssetKey("eval_report")
DISJOINT_CHECK = "disjoint_from_sft_dataset"
REGRESSION_CHECK = "no_category_worse_than_baseline"


def disjoint_from_sft_spec() -> AssetCheckSpec:
    return AssetCheckSpec(
        DISJOINT_CHECK,
        asset=NEW_SAFETY_BENCHMARK,
        blocking=True,
        description="No benchmark prompt is in the SFT set or shares a long n-gram with an SFT instruction.",
    )


def disjoint_from_sft_result(benchmark: pl.DataFrame, sft: pl.DataFrame, method: MethodConfig) -> AssetCheckResult:
    same_id = set(benchmark["prompt_id"].to_list()) & set(sft["prompt_id"].to_list())
    overlaps = contaminated(
        zip(benchmark["prompt_id"], benchmark["prompt"]),
        sft["instruction"].to_list(),
        method.contamination_zh_chars,
        method.contamination_en_words,
    )
    return AssetCheckResult(
        asset_key=NEW_SAFETY_BENCHMARK,
        check_name=DISJOINT_CHECK,
        passed=not same_id and not overlaps,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "shared_prompt_ids": len(same_id),
            "ngram_overlaps": len(overlaps),
            "examples": [f"{key}: …{gram}…" for key, gram in overlaps[:5]],
        },
    )


def no_regression_spec() -> AssetCheckSpec:
    return AssetCheckSpec(
        REGRESSION_CHECK,
        asset=EVAL_REPORT,
        description="Warns when a candidate scores below the baseline (the first candidate) in a benchmark's "
        "headline rows and the paired test, Holm-corrected across the report, says the drop is not noise.",
    )


def no_regression_result(regressions: list[tuple[str, bool]]) -> AssetCheckResult:
    """`regressions`: every drop below the baseline with whether it is significant; only those fail."""
    significant = [text for text, is_significant in regressions if is_significant]
    return AssetCheckResult(
        asset_key=EVAL_REPORT,
        check_name=REGRESSION_CHECK,
        passed=not significant,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "significant_regressions": len(significant),
            "where": significant[:50],
            "drops": len(regressions),
            "all_drops": [text for text, _ in regressions][:50],
        },
    )
