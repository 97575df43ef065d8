"""The code location: validation, asset conventions, metadata, gates, and profile overrides."""

import json
import os
import subprocess
import sys

import duckdb
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import MAIN_JOB, OBSERVE_JOB, build_definitions
from madef_assets.project import CONFIG_DIR, ROLES, ConfigError
from madef_assets.settings import load_settings

DAGSTER = os.path.join(os.path.dirname(sys.executable), "dagster")


def profile_with(tmp_path, **changes) -> str:
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    if "sources" in changes:
        raw["evaluation"] = {}  # its benchmarks name the demo's sources; no candidates, no evaluation assets
    raw.update(changes)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(path)


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "MADEF_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "madef_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_profiles_name_a_model_for_every_role():
    for profile in ("demo", "production"):
        settings = load_settings(profile, env={})
        assert set(settings.roles) == set(ROLES)
        assert all(role.backend in ("transformers", "openai", "vllm") for role in settings.roles.values())


def test_environment_overrides_profile_and_paths(tmp_path):
    settings = load_settings(
        env={
            "MADEF_PROFILE": "production",
            "MADEF_DUCKDB_PATH": str(tmp_path / "x.duckdb"),
            "MADEF_STATE_DIR": str(tmp_path / "st"),
        }
    )
    assert settings.profile == "production"
    assert settings.duckdb_path == tmp_path / "x.duckdb"
    assert settings.state_dir == tmp_path / "st"
    assert load_settings(env={"MADEF_STATE_DIR": str(tmp_path / "st")}).duckdb_path == tmp_path / "st" / "madef.duckdb"
    with pytest.raises(ConfigError, match="known profiles"):
        load_settings("staging", env={})
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    del raw["models"]["judge"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="missing key 'judge'"):
        load_settings(str(tmp_path / "broken.yaml"), env={})


GROUPS = {
    "sources",
    "intent",
    "diversity",
    "responses",
    "reward",
    "selection",
    "training",
    "evaluation",
    "qualification",
}


def test_assets_have_docstring_group_and_kinds():
    defs = build_definitions(load_settings("demo", env={}))
    graph = defs.resolve_asset_graph()
    materializable = [key for key in graph.materializable_asset_keys]
    for name in (
        "s_eval",
        "intent_labels",
        "label_taxonomy",
        "intent_distribution",
        "category_quota",
        "augmented_prompts",
        "attack_prompts",
        "safe_responses",
        "prompt_perplexity",
        "response_safety_scores",
        "instruction_safety_scores",
        "reward_features",
        "safety_sft_selected",
        "general_sft_sample",
        "sft_dataset",
        "base_model_checkpoint",
        "finetuned_checkpoint",
        "candidate_model",
        "safetybench_predictions",
        "safetybench_scores",
        "new_safety_benchmark",
        "new_safety_responses",
        "new_safety_judgements",
        "review_queue",
        "review_decisions",
        "new_safety_scores",
        "responsibility_responses",
        "responsibility_judgements",
        "responsibility_mcq_predictions",
        "responsibility_scores",
        "general_capability_predictions",
        "general_capability_scores",
        "eval_report",
        "judge_qualification",
        "labeler_qualification",
        "taxonomy_decisions",
    ):
        assert AssetKey(name) in materializable, name
    assert {graph.get(key).group_name for key in graph.get_all_asset_keys()} == GROUPS
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        if node.is_materializable:
            assert node.kinds, key


def run_sources(settings, instance=None):
    """Materialize only the sources group (the method's LLM steps have tests of their own)."""
    defs = build_definitions(settings)
    keys = [
        k
        for k in defs.resolve_asset_graph().materializable_asset_keys
        if defs.resolve_asset_graph().get(k).group_name == "sources"
    ]
    return defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance or DagsterInstance.ephemeral(), asset_selection=keys, raise_on_error=False
    )


def test_main_job_materializes_everything_with_table_metadata(tmp_path):
    settings = load_settings(env={"MADEF_STATE_DIR": str(tmp_path / "state")})
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        observed = defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance)
        result = run_sources(settings, instance)
        assert observed.success and result.success
        versions = {
            key: instance.get_latest_data_version_record(key) for key in defs.resolve_asset_graph().external_asset_keys
        }
    assert len(versions) == len(settings.sources) and all(versions.values())
    materializations = result.get_asset_materialization_events()
    assert len(materializations) == 2 * len(settings.sources) + 2
    for event in materializations:
        metadata = event.materialization.metadata
        assert "dagster/row_count" in metadata and "dagster/column_schema" in metadata, event.asset_key
    check_results = result.get_asset_check_evaluations()
    assert len(check_results) == 2 * len(settings.sources) and all(c.passed for c in check_results)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        summary = connection.execute(
            "select source, rows_in, rows_normalized, rows_quarantined, rows_merged from public.source_summary"
        ).fetchall()
    assert all(rows_in == normalized + quarantined + merged for _, rows_in, normalized, quarantined, merged in summary)


def test_quarantine_gate_blocks_downstream(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(
        '[{"instruction": "ok", "output": "fine"}, {"instruction": " ", "output": "x"}, {"output": "y"}]'
    )
    sources = {"tiny_sft": {"reader": "alpaca", "files": [{"path": str(bad_json), "lang": "en"}]}}
    settings = load_settings(
        profile_with(tmp_path, sources=sources, method={"general_sources": ["tiny_sft"]}),
        env={"MADEF_STATE_DIR": str(tmp_path / "state")},
    )
    result = run_sources(settings)
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    gate = checks["quarantine_share_within_limit"]
    assert not gate.passed and gate.metadata["quarantine_share"].value == pytest.approx(2 / 3, abs=1e-4)
    assert checks["rows_in_equal_normalized_plus_quarantined"].passed
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("source_summary") not in materialized


def test_missing_source_file_fails_with_file_and_key(tmp_path):
    sources = {"gone": {"reader": "s_eval", "files": [{"path": str(tmp_path / "missing.jsonl")}]}}
    settings = load_settings(
        profile_with(tmp_path, sources=sources, method={"attack_sources": ["gone"]}),
        env={"MADEF_STATE_DIR": str(tmp_path / "state")},
    )
    result = run_sources(settings)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "sources.gone.files[0]" in str(failure.step_failure_data.error) and "missing.jsonl" in str(
        failure.step_failure_data.error
    )


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"train_sources": ["nope"]}, r"method.train_sources: \['nope'\] are not configured"),
        ({"train_sources": ["s_eval"], "eval_sources": ["s_eval"]}, "cannot be both train_sources and eval_sources"),
        ({"quota": 3}, r"method.quota: unknown key; allowed: attack_sources, "),
        ({"selection": {"min_safety": 0.5}}, r"method.selection.min_safety: unknown key; allowed: max_instruction"),
    ],
)
def test_method_config_errors(tmp_path, method, message):
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["method"].update(method)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError, match=message):
        load_settings(str(tmp_path / "p.yaml"), env={})


def test_a_partitioned_table_gains_new_columns_instead_of_failing(tmp_path):
    """A release that adds a column to a partitioned asset (e.g. SafetyBench predictions' `lang`) must not
    break the next write into a DuckDB file written by the previous one: old partitions keep NULL."""
    import polars as pl
    from dagster import StaticPartitionsDefinition, asset, materialize

    from madef_assets.storage import MadefDuckDBIOManager

    partitions = StaticPartitionsDefinition(["base", "tuned"])
    columns = {"score": [1.0]}

    @asset(partitions_def=partitions, metadata={"partition_expr": "candidate"})
    def scores(context) -> pl.DataFrame:
        return pl.DataFrame({"candidate": [context.partition_key], **columns})

    manager = {"io_manager": MadefDuckDBIOManager(database=str(tmp_path / "db.duckdb"))}
    assert materialize([scores], resources=manager, partition_key="base").success
    columns["lang"] = ["zh"]
    assert materialize([scores], resources=manager, partition_key="tuned").success
    with duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True) as connection:
        rows = connection.execute("select candidate, score, lang from public.scores order by candidate").fetchall()
    assert rows == [("base", 1.0, None), ("tuned", 1.0, "zh")]


def test_the_graph_is_the_snapshot_s():
    """A change of asset keys, deps, partitions, checks, groups, kinds or jobs fails here until the snapshot
    is rewritten (python -m madef_assets_tests.definitions_snapshot --write) with the change reviewed."""
    from madef_assets_tests.definitions_snapshot import SNAPSHOT, current_snapshot, differences

    stored = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert differences(stored, current_snapshot()) == []


def test_snapshot_differences_name_what_changed():
    from madef_assets_tests.definitions_snapshot import differences

    asset = {"deps": ["a"], "group": "g", "kinds": ["sql"], "partitions": None, "checks": []}
    stored = {"demo": {"assets": {"x": asset, "gone": asset}, "jobs": ["j"]}}
    current = {"demo": {"assets": {"x": {**asset, "deps": ["a", "b"]}, "new": asset}, "jobs": ["j", "k"]}}
    assert differences(stored, current) == [
        "demo: jobs ['j'] -> ['j', 'k']",
        "demo: new added",
        "demo: gone removed",
        "demo: x.deps ['a'] -> ['a', 'b']",
    ]
