"""The LLM-call ledger: every backend call keyed by what determines its answer.

The key hashes (kind, backend, model fingerprint, parameters, rendered prompt, template version).
The table is append-only and each key's best final row wins at lookup (STATUS_PRECEDENCE), so a write
never checks what is already there. Reads and writes open a connection to the storage (a DuckDB file or
DuckLake, madef_assets/storage.py) only for the statement: no connection is held while a backend works, so
other processes can write between flushes.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from madef_assets.storage import Storage, as_storage, duckdb_connection, sql_text, with_conflict_retries

LEDGER_COLUMNS = {
    "key": pl.Utf8,
    "key_hash": pl.UInt64,
    "role": pl.Utf8,
    "kind": pl.Utf8,
    "backend": pl.Utf8,
    "model": pl.Utf8,
    "template_version": pl.Utf8,
    "params": pl.Utf8,
    "prompt": pl.Utf8,
    "output": pl.Utf8,
    "status": pl.Utf8,
    "error": pl.Utf8,
    "prompt_tokens": pl.Int32,
    "completion_tokens": pl.Int32,
    "latency_s": pl.Float64,
    "run_id": pl.Utf8,
    "created_at": pl.Datetime("us"),
}
# Candidate rows closer than a DuckDB row group are read in one range: scanning a gap that small costs
# less than another range.
ROW_GROUP_ROWS = 122_880
FLUSH_ROWS = 256
FLUSH_SECONDS = 2.0
# Statuses whose call is never sent again, best first: when one key has rows of several (two processes
# racing, a moderated sample next to an answered one, an old parser's parse_error), lookup returns the
# best, never a later worse one. `error` (and any status not listed) is retried. read_llm_ledger_rows.sql
# and find_llm_ledger_rows.sql spell the same order.
STATUS_PRECEDENCE = ("ok", "refused", "parse_error")
STATUSES = (*STATUS_PRECEDENCE, "error")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def ledger_key(
    kind: str, backend: str, fingerprint: dict[str, Any], params: dict[str, Any], prompt: str, template_version: str
) -> str:
    material = canonical_json(
        {
            "kind": kind,
            "backend": backend,
            "model": fingerprint,
            "params": params,
            "prompt": prompt,
            "template": template_version,
        }
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def key_hash(key: str) -> int:
    """The key's first 64 bits, as stored in `key_hash` (the same rule as unkey_llm_ledger.sql)."""
    return int(key[:16], 16)


def row_ranges(row_ids: Sequence[int], gap: int = ROW_GROUP_ROWS) -> list[tuple[int, int]]:
    """Sorted row ids as inclusive (first, last) ranges, joining neighbours less than `gap` apart."""
    ranges: list[tuple[int, int]] = []
    for row_id in row_ids:
        if ranges and row_id - ranges[-1][1] < gap:
            ranges[-1] = (ranges[-1][0], row_id)
        else:
            ranges.append((row_id, row_id))
    return ranges


class Ledger:
    def __init__(self, storage: Storage | Path | str):
        """`storage`: a Storage, or a local DuckDB file's path."""
        self.storage = as_storage(storage)
        with_conflict_retries(self._create)

    def _create(self) -> None:
        with duckdb_connection(self.storage) as connection:
            if _has_primary_key(connection):
                connection.execute("BEGIN TRANSACTION")
                connection.execute("ALTER TABLE llm_ledger RENAME TO llm_ledger_keyed")
                connection.execute(sql_text("ledger/create_llm_ledger"))
                connection.execute(sql_text("ledger/unkey_llm_ledger"))
                connection.execute("DROP TABLE llm_ledger_keyed")
                connection.execute("COMMIT")
            else:
                connection.execute(sql_text("ledger/create_llm_ledger"))

    def lookup(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The best final row of each given key that has one (STATUS_PRECEDENCE). Two passes in one connection:
        the narrow key_hash column finds the candidate rows, then only the row ranges holding them are read
        whole, so a lookup that finds nothing never reads the prompts and outputs."""
        if not keys:
            return {}
        requested_keys = pl.DataFrame(
            {"key": list(keys), "key_hash": [key_hash(k) for k in keys]},
            schema={"key": pl.Utf8, "key_hash": pl.UInt64},
        ).to_arrow()
        with duckdb_connection(self.storage) as connection:
            connection.register("requested_keys", requested_keys)
            candidate_rows = connection.execute(sql_text("ledger/find_llm_ledger_rows")).to_arrow_table()
            if not candidate_rows.num_rows:
                return {}
            connection.register("candidate_rows", candidate_rows)
            ranges = row_ranges(candidate_rows.column("row_id").to_pylist())
            where = " OR ".join(f"rowid BETWEEN {int(first)} AND {int(last)}" for first, last in ranges)
            rows = connection.execute(sql_text("ledger/read_llm_ledger_rows").format(row_ranges=where)).fetchall()
        return {key: {"output": output, "status": status, "error": error} for key, output, status, error in rows}

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        records = [{**row, "key_hash": key_hash(row["key"]), "created_at": now} for row in rows]
        unknown = sorted({str(r.get("status")) for r in records} - set(STATUSES))
        if unknown:
            raise ValueError(f"ledger rows with unknown status {unknown}: expected one of {list(STATUSES)}")
        if not records:
            return 0
        new_ledger_rows = pl.DataFrame(records, schema=LEDGER_COLUMNS).to_arrow()

        def append() -> None:
            with duckdb_connection(self.storage) as connection:
                connection.register("new_ledger_rows", new_ledger_rows)
                connection.execute(sql_text("ledger/append_llm_ledger"))

        with_conflict_retries(append)
        return len(records)


def _has_primary_key(connection) -> bool:
    return bool(
        connection.execute(
            "SELECT count(*) FROM duckdb_constraints() "
            "WHERE table_name = 'llm_ledger' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()[0]
    )


class LedgerWriter:
    """Writes finished calls from a thread of its own, so the thread that consumes a backend's answers
    only hands rows over. A flush takes every row waiting once `rows` are waiting or `seconds` have passed
    since the last one; rows that arrive during a flush go into the next. Leaving the `with` block (also
    on an exception or an interruption) writes what is left; an error of the writer thread is raised by
    the next `add` or at the end. A killed process loses only the rows since the last flush.

    SIGTERM is an interruption too: in the main thread of a process with no SIGTERM handler (a plain
    script; Dagster's CLI, run workers and code servers map it to their own interrupt already), the
    block makes SIGTERM raise SystemExit(143), so the rows waiting are written before the process ends.
    Another interruption while they are written does not cut the write short."""

    def __init__(self, ledger: Ledger, rows: int = FLUSH_ROWS, seconds: float = FLUSH_SECONDS):
        self.ledger, self.rows, self.seconds = ledger, rows, seconds
        self.flushes = 0
        self._waiting: list[dict[str, Any]] = []
        self._closing = False
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._stopped = threading.Event()
        self._default_sigterm = False

    def __enter__(self) -> LedgerWriter:
        self._thread.start()
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            self._default_sigterm = True
        return self

    def add(self, row: dict[str, Any]) -> None:
        with self._condition:
            if self._error is not None:
                raise RuntimeError(f"the ledger writer failed: {self._error}") from self._error
            self._waiting.append(row)
            if len(self._waiting) >= self.rows:
                self._condition.notify()

    def __exit__(self, *exc_info) -> None:
        interruption = None
        try:
            with self._condition:
                self._closing = True
                self._condition.notify()
            # Not Thread.join: interrupted by a signal, Python 3.11's join marks a running thread stopped.
            while not self._stopped.is_set():
                try:
                    self._stopped.wait()
                except BaseException as exc:  # interrupted again: the rows are still being written
                    interruption = exc
            if self._waiting:  # the writer thread stopped on an error: one more try from this thread
                self._flush(self._waiting)
        finally:
            if self._default_sigterm and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if interruption is not None and exc_info[0] is None:
            raise interruption
        if self._error is not None and exc_info[0] is None:
            raise RuntimeError(f"the ledger writer failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            self._write_batches()
        finally:
            self._stopped.set()

    def _write_batches(self) -> None:
        last_flush = time.monotonic()
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._closing or len(self._waiting) >= self.rows,
                    timeout=max(0.0, last_flush + self.seconds - time.monotonic()),
                )
                batch, self._waiting = self._waiting, []
                closing = self._closing
            try:
                self._flush(batch)
            except Exception as exc:  # kept for the caller's thread, with the rows not written
                with self._condition:
                    self._error = exc
                    self._waiting = batch + self._waiting
                return
            last_flush = time.monotonic()
            if closing:
                return

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        if batch:
            self.ledger.write(batch)
            self.flushes += 1


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)
