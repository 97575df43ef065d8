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
        assert connection.execute("select sum(rows_in) from public.source_summary").fetchone()[0] == 5676
