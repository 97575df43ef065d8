"""The madef code location: every asset, check and resource for the active profile."""

import warnings

from dagster import AssetSelection, BetaWarning, Definitions, define_asset_job, in_process_executor

from madef_assets.defs.diversity.assets import build_diversity_assets
from madef_assets.defs.evaluation.assets import build_evaluation_assets
from madef_assets.defs.intent.assets import build_intent_assets
from madef_assets.defs.responses.assets import build_response_assets
from madef_assets.defs.reward.assets import build_reward_assets
from madef_assets.defs.selection.assets import build_selection_assets
from madef_assets.defs.sources.assets import build_source_defs
from madef_assets.defs.training.assets import build_training_assets
from madef_assets.resources import build_resources
from madef_assets.settings import Settings, current_settings

MAIN_JOB = "madef_build"
EVALUATE_JOB = "madef_evaluate"
REPORT_JOB = "madef_report"
OBSERVE_JOB = "observe_sources"

# observable_source_asset and pools are marked beta; the project uses them deliberately.
warnings.filterwarnings("ignore", category=BetaWarning)


def build_definitions(settings: Settings) -> Definitions:
    raw_sources, source_assets = build_source_defs(settings)
    method_assets = [
        *build_intent_assets(settings),
        *build_diversity_assets(settings),
        *build_response_assets(settings),
        *build_reward_assets(settings),
        *build_selection_assets(settings),
        *build_training_assets(settings),
    ]
    evaluation_assets = build_evaluation_assets(settings)
    per_candidate = AssetSelection.assets(*(a for a in evaluation_assets if a.partitions_def is not None))
    report = AssetSelection.assets("eval_report") if evaluation_assets else AssetSelection.assets()
    return Definitions(
        assets=[*raw_sources, *source_assets, *method_assets, *evaluation_assets],
        resources=build_resources(settings),
        jobs=[
            define_asset_job(MAIN_JOB, selection=AssetSelection.all() - per_candidate - report,
                             description="Materialize every asset that is not per candidate: data, training, shared evaluation inputs."),
            define_asset_job(EVALUATE_JOB, selection=per_candidate,
                             description="Evaluate one candidate (a partition): every per-candidate evaluation asset."),
            define_asset_job(REPORT_JOB, selection=report, description="The evaluation report over every evaluated candidate."),
            define_asset_job(
                OBSERVE_JOB,
                selection=AssetSelection.keys(*(s.key for s in raw_sources)),
                description="Record the content-hash data version of every source's input files.",
            ),
        ],
        # One process per run: local models load once and DuckDB sees a single writer per run.
        executor=in_process_executor,
    )


defs = build_definitions(current_settings())
