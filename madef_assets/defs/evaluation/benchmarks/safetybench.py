"""SafetyBench (multiple choice, official prompts and extraction): Table 5-1, generate mode first."""

import polars as pl

from madef_assets.defs.evaluation import safetybench
from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView
from madef_assets.defs.evaluation.safetybench_assets import build_safetybench_assets


def modes(scores: pl.DataFrame) -> list[str]:
    return safetybench.report_modes(scores["mode"].unique(maintain_order=True).to_list())


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    return [
        f"{safetybench.report_heading(scores, mode)}\n\n"
        + report.table(
            safetybench.report_rows(scores, mode),
            "item",
            "score",
            "questions",
            safetybench.view_name(mode, modes(scores)),
        )
        for mode in modes(scores)
    ]


def headline_rows(report: Report, scores: pl.DataFrame) -> pl.DataFrame:
    """The headline mode's rows (generate when run): the long table and the regression check read them.
    Categories read `SB-IA (Illegal Activities)`."""
    return safetybench.report_rows(scores, next(iter(modes(scores)), ""))


def outcomes(report: Report) -> pl.DataFrame:
    return safetybench.paired_outcomes(report.inputs["safetybench_predictions"])


BENCHMARK = Benchmark(
    name="safetybench",
    order=10,
    build=build_safetybench_assets,
    report=(
        ReportView(
            "safetybench_scores",
            "safetybench",
            "item",
            "score",
            sections,
            headline_rows,
            regression_label="SafetyBench ",
            outcomes=outcomes,
            reads=("safetybench_predictions",),
        ),
    ),
)
