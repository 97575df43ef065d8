"""MMLU / CMMLU / C-Eval scored again by LLaMA-Factory's own evaluator, beside madef's general capability."""

import polars as pl

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView
from madef_assets.defs.evaluation.llamafactory_eval import build_llamafactory_eval_asset, comparison_section


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    general = report.inputs["general_capability_scores"].filter(pl.col("subject") == "(all)")
    return [comparison_section(general, scores, report.order)]


BENCHMARK = Benchmark(
    name="llamafactory_eval",
    order=60,
    build=lambda settings, candidates, llm_for: [a for a in [build_llamafactory_eval_asset(settings, candidates)] if a],
    report=(ReportView("llamafactory_eval_scores", None, "benchmark", "score", sections),),
)
