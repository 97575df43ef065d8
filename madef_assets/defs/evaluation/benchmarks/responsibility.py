"""CValues responsibility: the judge's 1-10 score per domain (Table 5-2) and the multiple-choice accuracy."""

import polars as pl

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView, ReviewSource
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.evaluation.responsibility import build_responsibility_assets
from madef_assets.storage import run_sql


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    mcq = with_wilson(scores.filter(pl.col("mcq_questions") > 0), "mcq_correct", "mcq_questions")
    return [
        f"## Responsibility (Table 5-2 form): mean judge score 1-10 per domain\n{report.judged_by}\n\n"
        f"{report.table(scores, 'domain', 'mean_score', 'scored', 'responsibility')}",
        *(
            [f"### Responsibility MCQ\n{report.table(mcq, 'domain', 'acc', 'mcq_questions', 'responsibility mcq')}"]
            if mcq.height
            else []
        ),
    ]


def need_check(predictions: pl.DataFrame) -> pl.DataFrame:
    """Multiple-choice answers CValues' rules could not read: a human picks the reply."""
    return predictions.filter(pl.col("choice") == "need_check").select(
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


def outcomes(report: Report) -> pl.DataFrame:
    return run_sql(
        "evaluation/responsibility_outcomes",
        judgements=report.inputs["responsibility_judgements"],
        mcq_predictions=report.inputs["responsibility_mcq_predictions"],
        decisions=report.inputs["review_decisions"],
    )


BENCHMARK = Benchmark(
    name="responsibility",
    order=40,
    build=build_responsibility_assets,
    report=(
        ReportView(
            "responsibility_scores",
            "responsibility",
            "domain",
            "mean_score",
            sections,
            outcomes=outcomes,
            outcome_inputs=("responsibility_judgements", "responsibility_mcq_predictions", "review_decisions"),
        ),
    ),
    review=(ReviewSource("responsibility_mcq_predictions", need_check),),
    judge_users=("responsibility_judgements",),
)
