"""Where madef's tables live, every connection to them, the polars I/O manager and the SQL-file runner.

Two kinds of storage (`Storage`; the profile's `duckdb_path` or MADEF_DUCKDB_PATH chooses):

- a local DuckDB file (a path): one process at a time holds it. A connection that finds it held by another
  process waits, with backoff, up to `duckdb_lock_wait_seconds`, then fails naming the file and the holder;
- DuckLake (`ducklake:postgres:<libpq conninfo>`): the catalog in a PostgreSQL database, the tables as
  Parquet files under `ducklake_data_path` (a folder every host mounts at the same path), for many
  processes on many hosts. Commits are optimistic: a write that loses a conflict is written again.

Every connection, the I/O manager's and the ledger's, is opened by `duckdb_connection`; DuckLake's
extensions are loaded from the `deploy` extra's PyPI packages, never downloaded.

duckdb is pinned below 2: dagster-duckdb(-polars) 0.29 use the 1.x result API (`.arrow()`, a new
statement on a connection whose last result was not fetched) that duckdb 2 removed.
"""

from __future__ import annotations

import importlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl
from dagster import (
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsTypeHandler
from pydantic import Field

from madef_assets.compat import DbIOManager, DbTypeHandler, TableSlice
from madef_assets.project import SQL_DIR, ConfigError, resolve_path

DEFAULT_LOCK_WAIT_SECONDS = 120.0
FIRST_LOCK_DELAY_S = 0.05  # the first wait for a locked DuckDB file; each next one doubles, up to 2 s
DUCKLAKE_PREFIX = "ducklake:postgres:"
# The DuckDB extensions DuckLake storage loads, by the PyPI package (the `deploy` extra) that ships each.
DUCKLAKE_EXTENSIONS = {"ducklake": "duckdb_extension_ducklake", "postgres_scanner": "duckdb_extension_postgres_scanner"}
LAKE = "madef_lake"
# A DuckLake write that lost a commit conflict is written again, this many times in all, with jittered backoff.
WRITE_ATTEMPTS = 6
SUPPORTED_FORMS = (
    "a local DuckDB file path, or ducklake:postgres:<libpq conninfo> (e.g. "
    "'ducklake:postgres:host=db.internal dbname=madef user=madef') together with ducklake_data_path "
    "(MADEF_DUCKLAKE_DATA_PATH)"
)
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
PASSWORD_IN_CONNINFO = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageLockTimeout(TimeoutError):
    """A local DuckDB file stayed locked by another process for the whole allowed wait."""


@dataclass(frozen=True)
class Storage:
    """Where the tables live: `location` is a local DuckDB file path or `ducklake:postgres:<conninfo>`.
    Checked when made: any other form (MotherDuck `md:`, another `ducklake:` catalog, a URL, `:memory:`) is a
    ConfigError, never a local file of that name."""

    location: str
    ducklake_data_path: str | None = None
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS

    def __post_init__(self) -> None:
        problems = storage_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def is_ducklake(self) -> bool:
        return self.location.startswith(DUCKLAKE_PREFIX)

    @property
    def path(self) -> Path:
        """The local DuckDB file."""
        if self.is_ducklake:
            raise ValueError(f"the storage is DuckLake ({self.location}), not a local DuckDB file")
        return Path(self.location)

    def resource_fields(self) -> dict[str, Any]:
        """The LLMResource fields that carry this storage to a step's process."""
        return {
            "duckdb_path": self.location,
            "ducklake_data_path": self.ducklake_data_path,
            "duckdb_lock_wait_seconds": self.lock_wait_seconds,
        }


def storage_problems(storage: Storage) -> list[str]:
    location, data_path = storage.location, storage.ducklake_data_path
    problems = []
    if not isinstance(storage.lock_wait_seconds, (int, float)) or not storage.lock_wait_seconds > 0:
        problems.append(f"duckdb_lock_wait_seconds: a positive number of seconds, got {storage.lock_wait_seconds!r}")
    if location.startswith(DUCKLAKE_PREFIX):
        conninfo = location[len(DUCKLAKE_PREFIX) :]
        if not conninfo.strip():
            problems.append(f"duckdb_path {location!r}: no PostgreSQL connection string after {DUCKLAKE_PREFIX!r}")
        if PASSWORD_IN_CONNINFO.search(conninfo):
            problems.append(
                "duckdb_path: the PostgreSQL connection string holds a password; give it in the environment "
                "instead (PGPASSWORD or a PGPASSFILE), which libpq reads"
            )
        if not data_path:
            problems.append(
                "DuckLake storage needs ducklake_data_path (profile) or MADEF_DUCKLAKE_DATA_PATH: the folder "
                "that holds the tables' Parquet files, mounted at the same path on every host"
            )
        elif URL_LIKE.match(data_path):
            problems.append(
                f"ducklake_data_path {data_path!r}: a folder path (a shared filesystem); object stores need "
                "DuckDB's httpfs/cloud extensions, which madef does not ship"
            )
        return problems
    if location.startswith(("md:", "motherduck:")):
        problems.append(
            f"duckdb_path {location!r}: MotherDuck is not supported (madef cannot test it); use {SUPPORTED_FORMS}"
        )
    elif location.startswith("ducklake:"):
        problems.append(f"duckdb_path {location!r}: DuckLake needs a PostgreSQL catalog; use {SUPPORTED_FORMS}")
    elif not location.strip() or location.startswith(":") or URL_LIKE.match(location):
        problems.append(f"duckdb_path {location!r} is not a storage madef supports; use {SUPPORTED_FORMS}")
    elif data_path:
        problems.append(f"ducklake_data_path is set but duckdb_path {location!r} is not DuckLake storage")
    return problems


def parse_storage(location: str | Path, data_path: str | None, lock_wait: Any, base: Path) -> Storage:
    """The storage a profile (or the environment) names: a file path is resolved against `base`; a URL-like
    value is kept as written, for Storage to accept (DuckLake) or refuse."""
    text = str(location)
    if not (URL_LIKE.match(text) or text.startswith(":") or not text.strip()):
        text = str(resolve_path(text, base))
    if data_path and not URL_LIKE.match(str(data_path)):
        data_path = str(resolve_path(data_path, base))
    try:
        seconds = DEFAULT_LOCK_WAIT_SECONDS if lock_wait in (None, "") else float(lock_wait)
    except (TypeError, ValueError):
        raise ConfigError(f"duckdb_lock_wait_seconds: a positive number of seconds, got {lock_wait!r}") from None
    return Storage(location=text, ducklake_data_path=data_path or None, lock_wait_seconds=seconds)


def as_storage(storage: Storage | Path | str) -> Storage:
    return storage if isinstance(storage, Storage) else Storage(location=str(storage))


@contextmanager
def duckdb_connection(storage: Storage | Path | str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the storage (a plain path: a local DuckDB file), closed at the end."""
    storage = as_storage(storage)
    connection = _open_ducklake(storage, read_only) if storage.is_ducklake else _open_file(storage, read_only)
    try:
        yield connection
    finally:
        connection.close()


def _open_file(storage: Storage, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not read_only:
        storage.path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    delay = FIRST_LOCK_DELAY_S
    while True:
        try:
            connection = duckdb.connect(storage.location, read_only=read_only)
        except duckdb.IOException as exc:
            if "could not set lock" not in str(exc).lower():
                raise
            waited = time.monotonic() - started
            found = LOCK_HOLDER.search(str(exc))
            holder = f"{found.group(1)} (PID {found.group(2)})" if found else str(exc)
            if waited >= storage.lock_wait_seconds:
                raise StorageLockTimeout(
                    f"DuckDB file {storage.location} is still locked by another process after waiting "
                    f"{waited:.1f}s (duckdb_lock_wait_seconds={storage.lock_wait_seconds:g}): the lock is held "
                    f"by {holder}"
                ) from exc
            if delay == FIRST_LOCK_DELAY_S:
                log.info("waiting for DuckDB file %s, locked by %s", storage.location, holder)
            time.sleep(min(delay, storage.lock_wait_seconds - waited))
            delay = min(delay * 2, 2.0)
            continue
        if delay != FIRST_LOCK_DELAY_S:
            log.info("waited %.2f s for the DuckDB file lock of %s", time.monotonic() - started, storage.location)
        return connection


def extension_file(name: str) -> Path:
    """The extension binary for this DuckDB release, from its PyPI package (the `deploy` extra)."""
    package = DUCKLAKE_EXTENSIONS[name]
    try:
        folder = Path(importlib.import_module(package).__file__).parent
    except ImportError:
        folder = None
    path = folder / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension" if folder else None
    if path is None or not path.is_file():
        raise RuntimeError(
            f"DuckLake storage needs the DuckDB extension {name} for DuckDB {duckdb.__version__} from the "
            f"package {package.replace('_', '-')}=={duckdb.__version__}: pip install 'madef[deploy]'"
            + (f" (no {path})" if path else "")
        )
    return path


def _open_ducklake(storage: Storage, read_only: bool) -> duckdb.DuckDBPyConnection:
    extensions = [extension_file(name) for name in DUCKLAKE_EXTENSIONS]
    options = f"DATA_PATH '{_quote(storage.ducklake_data_path)}'" + (", READ_ONLY" if read_only else "")
    attempt = 1
    while True:
        connection = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        try:
            for path in extensions:
                connection.execute(f"LOAD '{_quote(str(path))}'")
            connection.execute(f"ATTACH '{_quote(storage.location)}' AS {LAKE} ({options})")
            connection.execute(f"USE {LAKE}")
            return connection
        except BaseException as exc:
            connection.close()
            # Processes attaching a new lake at once all create its catalog tables; the losers' creations
            # fail (PostgreSQL rolls them back) and their next attach finds the winner's catalog.
            if "failed to initialize ducklake" not in str(exc).lower() or attempt == WRITE_ATTEMPTS:
                raise
        time.sleep(random.uniform(0.05, 0.1) * 2**attempt)
        attempt += 1


def _quote(text: str) -> str:
    return text.replace("'", "''")


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and "transaction conflict" in str(exc).lower()


def with_conflict_retries(write: Callable[[], T], on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """`write()` (a whole transaction: it must start over from nothing), again after a commit conflict
    (DuckLake's optimistic concurrency; a local file, held by one process at a time, has none across
    processes), up to WRITE_ATTEMPTS times in all."""
    attempt = 1
    while True:
        try:
            return write()
        except duckdb.Error as exc:
            if not is_conflict(exc) or attempt == WRITE_ATTEMPTS:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            time.sleep(random.uniform(0.05, 0.1) * 2**attempt)
            attempt += 1


def table_metadata(df: pl.DataFrame) -> dict[str, Any]:
    """Dagster's standard row-count and column-schema metadata for a table."""
    return {
        "dagster/row_count": MetadataValue.int(df.height),
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=n, type=str(t)) for n, t in df.schema.items()])
        ),
    }


class PolarsTableHandler(DuckDBPolarsTypeHandler):
    """Stores polars frames as whole tables: empty frames still create their (typed) table, a
    changed schema replaces the table, and the output reports Dagster's standard table metadata
    (returned, not added: a write retried after a conflict reports it once)."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection):
        frame = obj.to_arrow()  # noqa: F841 - referenced by name in the SQL below
        target = f"{table_slice.schema}.{table_slice.table}"
        if table_slice.partition_dimensions:
            connection.execute(f"create table if not exists {target} as select * from frame limit 0")
            add_new_columns(connection, table_slice.schema, table_slice.table, frame)
            connection.execute(f"insert into {target} by name select * from frame")
        else:
            connection.execute(f"create or replace table {target} as select * from frame")
        return table_metadata(obj)

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pl.DataFrame:
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pl.DataFrame()
        return connection.execute(DuckDbClient.get_select_statement(table_slice)).pl()


def table_exists(connection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from duckdb_tables() "
            "where database_name = current_database() and schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def add_new_columns(connection, schema: str, table: str, frame) -> list[str]:
    """Columns of `frame` (an Arrow table) that the partitioned table lacks, added to it: the partitions
    written before a release that added a column keep NULL there instead of failing the write."""
    existing = {
        name
        for (name,) in connection.execute(
            "select column_name from duckdb_columns() "
            "where database_name = current_database() and schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchall()
    }
    added = []
    for name, column_type, *_ in connection.execute("describe select * from frame").fetchall():
        if name not in existing:
            connection.execute(f'alter table {schema}.{table} add column "{name}" {column_type}')
            added.append(name)
    return added


class MadefDbClient(DuckDbClient):
    """dagster-duckdb's client over madef's connections: each output is written in one transaction (schema,
    the partition's delete, the write), so no reader ever sees it half done."""

    def __init__(self, storage: Storage):
        self.storage = storage

    @contextmanager
    def connect(self, context: OutputContext | InputContext, table_slice: TableSlice):
        with duckdb_connection(self.storage) as connection:
            if not isinstance(context, OutputContext):
                yield connection
                return
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # An unpartitioned table is replaced whole by the handler; only a partition's rows are deleted first.
        if table_slice.partition_dimensions and table_exists(connection, table_slice.schema, table_slice.table):
            DuckDbClient.delete_table_slice(context, table_slice, connection)

    @staticmethod
    def get_table_name(table_slice: TableSlice) -> str:
        return f"{table_slice.schema}.{table_slice.table}"


class MadefDbIOManager(DbIOManager):
    def handle_output(self, context: OutputContext, obj: object) -> None:
        def retrying(attempt: int, exc: BaseException) -> None:
            context.log.warning(f"writing {context.asset_key.to_user_string()} again (attempt {attempt + 1}): {exc}")

        with_conflict_retries(lambda: super(MadefDbIOManager, self).handle_output(context, obj), retrying)


class MadefDuckDBIOManager(ConfigurableIOManagerFactory):
    """The I/O manager for polars frames: an asset key prefix is the schema (default `public`), the asset's
    name the table, in the storage `database` names (with `ducklake_data_path` for DuckLake)."""

    database: str = Field(description="A local DuckDB file, or ducklake:postgres:<libpq conninfo>.")
    ducklake_data_path: str | None = Field(default=None, description="DuckLake's data folder.")
    duckdb_lock_wait_seconds: float = Field(
        default=DEFAULT_LOCK_WAIT_SECONDS, description="How long a connection waits for a local file's lock."
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsTableHandler()]

    def storage(self) -> Storage:
        return Storage(self.database, self.ducklake_data_path, self.duckdb_lock_wait_seconds)

    def create_io_manager(self, context) -> MadefDbIOManager:
        return MadefDbIOManager(
            type_handlers=self.type_handlers(),
            db_client=MadefDbClient(self.storage()),
            database=self.database,
            io_manager_name="MadefDuckDBIOManager",
            default_load_type=pl.DataFrame,
        )


def sql_text(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text(encoding="utf-8")


def run_sql(name: str, **frames: pl.DataFrame) -> pl.DataFrame:
    """Run dbt_like_sql/<name>.sql in an in-memory DuckDB where each frame is a view of its name."""
    with duckdb.connect() as connection:
        for view, frame in frames.items():
            connection.register(view, frame.to_arrow())
        return connection.execute(sql_text(name)).pl()
