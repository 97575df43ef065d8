"""The LLM-call ledger: an LLM asset of 2,000 rows materialized, then re-materialized unchanged
(backend calls must be 0; wall time against the first run), and a run killed (SIGKILL) halfway and
resumed (calls on resume against the rows missing from the ledger). The asset and its resources are
madef_assets_tests/ledger_defs.py; the server answers after a fixed latency, in this process's threads.

    .venv/bin/python bench/ledger_rerun.py [--rows 2000] [--latency 0.1] [--concurrency 8] [--repeats 3]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from madef_assets_tests.openai_server import OpenAICompatibleServer

VENV_BIN = Path(sys.executable).parent


def environment(server: OpenAICompatibleServer, database: Path, rows: int, concurrency: int) -> dict[str, str]:
    return {
        "MADEF_DUCKDB_PATH": str(database),
        "MADEF_TEST_OPENAI_URL": server.base_url,
        "MADEF_TEST_PROMPTS": str(rows),
        "MADEF_TEST_CONCURRENCY": str(concurrency),
    }


def materialize(env: dict[str, str]) -> float:
    """Wall seconds of one in-process materialization of llm_answers under `env`."""
    os.environ.update(env)
    from dagster import DagsterInstance
    from dagster import materialize as dagster_materialize

    from madef_assets_tests import ledger_defs

    started = time.perf_counter()
    result = dagster_materialize(
        [ledger_defs.llm_answers], resources=ledger_defs.resources_from_env(), instance=DagsterInstance.ephemeral()
    )
    assert result.success
    return time.perf_counter() - started


def ledger_rows(database: Path) -> int:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute("SELECT count(*) FROM llm_ledger").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    firsts, reruns, rerun_calls = [], [], []
    with tempfile.TemporaryDirectory() as tmp, OpenAICompatibleServer(latency_s=args.latency) as server:
        for repeat in range(args.repeats):
            env = environment(server, Path(tmp) / f"ledger{repeat}.duckdb", args.rows, args.concurrency)
            firsts.append(materialize(env))
            before = server.total_requests
            reruns.append(materialize(env))
            rerun_calls.append(server.total_requests - before)
        first, rerun = statistics.median(firsts), statistics.median(reruns)
        print(
            f"{args.rows} rows, {args.latency * 1000:.0f} ms per call, concurrency {args.concurrency}, "
            f"median of {args.repeats}\n"
        )
        print("| run | seconds | backend calls | vs first run |\n|---|---|---|---|")
        print(f"| first materialization | {first:.2f} | {args.rows} | 1.00 |")
        print(f"| unchanged re-materialization | {rerun:.2f} | {max(rerun_calls)} | {rerun / first:.3f} |")

        database = Path(tmp) / "killed.duckdb"
        env = environment(server, database, args.rows, args.concurrency)
        dagster_home = Path(tmp) / "dagster_home"  # the CLI would otherwise leave a temporary home in the cwd
        dagster_home.mkdir()
        process = subprocess.Popen(
            [
                str(VENV_BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "madef_assets_tests.ledger_defs",
                "--select",
                "llm_answers",
            ],
            env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        start_count = server.answered_ok
        while server.answered_ok - start_count < args.rows // 2 and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered_before_kill = server.answered_ok - start_count
        kept = ledger_rows(database)
        before = server.total_requests
        resume_seconds = materialize(env)
        resume_calls = server.total_requests - before
        print(
            f"| killed at {answered_before_kill} answers, {kept} kept in the ledger; resumed | {resume_seconds:.2f} | "
            f"{resume_calls} | missing rows {args.rows - kept}, calls / missing = "
            f"{resume_calls / (args.rows - kept):.3f} |"
        )


if __name__ == "__main__":
    main()
