"""A local DuckDB file under concurrent writers: separate OS processes materialize through madef's I/O
manager while the file is locked, so every writer waits for the lock at the same moment; afterwards every
table holds exactly one writer's output (never a mix, never part of one). A lock held past the allowed
wait fails with the file, the holder and the time waited."""

import os

import duckdb
import polars as pl

from madef_assets.storage import Storage
from madef_assets_tests.storage_worker import start_writer, writer_frame

COLUMNS = "writer, i, payload"


def read_table(database, table: str, where: str = "") -> pl.DataFrame:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(f"select {COLUMNS} from public.{table} {where} order by i").pl()


def release_together(database, writers) -> list[dict]:
    """Holds the file's lock until every writer is waiting for it, then lets them race; their outcomes."""
    with duckdb.connect(str(database)):
        for writer in writers:
            writer.wait_until_waiting_for_lock()
    return [writer.finish() for writer in writers]


def test_two_processes_write_different_assets_at_once(tmp_path):
    database = tmp_path / "madef.duckdb"
    storage = Storage(str(database))
    writers = [start_writer(tmp_path, storage, "alpha", "A", 3000), start_writer(tmp_path, storage, "beta", "B", 2000)]
    outcomes = release_together(database, writers)
    assert [o["success"] for o in outcomes] == [True, True], outcomes
    assert read_table(database, "alpha").equals(writer_frame("A", 3000))
    assert read_table(database, "beta").equals(writer_frame("B", 2000))


def test_two_runs_write_the_same_table_and_the_same_partition(tmp_path):
    database = tmp_path / "madef.duckdb"
    storage = Storage(str(database))
    assert start_writer(tmp_path, storage, "gamma", "base", 500, "p0").finish()["success"]
    writers = [
        start_writer(tmp_path, storage, "alpha", "A", 3000),
        start_writer(tmp_path, storage, "alpha", "B", 2000),
        start_writer(tmp_path, storage, "gamma", "A", 3000, "p1"),
        start_writer(tmp_path, storage, "gamma", "B", 2000, "p1"),
    ]
    outcomes = release_together(database, writers)
    assert all(o["success"] for o in outcomes), outcomes
    alpha = read_table(database, "alpha")
    assert alpha.equals(writer_frame("A", 3000)) or alpha.equals(writer_frame("B", 2000)), alpha
    p1 = read_table(database, "gamma", "where part = 'p1'")
    assert p1.equals(writer_frame("A", 3000)) or p1.equals(writer_frame("B", 2000)), p1
    assert read_table(database, "gamma", "where part = 'p0'").equals(writer_frame("base", 500))


def test_a_lock_held_past_the_wait_fails_naming_file_holder_and_wait(tmp_path):
    database = tmp_path / "madef.duckdb"
    with duckdb.connect(str(database)):
        outcome = start_writer(tmp_path, Storage(str(database), lock_wait_seconds=0.5), "alpha", "A", 10).finish()
    assert not outcome["success"]
    (failure,) = outcome["failures"]
    assert f"DuckDB file {database} is still locked by another process after waiting" in failure
    assert "(duckdb_lock_wait_seconds=0.5): the lock is held by " in failure
    assert f"(PID {os.getpid()})" in failure
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("select count(*) from duckdb_tables()").fetchone()[0] == 0
