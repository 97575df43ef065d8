"""The LLM-call ledger: every backend call keyed by what determines its answer.

The key hashes (kind, backend, model fingerprint, parameters, rendered prompt, template version).
Reads and writes open a DuckDB connection only for the statement: no connection is held while a
backend works, so other processes can write the same file between flushes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from madef_assets.storage import duckdb_connection, sql_text

LEDGER_COLUMNS = {
    "key": pl.Utf8,
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


class Ledger:
    def __init__(self, duckdb_path: Path | str):
        self.duckdb_path = Path(duckdb_path)
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        with duckdb_connection(self.duckdb_path) as connection:
            connection.execute(sql_text("ledger/create_llm_ledger"))

    def lookup(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Final (non-error) rows for the given keys."""
        if not keys:
            return {}
        requested_keys = pl.DataFrame({"key": list(keys)}).to_arrow()
        with duckdb_connection(self.duckdb_path) as connection:
            connection.register("requested_keys", requested_keys)
            rows = connection.execute(sql_text("ledger/lookup_llm_ledger")).fetchall()
        return {key: {"output": output, "status": status, "error": error} for key, output, status, error in rows}

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        records = [{**row, "created_at": now} for row in rows]
        if not records:
            return 0
        new_ledger_rows = pl.DataFrame(records, schema=LEDGER_COLUMNS).to_arrow()
        with duckdb_connection(self.duckdb_path) as connection:
            connection.register("new_ledger_rows", new_ledger_rows)
            connection.execute(sql_text("ledger/upsert_llm_ledger"))
        return len(records)
