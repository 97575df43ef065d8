"""Sensor-driven re-runs and schedules, with Dagster's testing helpers (no daemon, no model)."""

import shutil
from datetime import datetime, timezone

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
)

from madef_assets.defs.automation import SOURCE_SENSOR
from madef_assets.definitions import build_definitions
from madef_assets.settings import CONFIG_DIR, PROJECT_ROOT, load_settings

RAW_S_EVAL = AssetKey(["raw", "s_eval"])
NIGHT = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


def profile_with_copied_sources(tmp_path) -> str:
    """The demo profile over a copy of the bundled data, so a test can change a file."""
    shutil.copytree(PROJECT_ROOT / "data", tmp_path / "data")
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    for source in raw["sources"].values():
        for file in source["files"]:
            for key in ("path", "answers"):
                if key in file:
                    file[key] = str(tmp_path / file[key])
    raw["evaluation"]["general"]["data_dir"] = str(tmp_path / "data" / "general_eval")
    path = tmp_path / "copied.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(path)


def materialize_everything(defs, instance) -> None:
    """Record a materialization of every asset (and every partition), as after `madef run`."""
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        partitions = graph.get(key).partitions_def
        for partition in partitions.get_partition_keys() if partitions else [None]:
            instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))


def requested_until_quiet(defs, instance, cursor, max_ticks: int = 40) -> set[AssetKey]:
    """Tick the automation conditions, 'materialize' what each tick requests, until nothing is requested."""
    requested: set[AssetKey] = set()
    for _ in range(max_ticks):
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        keys = {r.key for r in result.results if r.true_subset.size}
        if not keys:
            return requested
        requested |= keys
        graph = defs.resolve_asset_graph()
        for key in keys:
            partitions = graph.get(key).partitions_def
            for partition in partitions.get_partition_keys() if partitions else [None]:
                instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))
    raise AssertionError(f"automation still requesting after {max_ticks} ticks: {sorted(requested)}")


def test_a_changed_source_file_re_materializes_exactly_what_depends_on_it(tmp_path):
    settings = load_settings(profile_with_copied_sources(tmp_path), env={"MADEF_STATE_DIR": str(tmp_path / "state")})
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def(SOURCE_SENSOR)
    with DagsterInstance.ephemeral() as instance:
        first = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert {e.asset_key for e in first.asset_events} == {AssetKey(["raw", n]) for n in settings.sources}
        for event in first.asset_events:
            instance.report_runless_asset_event(event)
        materialize_everything(defs, instance)
        cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor
        assert requested_until_quiet(defs, instance, cursor) == set()  # everything is up to date

        unchanged = sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor))
        assert isinstance(unchanged, SkipReason)
        touched = tmp_path / "data" / "s_eval" / "base_risk_en_sample.jsonl"
        original_mtime = touched.stat().st_mtime
        touched.write_bytes(touched.read_bytes())
        assert touched.stat().st_mtime >= original_mtime
        assert isinstance(sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)), SkipReason), \
            "a new mtime with the same bytes is not a change"
        touched.write_text(touched.read_text(encoding="utf-8").replace("?", "？", 1), encoding="utf-8")
        second = sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor))
        assert [e.asset_key for e in second.asset_events] == [RAW_S_EVAL]
        for event in second.asset_events:
            instance.report_runless_asset_event(event)
        requested = requested_until_quiet(defs, instance, cursor)

    graph = defs.resolve_asset_graph()
    downstream = AssetSelection.assets(RAW_S_EVAL).downstream().resolve(graph) - {RAW_S_EVAL}
    assert requested == downstream
    for key in ("s_eval", "intent_labels", "attack_prompts", "sft_dataset", "finetuned_checkpoint", "new_safety_benchmark", "eval_report"):
        assert AssetKey(key) in requested, key
    for key in ("general_sft", "general_sft_sample", "xsafety", "safetybench", "base_model_checkpoint", "review_decisions"):
        assert AssetKey(key) not in requested, key


def test_schedules_are_off_in_the_demo_and_request_every_candidate(tmp_path):
    settings = load_settings("demo", env={"MADEF_STATE_DIR": str(tmp_path)})
    defs = build_definitions(settings)
    evaluate = defs.resolve_schedule_def("evaluate_candidates")
    rebuild = defs.resolve_schedule_def("rebuild_sft_dataset")
    assert evaluate.default_status == rebuild.default_status == DefaultScheduleStatus.STOPPED
    assert (evaluate.cron_schedule, rebuild.cron_schedule) == ("0 2 * * *", "0 3 * * 0")
    with DagsterInstance.ephemeral() as instance:
        requests = evaluate.evaluate_tick(build_schedule_context(instance=instance, scheduled_execution_time=NIGHT, repository_def=defs.get_repository_def())).run_requests
        assert sorted(r.partition_key for r in requests) == ["base", "tuned"]
        assert len(rebuild.evaluate_tick(build_schedule_context(instance=instance, scheduled_execution_time=NIGHT, repository_def=defs.get_repository_def())).run_requests) == 1
    rebuild_keys = defs.resolve_job_def("rebuild_sft_dataset").asset_layer.selected_asset_keys
    assert AssetKey("sft_dataset") in rebuild_keys and AssetKey("finetuned_checkpoint") not in rebuild_keys
    production = build_definitions(load_settings("production", env={"MADEF_STATE_DIR": str(tmp_path)}))
    assert production.resolve_schedule_def("evaluate_candidates").default_status == DefaultScheduleStatus.RUNNING


@pytest.mark.parametrize("automation, message", [
    ({"schedules": {"hourly": {"cron": "0 * * * *"}}}, "unknown schedules"),
    ({"schedules": {"evaluate_candidates": {"every": "day"}}}, "unknown keys"),
    ({"poll": 5}, "automation: unknown keys"),
])
def test_automation_config_errors(tmp_path, automation, message):
    from madef_assets.settings import ConfigError, parse_settings

    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["automation"] = automation
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, tmp_path / "x.yaml", {})
