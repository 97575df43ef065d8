"""Living with the graph: a sensor that versions source files by content, eager automation conditions
downstream (only what a change affects re-materializes), and the evaluation / SFT-rebuild schedules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from dagster import (
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
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from madef_assets.defs.sources.assets import content_version, raw_key, source_input_files
from madef_assets.settings import Settings

SOURCE_SENSOR = "source_files_changed"
AUTOMATION_SENSOR = "madef_automation"


def with_eager_automation(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """Every materializable asset re-materializes when one of its dependencies has a new version (a new
    materialization, or a new data version of a source's files), once none of its dependencies is missing
    or in progress."""
    return list(map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=AutomationCondition.eager()), assets))


def source_versions(settings: Settings, names: Iterable[str]) -> dict[str, str]:
    """The content hash of every configured source's input files, by source name."""
    return {name: content_version(source_input_files(settings.sources[name])) for name in names}


def build_source_sensor(settings: Settings):
    names = sorted(settings.sources)
    status = DefaultSensorStatus.RUNNING if settings.automation.sensors_running else DefaultSensorStatus.STOPPED

    @sensor(name=SOURCE_SENSOR, minimum_interval_seconds=settings.automation.source_poll_seconds, default_status=status,
            asset_selection=AssetSelection.keys(*(raw_key(n) for n in names)))
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
        observations = [AssetObservation(asset_key=raw_key(name), tags={DATA_VERSION_TAG: current[name]},
                                         metadata={"previous_version": previous.get(name) or "none"}) for name in changed]
        return SensorResult(asset_events=observations, cursor=json.dumps(current, sort_keys=True))

    return source_files_changed


def build_automation_sensor(settings: Settings) -> AutomationConditionSensorDefinition:
    status = DefaultSensorStatus.RUNNING if settings.automation.sensors_running else DefaultSensorStatus.STOPPED
    return AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=AssetSelection.all(), default_status=status, minimum_interval_seconds=30,
        description="Evaluates the assets' automation conditions (eager): requests what a change upstream affects.")


def build_schedules(settings: Settings, evaluate_job, rebuild_sft_job) -> list:
    automation = settings.automation
    candidates = [c.name for c in settings.evaluation.candidates]
    schedules = []

    def status(enabled: bool) -> DefaultScheduleStatus:
        return DefaultScheduleStatus.RUNNING if enabled else DefaultScheduleStatus.STOPPED

    if candidates:
        @schedule(name="evaluate_candidates", job=evaluate_job, cron_schedule=automation.evaluate_cron,
                  default_status=status(automation.evaluate_enabled), execution_timezone=automation.timezone)
        def evaluate_candidates(context: ScheduleEvaluationContext):
            """Re-evaluates every candidate (one run per partition); the report follows by automation."""
            for name in candidates:
                yield RunRequest(run_key=f"{name}-{context.scheduled_execution_time:%Y%m%dT%H%M}", partition_key=name)

        schedules.append(evaluate_candidates)

    @schedule(name="rebuild_sft_dataset", job=rebuild_sft_job, cron_schedule=automation.rebuild_sft_cron,
              default_status=status(automation.rebuild_sft_enabled), execution_timezone=automation.timezone)
    def rebuild_sft_dataset(context: ScheduleEvaluationContext):
        """Rebuilds the SFT set and everything it needs (sources → sft_dataset)."""
        return RunRequest(run_key=f"sft-{context.scheduled_execution_time:%Y%m%dT%H%M}")

    schedules.append(rebuild_sft_dataset)
    return schedules
