"""DuckLake storage (PostgreSQL catalog, Parquet files in a shared folder) for real: a PostgreSQL server
started by the tests, two worker processes writing through madef's I/O manager at the same moment, the
ledger, a commit conflict written again; and every storage form madef refuses, with its error."""

import threading

import duckdb
import pytest

from madef_assets.llm.ledger import Ledger, LedgerWriter, ledger_key
from madef_assets.project import ConfigError
from madef_assets.settings import load_settings
from madef_assets.storage import DUCKLAKE_PREFIX, Storage, duckdb_connection, extension_file, with_conflict_retries
from madef_assets_tests.postgres_server import postgres_server
from madef_assets_tests.storage_worker import start_writer, writer_frame
from madef_assets_tests.test_ledger import PRECEDENCE_CASES, check_precedence, ledger_row

pytest.importorskip("duckdb_extension_ducklake", reason="DuckLake's extension package: pip install 'madef[deploy]'")


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture
def lake(postgres, tmp_path, request) -> Storage:
    """A new lake: its own catalog database and data folder."""
    conninfo = postgres.create_database(request.node.name.lower().replace("[", "_").replace("]", ""))
    return Storage(DUCKLAKE_PREFIX + conninfo, ducklake_data_path=str(tmp_path / "lake"))


def read_table(lake: Storage, table: str, where: str = ""):
    with duckdb_connection(lake, read_only=True) as connection:
        return connection.execute(f"select writer, i, payload from public.{table} {where} order by i").pl()


def write_at_once(tmp_path, lake: Storage, jobs) -> list[dict]:
    """Starts one worker per (asset, writer, rows, partition) and releases their writes at one moment."""
    barrier = tmp_path / "go"
    writers = [start_writer(tmp_path, lake, *job, barrier=barrier) for job in jobs]
    for writer in writers:
        writer.wait_until_ready()
    barrier.touch()
    return [writer.finish() for writer in writers]


def test_two_workers_write_different_assets_at_once(lake, tmp_path):
    outcomes = write_at_once(tmp_path, lake, [("alpha", "A", 3000, None), ("beta", "B", 2000, None)])
    assert [o["success"] for o in outcomes] == [True, True], outcomes
    assert read_table(lake, "alpha").equals(writer_frame("A", 3000))
    assert read_table(lake, "beta").equals(writer_frame("B", 2000))
    # both partitions of one new table at once: their creations conflict, and the loser writes again
    outcomes = write_at_once(tmp_path, lake, [("gamma", "A", 1500, "p0"), ("gamma", "B", 2500, "p1")])
    assert [o["success"] for o in outcomes] == [True, True], outcomes
    assert read_table(lake, "gamma", "where part = 'p0'").equals(writer_frame("A", 1500))
    assert read_table(lake, "gamma", "where part = 'p1'").equals(writer_frame("B", 2500))
    # the same table from two runs: one whole output wins
    outcomes = write_at_once(tmp_path, lake, [("alpha", "C", 1000, None), ("alpha", "D", 4000, None)])
    assert [o["success"] for o in outcomes] == [True, True], outcomes
    alpha = read_table(lake, "alpha")
    assert alpha.equals(writer_frame("C", 1000)) or alpha.equals(writer_frame("D", 4000)), alpha
    assert list((tmp_path / "lake").rglob("*.parquet")), "the tables' files live under the data path"


def test_a_commit_conflict_is_written_again(lake):
    """A write whose commit loses to another's (both replace one table) is run again from the start."""
    with duckdb_connection(lake) as connection:
        connection.execute("create schema public; create table public.t as select 0 as v")
    attempts, retried = [], []

    def replace_table():
        with duckdb_connection(lake) as connection:
            connection.begin()
            connection.execute(f"create or replace table public.t as select {len(attempts) + 1} as v")
            if not attempts:
                with duckdb_connection(lake) as other:
                    other.execute("create or replace table public.t as select 99 as v")
            attempts.append(1)
            connection.commit()

    with_conflict_retries(replace_table, lambda attempt, exc: retried.append(str(exc)))
    assert len(attempts) == 2 and len(retried) == 1 and "Transaction conflict" in retried[0]
    with duckdb_connection(lake, read_only=True) as connection:
        assert connection.execute("select v from public.t").fetchall() == [(2,)]


def test_the_ledger_on_ducklake(lake):
    """Two writer threads (each its own connections, as two processes) append through LedgerWriter;
    lookup finds every row, and the precedence rules (rowid ranges, the latest best row) hold."""
    ledger = Ledger(lake)
    keys = {name: [ledger_key("generate", "openai", {}, {}, f"{name} {i}", "v1") for i in range(300)] for name in "AB"}

    def write(name):
        with LedgerWriter(ledger, rows=64, seconds=60) as writer:
            for i, key in enumerate(keys[name]):
                writer.add(ledger_row(key, f"{name} {i}", output=f"{name} answer {i}"))

    threads = [threading.Thread(target=write, args=(name,)) for name in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = Ledger(lake).lookup([*keys["A"], *keys["B"], "f" * 64])
    assert found == {
        key: {"output": f"{name} answer {i}", "status": "ok", "error": None}
        for name in keys
        for i, key in enumerate(keys[name])
    }
    check_precedence(ledger)
    with duckdb_connection(lake, read_only=True) as connection:
        assert connection.execute("select count(*) from llm_ledger").fetchone()[0] == 600 + sum(
            len(statuses) for statuses, _ in PRECEDENCE_CASES
        )


def test_ducklake_storage_from_the_environment(tmp_path):
    settings = load_settings(
        env={
            "MADEF_DUCKDB_PATH": "ducklake:postgres:host=db.internal dbname=madef user=madef",
            "MADEF_DUCKLAKE_DATA_PATH": str(tmp_path / "lake"),
            "MADEF_DUCKDB_LOCK_WAIT_SECONDS": "5",
        }
    )
    assert settings.storage == Storage(
        "ducklake:postgres:host=db.internal dbname=madef user=madef", str(tmp_path / "lake"), 5.0
    )
    with pytest.raises(ValueError, match="not a local DuckDB file"):
        settings.duckdb_path


@pytest.mark.parametrize(
    ("location", "data_path", "message"),
    [
        ("md:madef", None, "MotherDuck is not supported"),
        ("motherduck:madef", None, "MotherDuck is not supported"),
        ("ducklake:metadata.ducklake", "/lake", "DuckLake needs a PostgreSQL catalog"),
        ("ducklake:sqlite:x.db", "/lake", "DuckLake needs a PostgreSQL catalog"),
        ("ducklake:postgres:dbname=madef", None, "DuckLake storage needs ducklake_data_path"),
        ("ducklake:postgres:", "/lake", "no PostgreSQL connection string"),
        ("ducklake:postgres:dbname=madef password=hunter2", "/lake", "holds a password"),
        ("ducklake:postgres:postgresql://madef:hunter2@db/madef", "/lake", "holds a password"),
        ("ducklake:postgres:dbname=madef", "s3://bucket/lake", "object stores need"),
        ("s3://bucket/madef.duckdb", None, "is not a storage madef supports"),
        ("http://example.org/madef.duckdb", None, "is not a storage madef supports"),
        ("x:y", None, "is not a storage madef supports"),
        (":memory:", None, "is not a storage madef supports"),
        ("state/madef.duckdb", "/lake", "is not DuckLake storage"),
    ],
)
def test_unsupported_storage_is_a_clear_error_never_a_local_file(tmp_path, monkeypatch, location, data_path, message):
    monkeypatch.chdir(tmp_path)
    env = {"MADEF_DUCKDB_PATH": location, **({"MADEF_DUCKLAKE_DATA_PATH": data_path} if data_path else {})}
    with pytest.raises(ConfigError, match=message) as error:
        load_settings(env=env)
    assert "hunter2" not in str(error.value)
    if "supports" in message or "MotherDuck" in message:
        assert "ducklake:postgres:<libpq conninfo>" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_storage_in_the_profile_is_refused_too(tmp_path):
    import yaml

    from madef_assets.project import CONFIG_DIR

    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**raw, "duckdb_path": "md:madef"}))
    with pytest.raises(ConfigError, match="MotherDuck is not supported"):
        load_settings(str(tmp_path / "p.yaml"), env={})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**raw, "duckdb_lock_wait_seconds": 0}))
    with pytest.raises(ConfigError, match="duckdb_lock_wait_seconds: a positive number"):
        load_settings(str(tmp_path / "p.yaml"), env={})


def test_a_missing_extension_names_the_install_command(monkeypatch):
    monkeypatch.setattr(duckdb, "__version__", "0.0.0")
    with pytest.raises(RuntimeError, match=r"pip install 'madef\[deploy\]'"):
        extension_file("ducklake")
