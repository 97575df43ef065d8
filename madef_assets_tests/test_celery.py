"""The celery executor for real: Redis and two `dagster-celery` workers as separate processes
(celery_cluster.py) build the graph from the sources through selection, every LLM role on the local
OpenAI-compatible server, as deploy/celery/run_config.yaml configures it. The event log shows which worker
ran each step; every table equals the one-process run's over the same slice, in a DuckDB file of its own.
A worker SIGKILLed in an LLM step costs, on the rerun, only the calls whose answers it had not written."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterEventType, DagsterInstance, DagsterRunStatus

from madef_assets.cli import INSTANCE_YAML
from madef_assets.definitions import build_definitions
from madef_assets.project import PROJECT_ROOT
from madef_assets.settings import load_settings
from madef_assets_tests.celery_cluster import VENV_BIN, celery_workers, redis_server, stop_group
from madef_assets_tests.ledger_process import ledger_rows
from madef_assets_tests.openai_server import OpenAICompatibleServer

sys.path.insert(0, str(PROJECT_ROOT / "bench"))

from rehearsal import small_profile  # noqa: E402
from rehearsal_model import answer  # noqa: E402

RUN_CONFIG = PROJECT_ROOT / "deploy" / "celery" / "run_config.yaml"
SLICE_END = "safety_sft_selected"
WORKERS = ["worker1", "worker2"]
KILLED_STEP = "intent_labels"  # 48 labeler calls at this size
RUN_TIMEOUT_S = 900


def write_profile(server_url: str, target: Path, executor: str) -> Path:
    """bench/rehearsal.py's small profile (every LLM role served by `server_url`) with this executor."""
    small_profile(server_url, target)
    raw = yaml.safe_load(target.read_text(encoding="utf-8"))
    raw["execution"] = {"executor": executor}
    target.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def slice_keys(profile: Path) -> list[AssetKey]:
    """Every materializable asset upstream of SLICE_END, with the other outputs of the same multi-assets."""
    graph = build_definitions(load_settings(str(profile), env={})).resolve_asset_graph()
    selection = AssetSelection.assets(SLICE_END).upstream().materializable().required_multi_asset_neighbors()
    return sorted(selection.resolve(graph), key=lambda key: key.to_user_string())


def run_env(folder: Path, profile: Path, broker_url: str) -> dict[str, str]:
    """What a run and its workers share: profile, state, DuckDB file, Dagster instance, broker; the API key
    (the folder's name) tells the server whose calls it answers."""
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML, encoding="utf-8")  # as `madef run` writes it
    with DagsterInstance.from_config(str(home)):
        pass  # its SQLite storage created here: workers starting together would race to create it
    return {
        **os.environ,
        "MADEF_PROFILE": str(profile),
        "MADEF_STATE_DIR": str(folder / "state"),
        "MADEF_DUCKDB_PATH": str(folder / "madef.duckdb"),
        "DAGSTER_HOME": str(home),
        "MADEF_REHEARSAL_KEY": folder.name,
        "MADEF_CELERY_BROKER_URL": broker_url,
        "MADEF_CELERY_BACKEND_URL": broker_url,
    }


def start_materialize(env: dict[str, str], keys: list[AssetKey], log: Path, *config: Path) -> subprocess.Popen:
    """`dagster asset materialize` in a process group of its own, as a deployment runs it."""
    command = [os.path.join(VENV_BIN, "dagster"), "asset", "materialize", "-m", "madef_assets.definitions"]
    command += ["--select", ",".join(key.to_user_string() for key in keys)]
    command += [arg for path in config for arg in ("-c", str(path))]
    return subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def table_hashes(path: Path, keys: list[AssetKey]) -> dict[str, tuple]:
    """Per asset table: its columns, row count and the sum of its row hashes (independent of row order)."""
    hashes = {}
    with duckdb.connect(str(path), read_only=True) as connection:
        for key in keys:
            schema, table = key.path if len(key.path) == 2 else ("public", key.path[0])
            columns = connection.execute(
                "select column_name, data_type from duckdb_columns() where schema_name = ? and table_name = ? "
                "order by column_index",
                [schema, table],
            ).fetchall()
            rows, row_hash = connection.execute(f"select count(*), sum(hash(t)) from {schema}.{table} t").fetchone()
            hashes[f"{schema}.{table}"] = (columns, rows, row_hash)
    return hashes


def steps_by_worker(home: Path) -> dict[str, tuple[str, int]]:
    """Per step of the instance's latest run: the worker that took it (its engine event's `Celery worker`)
    and the pid of the process that started it (STEP_START)."""
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(limit=1)
        delegated = {}
        for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            event = record.event_log_entry.dagster_event
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                delegated[event.step_key] = worker.value
        started = {
            record.event_log_entry.step_key: record.event_log_entry.dagster_event.pid
            for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records
        }
    assert set(started) == set(delegated), "a step started without a celery worker taking it"
    return {step: (delegated[step], pid) for step, pid in started.items()}


@dataclass
class Cluster:
    root: Path
    broker_url: str
    server: OpenAICompatibleServer
    keys: list[AssetKey]
    celery_profile: Path
    reference_run: subprocess.Popen

    def reference(self) -> Path:
        """The one-process run's folder, once it has succeeded."""
        log = self.root / "in_process.log"
        assert self.reference_run.wait(RUN_TIMEOUT_S) == 0, log.read_text()[-5000:]
        return self.root / "in_process"

    def env(self, folder: Path) -> dict[str, str]:
        return run_env(folder, self.celery_profile, self.broker_url)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Redis, the OpenAI-compatible server and the one-process reference run, started in the background
    (it goes on while the first test's workers start)."""
    root = tmp_path_factory.mktemp("celery")
    with redis_server(root / "redis") as broker_url, OpenAICompatibleServer(answer=answer) as server:
        profile = write_profile(server.base_url, root / "in_process.yaml", "in_process")
        keys = slice_keys(profile)
        env = run_env(root / "in_process", profile, broker_url)
        reference_run = start_materialize(env, keys, root / "in_process.log")
        try:
            celery_profile = write_profile(server.base_url, root / "celery.yaml", "celery")
            yield Cluster(root, broker_url, server, keys, celery_profile, reference_run)
        finally:
            stop_group(reference_run)


def calls_by(server: OpenAICompatibleServer, folder: Path) -> int:
    return server.authorizations[f"Bearer {folder.name}"]


@pytest.mark.timeout(RUN_TIMEOUT_S * 2)
def test_two_celery_workers_build_the_slice_as_one_process_does(cluster, tmp_path):
    distributed, log = tmp_path / "two_workers", tmp_path / "run.log"
    env = cluster.env(distributed)
    with celery_workers(WORKERS, cluster.broker_url, RUN_CONFIG, env, tmp_path) as workers:
        run = start_materialize(env, cluster.keys, log, RUN_CONFIG)
        try:
            assert run.wait(RUN_TIMEOUT_S) == 0, log.read_text()[-5000:]
        finally:
            stop_group(run)
        steps = steps_by_worker(distributed / "dagster_home")
        # Each step ran in a pool process of the worker that took it (its process group), not in the run's.
        groups = {node: process.pid for process, node in workers.values()}
        assert {node for node, _ in steps.values()} == set(groups), steps
        for step, (node, pid) in steps.items():
            assert os.getpgid(pid) == groups[node], step
    reference = cluster.reference()
    calls = ledger_rows(reference / "madef.duckdb")
    assert calls_by(cluster.server, distributed) == calls_by(cluster.server, reference) == calls > 0
    assert table_hashes(distributed / "madef.duckdb", cluster.keys) == table_hashes(
        reference / "madef.duckdb", cluster.keys
    )


def wait_for_answers_in_step(home: Path, step: str, server: OpenAICompatibleServer, run: subprocess.Popen) -> int:
    """Once `step` has started and the server has answered one more call since: the pid that runs it."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline and run.poll() is None:
            started = [
                record
                for dagster_run in instance.get_runs()
                for record in instance.get_records_for_run(
                    dagster_run.run_id, of_type=DagsterEventType.STEP_START
                ).records
            ]
            pids = [r.event_log_entry.dagster_event.pid for r in started if r.event_log_entry.step_key == step]
            if pids:
                answered = server.answered_ok
                while server.answered_ok == answered and time.monotonic() < deadline:
                    time.sleep(0.01)
                return pids[0]
            time.sleep(0.05)
    raise AssertionError(f"step {step} did not start (run exit {run.poll()})")


def free_slots_of_the_failed_run(home: Path) -> None:
    """The killed step never ended, so its pool slot stays claimed after its run failed: freed here as the
    daemon's run monitoring does (docker/dagster.yaml, free_slots_after_run_end_seconds)."""
    with DagsterInstance.from_config(str(home)) as instance:
        (dagster_run,) = instance.get_runs()
        assert dagster_run.status == DagsterRunStatus.FAILURE
        succeeded = instance.get_records_for_run(dagster_run.run_id, of_type=DagsterEventType.STEP_SUCCESS).records
        assert KILLED_STEP not in {r.event_log_entry.step_key for r in succeeded}
        instance.event_log_storage.free_concurrency_slots_for_run(dagster_run.run_id)


@pytest.mark.timeout(RUN_TIMEOUT_S * 3)
def test_a_worker_killed_in_an_llm_step_costs_the_rerun_only_the_unwritten_calls(cluster, tmp_path):
    reference = cluster.reference()
    calls = ledger_rows(reference / "madef.duckdb")
    folder, log = tmp_path / "killed_worker", tmp_path / "killed_run.log"
    env = cluster.env(folder)
    home = folder / "dagster_home"
    cluster.server.latency_s = 1.0  # the killed step's calls are in flight, a first few answered, when it dies
    try:
        with celery_workers(WORKERS, cluster.broker_url, RUN_CONFIG, env, tmp_path) as workers:
            run = start_materialize(env, cluster.keys, log, RUN_CONFIG)
            try:
                pid = wait_for_answers_in_step(home, KILLED_STEP, cluster.server, run)
                (killed,) = [name for name, (process, _) in workers.items() if process.pid == os.getpgid(pid)]
                os.killpg(os.getpgid(pid), signal.SIGKILL)
                # The run waits for the lost task forever; a person stops it (Ctrl-C): the run fails.
                run.send_signal(signal.SIGINT)
                assert run.wait(RUN_TIMEOUT_S) != 0
            finally:
                stop_group(run)
            free_slots_of_the_failed_run(home)
            kept = ledger_rows(folder / "madef.duckdb")
            assert 0 < kept < calls
            cluster.server.latency_s = 0.0
            sent_before = calls_by(cluster.server, folder)
            rerun_log = tmp_path / "rerun.log"
            rerun = start_materialize(env, cluster.keys, rerun_log, RUN_CONFIG)
            try:
                assert rerun.wait(RUN_TIMEOUT_S) == 0, rerun_log.read_text()[-5000:]
            finally:
                stop_group(rerun)
            (survivor,) = {node for name, (_, node) in workers.items() if name != killed}
            assert {node for node, _ in steps_by_worker(home).values()} == {survivor}
    finally:
        cluster.server.latency_s = 0.0
    assert calls_by(cluster.server, folder) - sent_before == calls - kept
    assert ledger_rows(folder / "madef.duckdb") == calls
    assert table_hashes(folder / "madef.duckdb", cluster.keys) == table_hashes(reference / "madef.duckdb", cluster.keys)
