"""CValues responsibility: the judge's 1-10 score per domain and the multiple-choice acc / acc* per official
evaluator rule set and their average (Table 5-2)."""

import polars as pl

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView, ReviewSource
from madef_assets.defs.evaluation.cvalues import RULE_SETS
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.evaluation.responsibility import build_responsibility_assets, mcq_decided, mcq_rule_set_scores
from madef_assets.storage import run_sql

MCQ_VIEW = "responsibility mcq"


def mcq_rows(report: Report) -> pl.DataFrame:
    """One row per candidate, domain and rule set (`item` = `law · chatgpt`) with acc, acc* and Wilson
    intervals of acc, then each domain's average over the rule sets (`law · average`, no interval: the five
    readings of one answer are not independent)."""
    rule_sets = mcq_rule_set_scores(report.inputs["responsibility_mcq_predictions"], report.inputs["review_decisions"])
    if rule_sets.is_empty():
        return rule_sets
    per_rule_set = with_wilson(rule_sets, "correct", "questions").with_columns(
        item=pl.format("{} · {}", "domain", "rule_set")
    )
    average = rule_sets.group_by("candidate", "domain", maintain_order=True).agg(
        pl.col("questions").max(), pl.col("acc").mean().round(2), pl.col("acc_star").mean().round(2)
    )
    average = average.with_columns(
        item=pl.format("{} · average", "domain"), ci_low=pl.lit(None, pl.Float64), ci_high=pl.lit(None, pl.Float64)
    )
    columns = ["candidate", "item", "questions", "acc", "acc_star", "ci_low", "ci_high"]
    return pl.concat([per_rule_set.select(columns), average.select(columns)], how="vertical_relaxed")


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    judged = (
        f"## Responsibility (Table 5-2 form): mean judge score 1-10 per domain\n{report.judged_by}\n\n"
        f"{report.table(scores, 'domain', 'mean_score', 'scored', 'responsibility')}"
    )
    mcq = mcq_rows(report)
    if mcq.is_empty():
        return [judged]
    acc_star = mcq.with_columns(ci_low=pl.lit(None, pl.Float64), ci_high=pl.lit(None, pl.Float64))
    return [
        judged,
        f"### Responsibility MCQ: acc per official evaluator rule set ({', '.join(RULE_SETS)}) and their average\n"
        f"{report.table(mcq, 'item', 'acc', 'questions', MCQ_VIEW)}",
        "### Responsibility MCQ: acc* (correct / answers that chose; refusals and unreadable answers left out, "
        "so the candidates' denominators differ and the deltas are untested)\n"
        f"{report.table(acc_star, 'item', 'acc_star', 'questions', 'responsibility mcq acc*')}",
    ]


def need_check(predictions: pl.DataFrame) -> pl.DataFrame:
    """Multiple-choice answers some rule set could not read: a human picks the reply."""
    unread = pl.any_horizontal(pl.col(f"choice_{rule_set}") == "need_check" for rule_set in RULE_SETS)
    return predictions.filter(unread).select(
        "review_key",
        pl.lit("responsibility_mcq").alias("benchmark"),
        "candidate",
        pl.col("domain").alias("category"),
        "prompt",
        "response",
        pl.lit("need_check").alias("judge_label"),
        pl.concat_str(
            [pl.format(f"{rule_set}: {{}}", f"choice_{rule_set}") for rule_set in RULE_SETS], separator="; "
        ).alias("judge_reason"),
        pl.lit(["回复1", "回复2", "other", "refuse"]).alias("allowed_decisions"),
    )


def outcomes(report: Report) -> pl.DataFrame:
    decided = mcq_decided(report.inputs["responsibility_mcq_predictions"], report.inputs["review_decisions"])
    judgements = report.inputs["responsibility_judgements"]
    return run_sql("evaluation/responsibility_outcomes", judgements=judgements, decided=decided)


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
            reads=("responsibility_judgements", "responsibility_mcq_predictions", "review_decisions"),
        ),
    ),
    review=(ReviewSource("responsibility_mcq_predictions", need_check),),
    judge_users=("responsibility_judgements",),
)
