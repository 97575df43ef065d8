"""Sensor-driven re-runs and schedules, with Dagster's testing helpers (no daemon, no model)."""

import shutil
from datetime import datetime, timezone

import pytest
import yaml
from dagster import (
    AssetCheckEvaluation,
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

from madef_assets.compat import DATA_VERSION_TAG
from madef_assets.definitions import MAIN_JOB, REBUILD_SFT_JOB, build_definitions
from madef_assets.defs.automation import SOURCE_SENSOR
from madef_assets.defs.selection.checks import CONTAMINATION_CHECK
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT
from madef_assets.settings import load_settings
from madef_assets_tests.sft_tables import GENERAL, gsm8k_question, sft_settings, write_upstream

RAW_S_EVAL = AssetKey(["raw", "s_eval"])
SFT_PAIR = (AssetKey("sft_dataset"), AssetKey("sft_dataset_folder"))
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


def record_materializations(defs, instance, keys, versions=None) -> None:
    """Record a materialization of each asset (every partition), with a data version where `versions` has
    one; sft_dataset's blocking contamination gate is recorded as passed with it."""
    graph = defs.resolve_asset_graph()
    for key in keys:
        partitions = graph.get(key).partitions_def
        tags = {DATA_VERSION_TAG: versions[key]} if versions and key in versions else None
        for partition in partitions.get_partition_keys() if partitions else [None]:
            instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition, tags=tags))
        if key == SFT_PAIR[0]:
            instance.report_runless_asset_event(
                AssetCheckEvaluation(asset_key=key, check_name=CONTAMINATION_CHECK, passed=True)
            )


def materialize_everything(defs, instance, versions=None) -> None:
    """Record a materialization of every asset (and every partition), as after `madef run`."""
    record_materializations(defs, instance, defs.resolve_asset_graph().materializable_asset_keys, versions)


class Automation:
    """The automation sensor without a daemon: ticks the assets' conditions from a cursor and 'materializes'
    what each tick requests, until nothing more is requested. The SFT pair is content-versioned: a test
    either gives the versions its runs would have (`versions`) or runs those assets for real (`run_for_real`)."""

    def __init__(self, defs, instance):
        self.defs, self.instance = defs, instance
        self.cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor

    def requested_until_quiet(self, versions=None, run_for_real=(), max_ticks: int = 40) -> set[AssetKey]:
        requested: set[AssetKey] = set()
        for _ in range(max_ticks):
            result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
            self.cursor = result.cursor
            keys = {r.key for r in result.results if r.true_subset.size}
            if not keys:
                return requested
            requested |= keys
            real = sorted(keys & set(run_for_real))
            if real:  # a run stopped by a blocking check still records what it materialized
                self.defs.resolve_job_def(MAIN_JOB).execute_in_process(
                    instance=self.instance, asset_selection=real, raise_on_error=False
                )
            record_materializations(self.defs, self.instance, keys - set(real), versions)
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
        materialize_everything(defs, instance, versions={key: "content-1" for key in SFT_PAIR})
        automation = Automation(defs, instance)
        assert automation.requested_until_quiet() == set()  # everything is up to date

        unchanged = sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor))
        assert isinstance(unchanged, SkipReason)
        touched = tmp_path / "data" / "s_eval" / "base_risk_en_sample.jsonl"
        original_mtime = touched.stat().st_mtime
        touched.write_bytes(touched.read_bytes())
        assert touched.stat().st_mtime >= original_mtime
        assert isinstance(
            sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)), SkipReason
        ), "a new mtime with the same bytes is not a change"
        touched.write_text(touched.read_text(encoding="utf-8").replace("?", "？", 1), encoding="utf-8")
        second = sensor(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor))
        assert [e.asset_key for e in second.asset_events] == [RAW_S_EVAL]
        for event in second.asset_events:
            instance.report_runless_asset_event(event)
        requested = automation.requested_until_quiet(
            versions={key: "content-2" for key in SFT_PAIR}
        )  # the SFT set changed

    graph = defs.resolve_asset_graph()
    downstream = AssetSelection.assets(RAW_S_EVAL).downstream().resolve(graph) - {RAW_S_EVAL}
    assert requested == downstream
    for key in (
        "s_eval",
        "intent_labels",
        "attack_prompts",
        "sft_dataset",
        "finetuned_checkpoint",
        "new_safety_benchmark",
        "eval_report",
    ):
        assert AssetKey(key) in requested, key
    for key in (
        "general_sft",
        "general_sft_sample",
        "xsafety",
        "safetybench",
        "base_model_checkpoint",
        "review_decisions",
    ):
        assert AssetKey(key) not in requested, key


def test_only_a_real_change_of_the_sft_set_retrains_and_re_evaluates(tmp_path):
    """sft_dataset and its folder run for real on hand-made upstream tables; everything else is recorded."""
    settings = sft_settings(tmp_path)
    write_upstream(settings)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    downstream = {k for k in graph.materializable_asset_keys if graph.get(k).group_name in ("training", "evaluation")}
    rebuild_keys = defs.resolve_job_def(REBUILD_SFT_JOB).asset_layer.selected_asset_keys
    sensor = defs.resolve_sensor_def(SOURCE_SENSOR)

    def weekly_rebuild(automation) -> set[AssetKey]:
        """The rebuild_sft_dataset job's run (its model steps recorded, the SFT pair for real), then automation."""
        record_materializations(defs, instance, rebuild_keys - set(SFT_PAIR))
        assert (
            defs.resolve_job_def(MAIN_JOB).execute_in_process(instance=instance, asset_selection=list(SFT_PAIR)).success
        )
        return automation.requested_until_quiet(run_for_real=SFT_PAIR)

    with DagsterInstance.ephemeral() as instance:
        for event in sensor(build_sensor_context(instance=instance, definitions=defs)).asset_events:
            instance.report_runless_asset_event(event)
        materialize_everything(defs, instance)
        automation = Automation(defs, instance)
        first = weekly_rebuild(automation)  # the first content version: training and evaluation follow
        assert {AssetKey("finetuned_checkpoint"), AssetKey("candidate_model"), AssetKey("eval_report")} <= first

        same = weekly_rebuild(automation)
        assert same & downstream == set(), sorted(k.to_user_string() for k in same & downstream)
        assert AssetKey("sft_dataset_folder") not in same
        # an upstream re-materialization: sft_dataset re-runs (for real) to the same content, and nothing follows
        record_materializations(defs, instance, [AssetKey("general_sft_sample")])
        assert automation.requested_until_quiet(run_for_real=SFT_PAIR) == {AssetKey("sft_dataset")}

        write_upstream(
            settings,
            general=[
                *GENERAL[:-1],
                (
                    "gen06",
                    "general_sft",
                    "en",
                    "List two benefits of drinking water.",
                    "Hydration, and better concentration.",
                ),
            ],
        )
        changed = weekly_rebuild(automation)
        # a set blocked by its contamination gate: sft_dataset re-runs, and nothing downstream follows it
        write_upstream(settings, general=[*GENERAL, ("leak", "general_sft", "en", gsm8k_question(3), "An answer.")])
        record_materializations(defs, instance, [AssetKey("general_sft_sample")])
        assert automation.requested_until_quiet(run_for_real=SFT_PAIR) == {AssetKey("sft_dataset")}
        latest = instance.get_latest_materialization_event(AssetKey("sft_dataset")).asset_materialization
        assert latest.tags[DATA_VERSION_TAG].startswith("blocked-")
    for key in (
        "finetuned_checkpoint",
        "candidate_model",
        "new_safety_benchmark",
        "new_safety_responses",
        "eval_report",
    ):
        assert AssetKey(key) in changed, key
    assert not any(graph.get(k).group_name == "sources" for k in rebuild_keys), "the sources are the sensor's job"


def test_schedules_are_off_in_the_demo_and_request_every_candidate(tmp_path):
    settings = load_settings("demo", env={"MADEF_STATE_DIR": str(tmp_path)})
    defs = build_definitions(settings)
    evaluate = defs.resolve_schedule_def("evaluate_candidates")
    rebuild = defs.resolve_schedule_def("rebuild_sft_dataset")
    assert evaluate.default_status == rebuild.default_status == DefaultScheduleStatus.STOPPED
    assert (evaluate.cron_schedule, rebuild.cron_schedule) == ("0 2 * * *", "0 3 * * 0")
    with DagsterInstance.ephemeral() as instance:
        requests = evaluate.evaluate_tick(
            build_schedule_context(
                instance=instance, scheduled_execution_time=NIGHT, repository_def=defs.get_repository_def()
            )
        ).run_requests
        assert sorted(r.partition_key for r in requests) == sorted(c.name for c in settings.evaluation.candidates)
        assert len(requests) == 3  # base and the demo's two learning rates' tuned candidates
        assert (
            len(
                rebuild.evaluate_tick(
                    build_schedule_context(
                        instance=instance, scheduled_execution_time=NIGHT, repository_def=defs.get_repository_def()
                    )
                ).run_requests
            )
            == 1
        )
    rebuild_keys = defs.resolve_job_def("rebuild_sft_dataset").asset_layer.selected_asset_keys
    assert AssetKey("sft_dataset") in rebuild_keys and AssetKey("finetuned_checkpoint") not in rebuild_keys
    production = build_definitions(load_settings("production", env={"MADEF_STATE_DIR": str(tmp_path)}))
    assert production.resolve_schedule_def("evaluate_candidates").default_status == DefaultScheduleStatus.RUNNING


@pytest.mark.parametrize(
    "automation, message",
    [
        ({"schedules": {"hourly": {"cron": "0 * * * *"}}}, "automation.schedules.hourly: unknown key; allowed"),
        ({"schedules": {"evaluate_candidates": {"every": "day"}}}, "evaluate_candidates.every: unknown key"),
        ({"poll": 5}, "automation.poll: unknown key; allowed: schedules, sensors_running"),
    ],
)
def test_automation_config_errors(tmp_path, automation, message):
    from madef_assets.project import ConfigError
    from madef_assets.settings import parse_settings

    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["automation"] = automation
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, tmp_path / "x.yaml", {})
