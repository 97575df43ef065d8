"""Pools name real contention: a local model's device, a served model's endpoint, nothing for a step
without a model; `madef run` launches independent runs at once through the instance's run launcher, each
step holding its pool."""

import os
import subprocess
import sys
import textwrap

import polars as pl
import pytest
import yaml
from dagster import DagsterInstance, RunsFilter

from madef_assets.definitions import build_definitions
from madef_assets.llm.pools import device_name, endpoint_name, model_pool, step_pool
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT
from madef_assets.settings import load_settings
from madef_assets.storage import duckdb_connection
from madef_assets_tests.openai_server import OpenAICompatibleServer
from madef_assets_tests.served_eval_defs import EVALUATE_JOB, INGEST_JOB


@pytest.mark.parametrize(
    ("backend", "options", "pool"),
    [
        ("transformers", {}, "device/cpu"),
        ("transformers", {"device": "auto"}, "device/cpu"),
        ("transformers", {"device": "cuda"}, "device/cuda0"),
        ("transformers", {"device": "cuda:1"}, "device/cuda1"),
        ("vllm", {}, "device/cuda0"),
        ("openai", {"base_url": "http://127.0.0.1:8000/v1"}, "endpoint/127.0.0.1_8000_v1"),
        (
            "openai",
            {"base_url": "https://api.example.com/compatible-mode/v1/"},
            "endpoint/api.example.com_443_compatible-mode_v1",
        ),
        ("openai", {"base_url": ["http://b:80/v1", "http://a/v1"]}, "endpoint/a_80_v1+b_80_v1"),
    ],
)
def test_a_model_pool_names_its_device_or_endpoint(backend, options, pool):
    assert model_pool(backend, options, auto_device="cpu") == pool


def test_auto_means_the_device_of_this_machine():
    assert model_pool("transformers", {"device": "auto"}, auto_device="cuda") == "device/cuda0"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: device_name("tpu"), "cpu, cuda"),
        (lambda: endpoint_name("127.0.0.1:8000/v1"), "http"),
        (lambda: model_pool("gguf", {}, "cpu"), "unknown backend"),
    ],
)
def test_what_names_no_pool_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_step_takes_the_scarcest_pool_of_its_models():
    endpoint, device = "endpoint/a_80_v1", "device/cuda0"
    assert step_pool([endpoint, device]) == device
    assert step_pool([device, endpoint]) == device
    assert step_pool(["endpoint/b_80_v1", endpoint, None]) == endpoint
    assert step_pool([None]) is None and step_pool([]) is None


def static_pools(profile: str) -> dict[str, str | None]:
    graph = build_definitions(load_settings(profile)).resolve_asset_graph()
    return {key.to_user_string(): graph.assets_def_for_key(key).op.pool for key in graph.materializable_asset_keys}


@pytest.mark.parametrize("profile", ["demo", "production"])
def test_pools_of_the_profiles_name_devices_and_endpoints(profile):
    pools = static_pools(profile)
    assert "duckdb" not in pools.values()
    for asset in ("xstest", "sft_dataset", "safety_sft_selected", "eval_report", "base_model_checkpoint"):
        assert pools[asset] is None, asset  # no model: no pool
    if profile == "demo":  # every model on the CPU
        assert {p for p in pools.values() if p} == {"device/cpu"}
        assert pools["intent_labels"] == pools["finetuned_checkpoint"] == "device/cpu"
    else:  # the responder on the vLLM server, the judge at DashScope: two endpoints, two pools
        assert pools["safe_responses"] == "endpoint/vllm_8000_v1"
        assert pools["response_safety_scores"] == "endpoint/dashscope.aliyuncs.com_443_compatible-mode_v1"
        assert pools["prompt_perplexity"] == pools["finetuned_checkpoint"] == "device/cuda0"


def test_production_candidates_hold_their_own_servers_pools():
    from madef_assets.defs.evaluation.candidates import candidate_pools

    assert candidate_pools(load_settings("production")) == {
        "base": "endpoint/vllm-base_8000_v1",
        "tuned": "endpoint/vllm-tuned_8000_v1",
    }


LAUNCH = textwrap.dedent(
    f"""
    import sys
    from dagster import DagsterInstance
    from madef_assets.cli import PlannedRun, launch_waves, prepare_dagster_home
    from madef_assets.settings import current_settings

    settings = current_settings()
    prepare_dagster_home(settings.state_dir)
    waves = [[PlannedRun({INGEST_JOB!r})]]
    waves += [[PlannedRun({EVALUATE_JOB!r}, c.name) for c in settings.evaluation.candidates]]
    with DagsterInstance.get() as instance:
        ok = launch_waves(instance, waves, settings.max_concurrent_runs, {{}}, "madef_assets_tests.served_eval_defs")
    sys.exit(0 if ok else 1)
    """
)


def served_profile(tmp_path, servers, executor: str, max_concurrent_runs: int) -> str:
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["execution"] = {"executor": executor, "max_concurrent_runs": max_concurrent_runs}
    raw["evaluation"]["candidates"] = {
        name: {
            "backend": "openai",
            "model": name,
            "base_url": server.base_url,
            "api_key_env": None,
            "api": "chat",
            "raw_api": "completions",
            "concurrency": 1,
        }
        for name, server in zip(("first", "second"), servers)
    }
    path = tmp_path / f"served_{executor}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(path)


def launch(tmp_path, servers, executor: str, max_concurrent_runs: int) -> tuple[pl.DataFrame, list, set[str]]:
    """Runs the two waves through `madef run`'s launcher in a process of its own; the candidates' answers,
    their evaluation runs' records and the pools the instance has seen."""
    state = tmp_path / executor
    env = {
        **os.environ,
        "MADEF_PROFILE": served_profile(tmp_path, servers, executor, max_concurrent_runs),
        "MADEF_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
    }
    done = subprocess.run([sys.executable, "-c", LAUNCH], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count(f"({EVALUATE_JOB}, candidate ") == 4  # each candidate's start and end
    settings = load_settings(env["MADEF_PROFILE"], env=env)
    with duckdb_connection(settings.duckdb_path, read_only=True) as connection:
        answers = connection.execute("SELECT * FROM public.safetybench_predictions").pl()
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.get_run_records(filters=RunsFilter(job_name=EVALUATE_JOB))
        pools = {limit.name for limit in instance.event_log_storage.get_pool_limits()}
    return answers.sort("candidate", *(c for c in answers.columns if c != "candidate")), records, pools


def test_madef_runs_candidates_on_two_endpoints_at_once_with_a_serial_runs_results(tmp_path):
    with OpenAICompatibleServer(latency_s=0.05) as first, OpenAICompatibleServer(latency_s=0.05) as second:
        together, records, pools = launch(tmp_path, (first, second), "in_process", 2)
        one_by_one, serial_records, _ = launch(tmp_path, (first, second), "multiprocess", 1)
    assert together.height > 0 and set(together["candidate"]) == {"first", "second"}
    assert together.equals(one_by_one)
    assert pools == {f"endpoint/{endpoint_name(s.base_url)}" for s in (first, second)}
    assert {r.dagster_run.status.value for r in records + serial_records} == {"SUCCESS"}
    a, b = records
    assert a.start_time < b.end_time and b.start_time < a.end_time  # the two evaluation runs overlapped
    c, d = serial_records
    assert c.end_time <= d.start_time or d.end_time <= c.start_time  # one at a time
    launched_by_the_instance = [".dagster/grpc_info" in r.dagster_run.tags for r in records + serial_records]
    assert launched_by_the_instance == [True, True, False, False]  # DefaultRunLauncher's tag; serial: in process


@pytest.mark.parametrize("value", [0, -1, True, "2"])
def test_max_concurrent_runs_is_a_positive_integer(value):
    from madef_assets.project import ConfigError
    from madef_assets.settings import parse_section

    assert parse_section("execution", {}).max_concurrent_runs == 1
    with pytest.raises(ConfigError, match="execution.max_concurrent_runs"):
        parse_section("execution", {"max_concurrent_runs": value})
