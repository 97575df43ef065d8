"""The madef code location: every asset, check and resource for the active profile."""

import warnings

from dagster import (
    AssetSelection,
    BetaWarning,
    Definitions,
    ExecutorDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from madef_assets.defs.automation import (
    build_automation_sensor,
    build_schedules,
    build_source_sensor,
    with_eager_automation,
)
from madef_assets.defs.diversity.assets import build_diversity_assets
from madef_assets.defs.engine_release import with_engine_release
from madef_assets.defs.evaluation.assets import build_evaluation_assets
from madef_assets.defs.intent.assets import build_intent_assets
from madef_assets.defs.qualification.assets import build_qualification_assets
from madef_assets.defs.responses.assets import build_response_assets
from madef_assets.defs.reward.assets import build_reward_assets
from madef_assets.defs.selection.assets import build_selection_assets
from madef_assets.defs.sources.assets import build_source_defs
from madef_assets.defs.training.assets import build_training_assets
from madef_assets.project import ConfigError
from madef_assets.resources import build_resources
from madef_assets.settings import Settings, current_settings

MAIN_JOB = "madef_build"
EVALUATE_JOB = "madef_evaluate"
REPORT_JOB = "madef_report"
OBSERVE_JOB = "observe_sources"
REBUILD_SFT_JOB = "rebuild_sft_dataset"
DATA_JOB = "madef_build_data"
AFTER_DATA_JOB = "madef_build_after_data"
# With several training.learning_rates (§5.1.1): one training run per rate, then their loss comparison.
TRAIN_JOB = "madef_train"
COMPARE_RATES_JOB = "madef_compare_rates"

# observable_source_asset and pools are marked beta; the project uses them deliberately.
warnings.filterwarnings("ignore", category=BetaWarning)


# The executor config `madef run` gives each run (deploy/celery/run_config.yaml says the same for runs
# launched elsewhere): the broker and result backend from the environment of the run and of every worker.
EXECUTOR_RUN_CONFIG = {
    "celery": {
        "broker": {"env": "MADEF_CELERY_BROKER_URL"},
        "backend": {"env": "MADEF_CELERY_BACKEND_URL"},
        "include": ["madef_assets.definitions"],
    }
}


def build_executor(name: str) -> ExecutorDefinition:
    """in_process (default: one process per run, models load once, one DuckDB writer), multiprocess, or
    Dagster's k8s / celery executors for scale-out (extra `deploy`; see deploy/ and docs/operations.md)."""
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    try:
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        from dagster_celery import celery_executor

        return celery_executor
    except ImportError as exc:
        raise ConfigError(
            f"execution.executor {name!r} needs the deploy extra: pip install 'madef[deploy]' ({exc})"
        ) from exc


def build_definitions(settings: Settings) -> Definitions:
    raw_sources, source_assets = build_source_defs(settings)
    training_assets = build_training_assets(settings)
    method_assets = [
        *build_intent_assets(settings),
        *build_diversity_assets(settings),
        *build_response_assets(settings),
        *build_reward_assets(settings),
        *build_selection_assets(settings),
        *training_assets,
        *build_qualification_assets(settings),
    ]
    evaluation_assets = build_evaluation_assets(settings)
    per_candidate = AssetSelection.assets(*(a for a in evaluation_assets if a.partitions_def is not None))
    report = AssetSelection.assets("eval_report") if evaluation_assets else AssetSelection.assets()
    # Several training.learning_rates: finetuned_checkpoint is partitioned by rate and trains in runs of its own.
    by_rate = AssetSelection.assets(*(a for a in training_assets if a.partitions_def is not None))
    comparison = AssetSelection.assets("learning_rate_comparison")
    rate_jobs = (
        [
            define_asset_job(TRAIN_JOB, selection=by_rate, description="Train one learning rate (a partition)."),
            define_asset_job(
                COMPARE_RATES_JOB,
                selection=comparison,
                description="Overlay the loss curves of every trained learning rate.",
            ),
        ]
        if settings.training.partitioned
        else []
    )
    per_rate = by_rate | comparison if rate_jobs else AssetSelection.assets()
    evaluate_job = define_asset_job(
        EVALUATE_JOB,
        selection=per_candidate,
        description="Evaluate one candidate (a partition): every per-candidate evaluation asset.",
    )
    # Not the sources: the source sensor re-materializes a source when its files change (by content), and a
    # weekly re-ingest of unchanged files would give every evaluation input a new version and re-evaluate.
    upstream_of_sft = AssetSelection.assets("sft_dataset_folder").upstream().materializable()
    rebuild = upstream_of_sft - AssetSelection.groups("sources")
    data = upstream_of_sft.required_multi_asset_neighbors()
    rebuild_sft_job = define_asset_job(
        REBUILD_SFT_JOB,
        selection=rebuild.required_multi_asset_neighbors(),
        description="Rebuild the SFT set from the source tables and publish its folder.",
    )
    return Definitions(
        assets=[
            *raw_sources,
            *with_engine_release(
                with_eager_automation([*source_assets, *method_assets, *evaluation_assets]), settings.gpu.release
            ),
        ],
        resources=build_resources(settings),
        jobs=[
            define_asset_job(
                MAIN_JOB,
                selection=AssetSelection.all() - per_candidate - report - per_rate,
                description="Materialize every asset that is not per candidate: data, training, shared "
                "evaluation inputs.",
            ),
            define_asset_job(
                DATA_JOB,
                selection=data,
                description="The SFT set and everything upstream, sources included: `madef run`'s data builds "
                "(method.volume_rounds > 1).",
            ),
            define_asset_job(
                AFTER_DATA_JOB,
                selection=AssetSelection.all() - per_candidate - report - per_rate - data,
                description="What madef_build materializes beyond the SFT set and its upstream (training, shared "
                "evaluation inputs): `madef run` runs it after its data builds.",
            ),
            *rate_jobs,
            evaluate_job,
            define_asset_job(
                REPORT_JOB, selection=report, description="The evaluation report over every evaluated candidate."
            ),
            define_asset_job(
                OBSERVE_JOB,
                selection=AssetSelection.keys(*(s.key for s in raw_sources)),
                description="Record the content-hash data version of every source's input files.",
            ),
            rebuild_sft_job,
        ],
        sensors=[build_source_sensor(settings), build_automation_sensor(settings)],
        schedules=build_schedules(settings, evaluate_job, rebuild_sft_job),
        executor=build_executor(settings.executor),
    )


defs = build_definitions(current_settings())
