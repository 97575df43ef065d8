"""Gate for reward features: every score in [0, 1] and every perplexity above 1 (blocking)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

REWARD_FEATURES = AssetKey("reward_features")
SCORE_COLUMNS = ("safe_response_score", "original_response_score", "instruction_safety", "chosen_score")


def score_range_spec() -> AssetCheckSpec:
    return AssetCheckSpec(
        "scores_in_range",
        asset=REWARD_FEATURES,
        blocking=True,
        description="Safety scores lie in [0, 1] and perplexities are at least 1.",
    )


def score_range_result(table: pl.DataFrame) -> AssetCheckResult:
    bad_scores = {c: int(((table[c] < 0) | (table[c] > 1)).sum()) for c in SCORE_COLUMNS}
    bad_perplexity = int((table["perplexity"] < 1).sum())
    return AssetCheckResult(
        asset_key=REWARD_FEATURES,
        check_name="scores_in_range",
        severity=AssetCheckSeverity.ERROR,
        passed=not any(bad_scores.values()) and bad_perplexity == 0,
        metadata={**{f"out_of_range_{k}": v for k, v in bad_scores.items()}, "perplexity_below_1": bad_perplexity},
    )
