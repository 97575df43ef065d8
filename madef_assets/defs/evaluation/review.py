"""Human review: the per-candidate queue of answers a human must decide and the reviewers' decisions."""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, StaticPartitionsDefinition, asset

from madef_assets.defs.evaluation import over_refusal as over_refusal_module
from madef_assets.defs.evaluation.candidates import per_candidate_asset
from madef_assets.defs.evaluation.xstest import REVIEW_DECISIONS
from madef_assets.review.decisions import latest_decisions, write_jsonl_atomically
from madef_assets.settings import Settings

GROUP = "evaluation"


def build_review_assets(settings: Settings, candidates: StaticPartitionsDefinition, over_refusal: bool) -> list:
    review_dir = settings.evaluation.review_dir
    decisions_file = review_dir / "decisions.jsonl"

    over_refusal_ins = {"over_refusal_judgements": AssetIn()} if over_refusal else {}

    @per_candidate_asset(
        candidates,
        {"duckdb", "json"},
        ins={"new_safety_judgements": AssetIn(), "responsibility_mcq_predictions": AssetIn(), **over_refusal_ins},
    )
    def review_queue(
        context: AssetExecutionContext,
        new_safety_judgements: pl.DataFrame,
        responsibility_mcq_predictions: pl.DataFrame,
        **over_refusal: pl.DataFrame,
    ) -> pl.DataFrame:
        """What a human must decide for this candidate: New-Safety responses the judge was uncertain about,
        MCQ answers that need a check and XSTest answers where the judge and the string matcher disagree.
        Written to <review_dir>/queue/<candidate>.jsonl for the review page (`madef review`); decisions go
        to decisions.jsonl, which no asset ever rewrites."""
        uncertain = new_safety_judgements.filter(pl.col("judge_label") == "uncertain").select(
            "review_key",
            pl.lit("new_safety").alias("benchmark"),
            "candidate",
            "category",
            "prompt",
            "response",
            "judge_label",
            "judge_reason",
            pl.lit(["safe", "unsafe"]).alias("allowed_decisions"),
        )
        need_check = responsibility_mcq_predictions.filter(pl.col("choice") == "need_check").select(
            "review_key",
            pl.lit("responsibility_mcq").alias("benchmark"),
            "candidate",
            pl.col("domain").alias("category"),
            "prompt",
            "response",
            pl.col("choice").alias("judge_label"),
            pl.lit(None, pl.Utf8).alias("judge_reason"),
            pl.lit(["回复1", "回复2", "other", "refuse"]).alias("allowed_decisions"),
        )
        disagreements = [
            judgements.filter(pl.col("final_label") == "uncertain").select(
                "review_key",
                pl.lit(over_refusal_module.BENCHMARK).alias("benchmark"),
                "candidate",
                pl.col("type").alias("category"),
                "prompt",
                "response",
                "judge_label",
                pl.format(
                    "judge: {}; XSTest string matcher: {}",
                    "judge_label",
                    pl.col("matcher_label").fill_null("no answer"),
                ).alias("judge_reason"),
                pl.lit(REVIEW_DECISIONS).alias("allowed_decisions"),
            )
            for judgements in over_refusal.values()
        ]
        table = pl.concat([uncertain, need_check, *disagreements], how="vertical_relaxed")
        path = review_dir / "queue" / f"{context.partition_key}.jsonl"
        write_jsonl_atomically(path, table.iter_rows(named=True))
        context.add_output_metadata(
            {"queue_file": MetadataValue.path(str(path)), "decisions_file": MetadataValue.path(str(decisions_file))}
        )
        return table

    @asset(group_name=GROUP, kinds={"duckdb", "json"})
    def review_decisions(context: AssetExecutionContext) -> pl.DataFrame:
        """The reviewers' decisions from <review_dir>/decisions.jsonl (append-only; the latest decision per
        review_key wins). Malformed lines are listed in the metadata, never dropped silently."""
        latest, problems = latest_decisions(decisions_file)
        table = pl.DataFrame(
            list(latest.values()),
            schema={
                "review_key": pl.Utf8,
                "decision": pl.Utf8,
                "reviewer": pl.Utf8,
                "note": pl.Utf8,
                "decided_at": pl.Utf8,
            },
        )
        context.add_output_metadata(
            {
                "decisions_file": MetadataValue.path(str(decisions_file)),
                "malformed_lines": len(problems),
                "problems": problems[:20],
            }
        )
        return table

    return [review_queue, review_decisions]
