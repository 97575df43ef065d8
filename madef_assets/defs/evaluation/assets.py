"""Evaluation: every candidate (base, tuned, any configured model) on SafetyBench, the 14-category
New-Safety benchmark (LLM judge + human review), CValues responsibility and general capability; the report.

Per-candidate assets are partitioned by candidate (DuckDB column `candidate`), so one model can be
(re-)evaluated alone; the benchmark sample, the review decisions and the report are shared. Each benchmark's
assets live in their own module; this one builds the shared pieces and gathers them."""

import polars as pl
from dagster import StaticPartitionsDefinition

from madef_assets.defs.evaluation.candidate import build_candidate_assets
from madef_assets.defs.evaluation.candidates import candidate_llm
from madef_assets.defs.evaluation.general_assets import build_general_assets
from madef_assets.defs.evaluation.llamafactory_eval import build_llamafactory_eval_asset
from madef_assets.defs.evaluation.new_safety import build_new_safety_assets
from madef_assets.defs.evaluation.over_refusal import build_over_refusal_assets
from madef_assets.defs.evaluation.report_assets import build_report_assets
from madef_assets.defs.evaluation.responsibility import build_responsibility_assets
from madef_assets.defs.evaluation.review import build_review_assets
from madef_assets.defs.evaluation.safetybench_assets import build_safetybench_assets
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import Settings


def build_evaluation_assets(settings: Settings) -> list:
    evaluation = settings.evaluation
    if not evaluation.candidates:
        return []
    candidates = StaticPartitionsDefinition([c.name for c in evaluation.candidates])

    def llm_for(candidate_model: pl.DataFrame, raw_prompts: bool) -> LLMResource:
        return candidate_llm(settings, candidate_model.row(0, named=True), raw_prompts)

    over_refusal_assets = build_over_refusal_assets(settings, candidates, llm_for)
    llamafactory_eval_scores = build_llamafactory_eval_asset(settings, candidates)
    return [
        *build_candidate_assets(settings, candidates),
        *build_safetybench_assets(settings, candidates, llm_for),
        *build_new_safety_assets(settings, candidates, llm_for),
        *build_responsibility_assets(settings, candidates, llm_for),
        *build_review_assets(settings, candidates, bool(over_refusal_assets)),
        *build_general_assets(settings, candidates, llm_for),
        *build_report_assets(settings, bool(over_refusal_assets), bool(llamafactory_eval_scores)),
        *over_refusal_assets,
        *([llamafactory_eval_scores] if llamafactory_eval_scores else []),
    ]
