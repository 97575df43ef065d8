"""Checks of reward_features that measure what no parser guarantees: perplexities a backend computed (a
served backend's log-probabilities above 0 would give a perplexity below 1; blocking), and the judge's
position bias on the pairs it scored in a seeded random order (a warning)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.sign_test import exact_sign_test

REWARD_FEATURES = AssetKey("reward_features")
# A position effect smaller than this share of the decided pairs is not reported, however many pairs.
POSITION_BIAS_MARGIN = 0.1
POSITION_BIAS_ALPHA = 0.01


def reward_check_specs() -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            "perplexity_at_least_one",
            asset=REWARD_FEATURES,
            blocking=True,
            description="Every perplexity is at least 1 (exp of a mean negative log-likelihood); a backend whose "
            "log-probabilities are positive fails it.",
        ),
        AssetCheckSpec(
            "judge_position_bias",
            asset=REWARD_FEATURES,
            description="Pairs are shown in a seeded random order, so the response shown first should win about "
            "half of the decided pairs; warns when a sign test says otherwise (p < 0.01) by more than 10 points.",
        ),
    ]


def perplexity_result(table: pl.DataFrame) -> AssetCheckResult:
    below = table.filter(pl.col("perplexity") < 1)
    return AssetCheckResult(
        asset_key=REWARD_FEATURES,
        check_name="perplexity_at_least_one",
        severity=AssetCheckSeverity.ERROR,
        passed=below.is_empty(),
        metadata={"perplexity_below_1": below.height, "first_rows": below["prompt_id"].head(10).to_list()},
    )


def position_counts(response_scores: pl.DataFrame) -> tuple[int, int, int]:
    """(first shown scored higher, second shown scored higher, ties) over the pairs the judge scored."""
    pairs = response_scores.filter((pl.col("scored_as") == "pair") & pl.col("original_first").is_not_null())
    pairs = pairs.drop_nulls(["safe_response_score", "original_response_score"])
    difference = pairs["original_response_score"] - pairs["safe_response_score"]
    first_minus_second = [d if first else -d for d, first in zip(difference, pairs["original_first"])]
    first = sum(d > 0 for d in first_minus_second)
    second = sum(d < 0 for d in first_minus_second)
    return first, second, len(first_minus_second) - first - second


def position_bias_result(response_scores: pl.DataFrame) -> AssetCheckResult:
    """A sign test (exact binomial, two-sided) of first-shown against second-shown wins."""
    first, second, ties = position_counts(response_scores)
    decided = first + second
    p_value = exact_sign_test(first, second)
    share = first / decided if decided else 0.5
    biased = p_value < POSITION_BIAS_ALPHA and abs(share - 0.5) > POSITION_BIAS_MARGIN
    return AssetCheckResult(
        asset_key=REWARD_FEATURES,
        check_name="judge_position_bias",
        severity=AssetCheckSeverity.WARN,
        passed=not biased,
        metadata={
            "first_shown_higher": first,
            "second_shown_higher": second,
            "ties": ties,
            "first_shown_win_share": round(share, 4),
            "sign_test_p": p_value,
        },
    )
