"""One writer process of the storage concurrency tests: materializes one small asset through madef's I/O
manager into the storage the environment names, and prints the outcome as one JSON line.

    python -m madef_assets_tests.storage_worker <asset> <writer> <rows> [<partition>]

Environment: MADEF_DUCKDB_PATH, MADEF_DUCKLAKE_DATA_PATH, MADEF_DUCKDB_LOCK_WAIT_SECONDS (the storage);
MADEF_TEST_READY / MADEF_TEST_BARRIER (optional): the asset body creates the first file, then waits for the
second to exist before returning its frame, so the test releases several writers' writes at one moment.
Lock waits are logged (INFO) on stderr."""

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, DagsterInstance, StaticPartitionsDefinition, asset, materialize

from madef_assets.project import PROJECT_ROOT
from madef_assets.storage import MadefDuckDBIOManager, Storage, parse_storage

PARTITIONS = StaticPartitionsDefinition(["p0", "p1"])
BARRIER_TIMEOUT_S = 120


def writer_frame(writer: str, rows: int, partition: str | None = None) -> pl.DataFrame:
    """The frame a writer writes: every row names the writer, `i` numbers the rows 0..rows-1."""
    return pl.DataFrame(
        {
            "writer": [writer] * rows,
            "i": list(range(rows)),
            "payload": [f"{writer}-{i}-" + "x" * 40 for i in range(rows)],
            **({"part": [partition] * rows} if partition else {}),
        }
    )


def released_frame(partition: str | None = None) -> pl.DataFrame:
    ready, barrier = os.environ.get("MADEF_TEST_READY"), os.environ.get("MADEF_TEST_BARRIER")
    if ready:
        Path(ready).touch()
    if barrier:
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while not Path(barrier).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test never released the barrier {barrier}")
            time.sleep(0.01)
    return writer_frame(os.environ["MADEF_TEST_WRITER"], int(os.environ["MADEF_TEST_ROWS"]), partition)


@asset
def alpha() -> pl.DataFrame:
    """A whole table."""
    return released_frame()


@asset
def beta() -> pl.DataFrame:
    """Another whole table."""
    return released_frame()


@asset(partitions_def=PARTITIONS, metadata={"partition_expr": "part"})
def gamma(context: AssetExecutionContext) -> pl.DataFrame:
    """A partitioned table: each partition's rows are replaced by its write."""
    return released_frame(context.partition_key)


ASSETS = {"alpha": alpha, "beta": beta, "gamma": gamma}


def storage_env(storage: Storage) -> dict[str, str]:
    env = {**os.environ, "MADEF_DUCKDB_PATH": storage.location}
    env["MADEF_DUCKDB_LOCK_WAIT_SECONDS"] = str(storage.lock_wait_seconds)
    env.pop("MADEF_DUCKLAKE_DATA_PATH", None)
    if storage.ducklake_data_path:
        env["MADEF_DUCKLAKE_DATA_PATH"] = storage.ducklake_data_path
    return env


@dataclass
class Writer:
    """A running writer process (the test side)."""

    name: str
    process: subprocess.Popen
    stdout: Path
    stderr: Path
    ready: Path

    def wait_for(self, seen: Callable[[], bool], what: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not seen():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"writer {self.name} never {what}:\n{self.stderr.read_text()[-4000:]}")
            time.sleep(0.02)

    def wait_until_ready(self) -> None:
        self.wait_for(self.ready.exists, "reached its write")

    def wait_until_waiting_for_lock(self) -> None:
        self.wait_for(lambda: "waiting for DuckDB file" in self.stderr.read_text(), "waited for the lock")

    def finish(self, timeout_s: float = 300) -> dict:
        self.process.wait(timeout_s)
        lines = self.stdout.read_text().strip().splitlines()
        assert lines, f"writer {self.name} printed no outcome:\n{self.stderr.read_text()[-4000:]}"
        return json.loads(lines[-1])


def start_writer(
    folder: Path,
    storage: Storage,
    asset_name: str,
    writer: str,
    rows: int,
    partition: str | None = None,
    barrier: Path | None = None,
) -> Writer:
    name = f"{asset_name}-{partition or 'all'}-{writer}"
    stdout, stderr, ready = (folder / f"{name}.{suffix}" for suffix in ("out", "err", "ready"))
    env = {**storage_env(storage), "MADEF_TEST_READY": str(ready)}
    if barrier is not None:
        env["MADEF_TEST_BARRIER"] = str(barrier)
    arguments = [asset_name, writer, str(rows), *([partition] if partition else [])]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "madef_assets_tests.storage_worker", *arguments],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    return Writer(name, process, stdout, stderr, ready)


def main(name: str, writer: str, rows: str, partition: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    os.environ.update(MADEF_TEST_WRITER=writer, MADEF_TEST_ROWS=rows)
    storage = parse_storage(
        os.environ["MADEF_DUCKDB_PATH"],
        os.environ.get("MADEF_DUCKLAKE_DATA_PATH"),
        os.environ.get("MADEF_DUCKDB_LOCK_WAIT_SECONDS"),
        PROJECT_ROOT,
    )
    manager = MadefDuckDBIOManager(
        database=storage.location,
        ducklake_data_path=storage.ducklake_data_path,
        duckdb_lock_wait_seconds=storage.lock_wait_seconds,
    )
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [ASSETS[name]],
        resources={"io_manager": manager},
        partition_key=partition,
        instance=instance,
        raise_on_error=False,
    )
    failures = [
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if event.is_step_failure and event.event_specific_data.error
    ]
    retries = [
        entry.user_message for entry in instance.all_logs(result.run_id) if "again (attempt" in entry.user_message
    ]
    print(json.dumps({"success": result.success, "failures": failures, "retries": retries}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
