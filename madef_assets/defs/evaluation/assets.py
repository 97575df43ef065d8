"""Evaluation: every candidate (base, tuned, any configured model) on every registered benchmark (one module
each in defs/evaluation/benchmarks/), the review queue and the report, both built from the registry.

Per-candidate assets are partitioned by candidate (DuckDB column `candidate`), so one model can be
(re-)evaluated alone; the benchmark sample, the review decisions and the report are shared."""

import polars as pl
from dagster import StaticPartitionsDefinition

from madef_assets.defs.evaluation.benchmark import registered
from madef_assets.defs.evaluation.candidate import build_candidate_assets
from madef_assets.defs.evaluation.candidates import candidate_llm
from madef_assets.defs.evaluation.report_assets import build_report_assets
from madef_assets.defs.evaluation.review import build_review_assets
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import Settings


def build_evaluation_assets(settings: Settings) -> list:
    evaluation = settings.evaluation
    if not evaluation.candidates:
        return []
    candidates = StaticPartitionsDefinition([c.name for c in evaluation.candidates])

    def llm_for(candidate_model: pl.DataFrame, raw_prompts: bool) -> LLMResource:
        return candidate_llm(settings, candidate_model.row(0, named=True), raw_prompts)

    built = {spec: spec.build(settings, candidates, llm_for) for spec in registered()}
    configured = [spec for spec, assets in built.items() if assets]
    return [
        *build_candidate_assets(settings, candidates),
        *(asset for assets in built.values() for asset in assets),
        *build_review_assets(settings, candidates, configured),
        *build_report_assets(settings, configured),
    ]
