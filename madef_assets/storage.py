"""DuckDB storage: the polars I/O manager, short-lived connections and the SQL-file runner.

duckdb is pinned below 2: dagster-duckdb(-polars) 0.29 use the 1.x result API (`.arrow()`, a new
statement on a connection whose last result was not fetched) that duckdb 2 removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster import InputContext, MetadataValue, OutputContext, TableColumn, TableSchema
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsTypeHandler

from madef_assets.compat import DbTypeHandler, TableSlice
from madef_assets.settings import SQL_DIR

LOCK_RETRY_SECONDS = 120.0


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
    changed schema replaces the table, and the output reports Dagster's standard table metadata."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection):
        frame = obj.to_arrow()  # noqa: F841 - referenced by name in the SQL below
        target = f"{table_slice.schema}.{table_slice.table}"
        connection.execute(f"create schema if not exists {table_slice.schema}")
        if table_slice.partition_dimensions:
            connection.execute(f"create table if not exists {target} as select * from frame limit 0")
            add_new_columns(connection, table_slice.schema, table_slice.table, frame)
            connection.execute(f"insert into {target} by name select * from frame")
        else:
            connection.execute(f"create or replace table {target} as select * from frame")
        context.add_output_metadata({**table_metadata(obj), "dagster/table_name": target})

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pl.DataFrame:
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pl.DataFrame()
        return connection.execute(DuckDbClient.get_select_statement(table_slice)).pl()


def add_new_columns(connection, schema: str, table: str, frame) -> list[str]:
    """Columns of `frame` (an Arrow table) that the partitioned table lacks, added to it: the partitions
    written before a release that added a column keep NULL there instead of failing the write."""
    existing = {
        name
        for (name,) in connection.execute(
            "select column_name from duckdb_columns() where schema_name = ? and table_name = ?", [schema, table]
        ).fetchall()
    }
    added = []
    for name, column_type, *_ in connection.execute("describe select * from frame").fetchall():
        if name not in existing:
            connection.execute(f'alter table {schema}.{table} add column "{name}" {column_type}')
            added.append(name)
    return added


class MadefDuckDBIOManager(DuckDBIOManager):
    """DuckDB I/O manager for polars frames: an asset key prefix is the DuckDB schema (default `public`)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsTableHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


@contextmanager
def duckdb_connection(path: Path | str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection that waits (with backoff) while another process holds the file lock."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            connection = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        yield connection
    finally:
        connection.close()


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
