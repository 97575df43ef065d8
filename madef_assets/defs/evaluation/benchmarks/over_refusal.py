"""Over-refusal on XSTest: compliance on safe prompts, refusal on their unsafe contrasts."""

import polars as pl

from madef_assets.defs.evaluation import over_refusal
from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView, ReviewSource
from madef_assets.defs.evaluation.xstest import REVIEW_DECISIONS
from madef_assets.storage import run_sql


def rows(report: Report, scores: pl.DataFrame) -> pl.DataFrame:
    if not scores.height:
        return scores
    return scores.with_columns(item=pl.format("{} prompts, {}: {} rate", "prompt_label", "type", "measure"))


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    if not scores.height:
        return []
    table = report.table(rows(report, scores), "item", "rate", "prompts", "over_refusal")
    return [
        "## Over-refusal (XSTest): compliance on safe prompts, refusal on unsafe contrasts (higher is better)\n"
        f"{report.judged_by} Answers where the judge and XSTest's string matcher disagree wait for review and "
        f"count against the model until decided.\n\n{table}"
    ]


def disagreements(judgements: pl.DataFrame) -> pl.DataFrame:
    """Answers where the judge and XSTest's string matcher disagree."""
    return judgements.filter(pl.col("final_label") == "uncertain").select(
        "review_key",
        pl.lit(over_refusal.BENCHMARK).alias("benchmark"),
        "candidate",
        pl.col("type").alias("category"),
        "prompt",
        "response",
        "judge_label",
        pl.format(
            "judge: {}; XSTest string matcher: {}", "judge_label", pl.col("matcher_label").fill_null("no answer")
        ).alias("judge_reason"),
        pl.lit(REVIEW_DECISIONS).alias("allowed_decisions"),
    )


def outcomes(report: Report) -> pl.DataFrame:
    judgements, decisions = report.inputs["over_refusal_judgements"], report.inputs["review_decisions"]
    return run_sql("evaluation/over_refusal_outcomes", decided=over_refusal.decided_answers(judgements, decisions))


BENCHMARK = Benchmark(
    name=over_refusal.BENCHMARK,
    order=30,
    build=over_refusal.build_over_refusal_assets,
    report=(
        ReportView(
            "over_refusal_scores",
            "over_refusal",
            "item",
            "rate",
            sections,
            rows,
            regression_label="XSTest ",
            outcomes=outcomes,
            reads=("over_refusal_judgements", "review_decisions"),
        ),
    ),
    review=(ReviewSource("over_refusal_judgements", disagreements),),
    judge_users=("over_refusal_judgements",),
)
