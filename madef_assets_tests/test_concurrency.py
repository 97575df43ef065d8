"""Two (here three) materializations at once on one DuckDB file all succeed."""

import os
import subprocess
import sys

import duckdb
from dagster import DagsterInstance

from madef_assets.cli import INSTANCE_YAML
from madef_assets_tests.openai_server import OpenAICompatibleServer

DAGSTER = os.path.join(os.path.dirname(sys.executable), "dagster")


def test_concurrent_materializations_share_one_duckdb_file(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    # Create Dagster's own SQLite storage once, as `madef run` or `dagster dev` would have done.
    with DagsterInstance.from_config(str(home)):
        pass
    database = tmp_path / "shared.duckdb"
    with OpenAICompatibleServer(latency_s=0.01) as server:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "MADEF_PROFILE": "demo",
            "MADEF_DUCKDB_PATH": str(database),
            "MADEF_STATE_DIR": str(tmp_path / "state"),
            "MADEF_TEST_OPENAI_URL": server.base_url,
            "MADEF_TEST_PROMPTS": "300",
            "MADEF_TEST_CONCURRENCY": "4",
        }
        commands = [
            [DAGSTER, "asset", "materialize", "-m", "madef_assets.definitions", "--select", "group:sources"],
            [DAGSTER, "asset", "materialize", "-m", "madef_assets_tests.ledger_defs", "--select", "llm_answers"],
            [DAGSTER, "asset", "materialize", "-m", "madef_assets.definitions", "--select", "group:sources"],
        ]
        logs = [tmp_path / f"run{i}.log" for i in range(len(commands))]
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
            for command, log in zip(commands, logs)
        ]
        outcomes = [(p.wait(timeout=300), log.read_text()) for p, log in zip(processes, logs)]
    for returncode, stderr in outcomes:
        assert returncode == 0, stderr[-3000:]
        assert "Could not set lock" not in stderr
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("select count(*) from public.safetybench").fetchone()[0] == 2100
        assert connection.execute("select count(*) from public.llm_answers").fetchone()[0] == 300
        assert connection.execute("select count(*) from llm_ledger").fetchone()[0] == 300
        assert connection.execute("select sum(rows_in) from public.source_summary").fetchone()[0] == 6126


def test_a_killed_madef_run_leaves_no_run_holding_the_pool(tmp_path):
    """A SIGKILLed `madef run` leaves its run STARTED with its pool slot (here the CPU's) claimed; the next
    `madef run` must fail that run and free the slot (it waited forever before), and leave runs of live
    processes or without the tag (web UI, daemon) alone."""
    from dagster import DagsterRun, DagsterRunStatus

    from madef_assets.orphan_runs import PROCESS_TAG, fail_orphaned_runs, process_tag

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone_tag = process_tag(gone.pid)
    gone.kill()
    gone.wait()
    with DagsterInstance.from_config(str(home)) as instance:
        runs = {"killed": {PROCESS_TAG: gone_tag}, "live": {PROCESS_TAG: process_tag()}, "ui": {}}
        for name, tags in runs.items():
            instance.add_run(
                DagsterRun(job_name="madef_build", run_id=f"{name}-run", status=DagsterRunStatus.STARTED, tags=tags)
            )
            instance.event_log_storage.set_concurrency_slots("device/cpu", 3)
            instance.event_log_storage.claim_concurrency_slot("device/cpu", f"{name}-run", "step")
        assert fail_orphaned_runs(instance) == ["killed-run"]
        assert instance.get_run_by_id("killed-run").status == DagsterRunStatus.FAILURE
        assert {instance.get_run_by_id(f"{n}-run").status for n in ("live", "ui")} == {DagsterRunStatus.STARTED}
        claims = instance.event_log_storage.get_concurrency_info("device/cpu").claimed_slots
        assert sorted(claim.run_id for claim in claims) == ["live-run", "ui-run"]
        assert fail_orphaned_runs(instance) == []
