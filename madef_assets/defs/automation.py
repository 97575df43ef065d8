"""Living with the graph: a sensor that versions source files by content, eager automation conditions
downstream (only what a change affects re-materializes), and the evaluation / SFT-rebuild schedules.

Dagster's `AutomationCondition.eager()` fires on any new materialization of a dependency (its
`any_deps_updated` is `newly_updated`, which ignores data versions). The SFT set is versioned by content
instead: sft_dataset and sft_dataset_folder carry the hash of their content as their data version, and
what depends on them re-runs only when that version changed (`data_version_changed`), so a rebuild that
produces the same set retrains nothing and re-evaluates nothing."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from dagster import (
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    map_asset_specs,
    schedule,
    sensor,
)

from madef_assets.compat import DATA_VERSION_TAG
from madef_assets.defs.evaluation.benchmark import judge_users, quiet_inputs
from madef_assets.defs.sources.assets import content_version, raw_key, source_input_files
from madef_assets.settings import Settings

SOURCE_SENSOR = "source_files_changed"
AUTOMATION_SENSOR = "madef_automation"


# Assets whose data version is the hash of their content (set by the assets themselves).
CONTENT_VERSIONED = (AssetKey("sft_dataset"), AssetKey("sft_dataset_folder"), AssetKey("sft_fitness"))
# Dependencies that are read but are not a reason to re-run: eval_report reads attack_prompts only for the
# lineage of the SFT rows (joined on prompt_id, a hash of the prompt), which sft_dataset's version covers.
# Every asset that uses the judge waits for judge_qualification (its blocking check stops them in the same run),
# but a re-run of the qualification (each weekly rebuild, from the ledger) is no reason to judge again.
# The same for the labeler: intent_labels waits for labeler_qualification, whose re-runs are no reason to label again.
JUDGE_USERS = ("response_safety_scores", "instruction_safety_scores", *judge_users())
LABELER_USERS = ("intent_labels",)
# eval_report prints the judge's and the labeler's qualification, which sft_fitness (content-versioned) carries.
# Its charts of the data (intent_distribution) and of the training rates are redrawn whenever those re-run.
NOT_TRIGGERS = {
    AssetKey("eval_report"): (
        AssetKey("attack_prompts"),
        AssetKey("judge_qualification"),
        AssetKey("labeler_qualification"),
        AssetKey("intent_distribution"),
        AssetKey("learning_rate_comparison"),
    ),
    **{AssetKey(name): (AssetKey("judge_qualification"),) for name in JUDGE_USERS},
    **{AssetKey(name): (AssetKey("labeler_qualification"),) for name in LABELER_USERS},
    **{AssetKey(asset): tuple(AssetKey(i) for i in inputs) for asset, inputs in quiet_inputs().items()},
}


def eager_on_content(ignored: Sequence[AssetKey] = ()) -> AutomationCondition:
    """`AutomationCondition.eager()`, except that a content-versioned dependency counts as updated only when
    its data version changed (not on every materialization, and not merely because it will be requested
    this tick: its new version is known only once it ran) and only once its blocking checks passed (a
    blocked SFT set is published, trained on and evaluated against by no later tick either), and `ignored`
    dependencies never count."""
    content = AssetSelection.assets(*CONTENT_VERSIONED)
    updated = AutomationCondition.any_deps_match(
        (AutomationCondition.newly_updated() & ~AutomationCondition.executed_with_root_target()).with_label(
            "newly_updated_without_root"
        )
        | AutomationCondition.will_be_requested()
    ).ignore(content | AssetSelection.assets(*ignored))
    changed = (
        AutomationCondition.any_deps_match(AutomationCondition.data_version_changed())
        .allow(content)
        .with_label("content_changed")
    )
    gate_passed = AutomationCondition.all_deps_blocking_checks_passed().allow(content).with_label("sft_gate_passed")
    eager = AutomationCondition.eager().replace(
        "any_deps_updated", (updated | changed).with_label("any_deps_updated_or_content_changed")
    )
    return (eager & gate_passed).with_label("eager (SFT set by content, gate passed)")


def automation_condition_for(key: AssetKey, deps: Iterable[AssetKey]) -> AutomationCondition:
    if key in NOT_TRIGGERS or set(deps) & set(CONTENT_VERSIONED):
        return eager_on_content(NOT_TRIGGERS.get(key, ()))
    return AutomationCondition.eager()


def with_eager_automation(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """Every materializable asset re-materializes when one of its dependencies has a new version (a new
    materialization, a new data version of a source's files, or new content of the SFT set), once none of
    its dependencies is missing or in progress."""
    return list(
        map_asset_specs(
            lambda spec: spec.replace_attributes(
                automation_condition=automation_condition_for(spec.key, (dep.asset_key for dep in spec.deps))
            ),
            assets,
        )
    )


def source_versions(settings: Settings, names: Iterable[str]) -> dict[str, str]:
    """The content hash of every configured source's input files, by source name."""
    return {name: content_version(source_input_files(settings.sources[name])) for name in names}


def build_source_sensor(settings: Settings):
    names = sorted(settings.sources)
    status = DefaultSensorStatus.RUNNING if settings.automation.sensors_running else DefaultSensorStatus.STOPPED

    @sensor(
        name=SOURCE_SENSOR,
        minimum_interval_seconds=settings.automation.source_poll_seconds,
        default_status=status,
        asset_selection=AssetSelection.keys(*(raw_key(n) for n in names)),
    )
    def source_files_changed(context: SensorEvaluationContext):
        """Hashes every source's files (content, not mtime) and records a new data version of `raw/<source>`
        for each source whose content changed since the last tick; the eager automation conditions then
        re-materialize exactly what depends on it."""
        previous = json.loads(context.cursor) if context.cursor else {}
        current = source_versions(settings, names)
        changed = sorted(name for name in names if previous.get(name) != current[name])
        if not changed:
            return SkipReason(f"no source changed ({len(names)} checked)")
        context.log.info(f"new content in {changed}")
        observations = [
            AssetObservation(
                asset_key=raw_key(name),
                tags={DATA_VERSION_TAG: current[name]},
                metadata={"previous_version": previous.get(name) or "none"},
            )
            for name in changed
        ]
        return SensorResult(asset_events=observations, cursor=json.dumps(current, sort_keys=True))

    return source_files_changed


def build_automation_sensor(settings: Settings) -> AutomationConditionSensorDefinition:
    status = DefaultSensorStatus.RUNNING if settings.automation.sensors_running else DefaultSensorStatus.STOPPED
    return AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=AssetSelection.all(),
        default_status=status,
        minimum_interval_seconds=30,
        description="Evaluates the assets' automation conditions (eager): requests what a change upstream affects.",
    )


def build_schedules(settings: Settings, evaluate_job, rebuild_sft_job) -> list:
    automation = settings.automation
    candidates = [c.name for c in settings.evaluation.candidates]
    schedules = []

    def status(enabled: bool) -> DefaultScheduleStatus:
        return DefaultScheduleStatus.RUNNING if enabled else DefaultScheduleStatus.STOPPED

    if candidates:

        @schedule(
            name="evaluate_candidates",
            job=evaluate_job,
            cron_schedule=automation.schedules.evaluate_candidates.cron,
            default_status=status(automation.schedules.evaluate_candidates.enabled),
            execution_timezone=automation.timezone,
        )
        def evaluate_candidates(context: ScheduleEvaluationContext):
            """Re-evaluates every candidate (one run per partition); the report follows by automation."""
            for name in candidates:
                yield RunRequest(run_key=f"{name}-{context.scheduled_execution_time:%Y%m%dT%H%M}", partition_key=name)

        schedules.append(evaluate_candidates)

    @schedule(
        name="rebuild_sft_dataset",
        job=rebuild_sft_job,
        cron_schedule=automation.schedules.rebuild_sft_dataset.cron,
        default_status=status(automation.schedules.rebuild_sft_dataset.enabled),
        execution_timezone=automation.timezone,
    )
    def rebuild_sft_dataset(context: ScheduleEvaluationContext):
        """Rebuilds the SFT set from the source tables (intent → … → sft_dataset → its published folder).
        The sources themselves are kept current by the source sensor, by content; an unchanged SFT set
        keeps its data version, so nothing downstream (training, evaluation) re-runs."""
        return RunRequest(run_key=f"sft-{context.scheduled_execution_time:%Y%m%dT%H%M}")

    schedules.append(rebuild_sft_dataset)
    return schedules
