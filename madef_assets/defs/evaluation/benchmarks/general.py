"""General capability: gsm8k, MMLU, CMMLU, C-Eval and HumanEval (Table 5-3)."""

import polars as pl

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView
from madef_assets.defs.evaluation.general_assets import build_general_assets
from madef_assets.settings import Settings
from madef_assets.storage import run_sql


def sandbox_note(settings: Settings) -> str:
    """How HumanEval's model-written programs ran, in a line above the general-capability table."""
    if not settings.evaluation.general.humaneval:
        return ""
    if settings.sandbox.isolation == "rlimits":
        return (
            "**HumanEval ran without isolation** (`sandbox.isolation: rlimits`): the model's programs had "
            "resource limits only, ran as this process's user with the network and the user's files within "
            "reach, and could have forged their own pass; a memory error counts as a failure.\n\n"
        )
    return (
        "HumanEval's programs ran isolated by bubblewrap (`sandbox.isolation: bubblewrap`): as host uid 65534, "
        "no network, no host files or descriptors, no new processes or user namespaces, in a cgroup of their "
        "own capping memory (tmpfs and memfd included) and tasks; a program passed only when the harness's "
        "check returned, and timeout / memory were measured outside it.\n\n"
    )


def overall(report: Report, scores: pl.DataFrame) -> pl.DataFrame:
    return scores.filter(pl.col("subject") == "(all)")


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    table = report.table(overall(report, scores), "benchmark", "score", "questions", "general")
    return [f"## General capability (Table 5-3 form)\n{sandbox_note(report.settings)}{table}"]


def outcomes(report: Report) -> pl.DataFrame:
    return run_sql(
        "evaluation/general_capability_outcomes", predictions=report.inputs["general_capability_predictions"]
    )


BENCHMARK = Benchmark(
    name="general",
    order=50,
    build=build_general_assets,
    report=(
        ReportView(
            "general_capability_scores",
            "general",
            "benchmark",
            "score",
            sections,
            overall,
            outcomes=outcomes,
            reads=("general_capability_predictions",),
        ),
    ),
)
