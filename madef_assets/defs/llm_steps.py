"""What every LLM-backed asset shares: per-row status columns, metadata and the parse-failure gate."""

from __future__ import annotations

from typing import Any

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.llm.resource import LLMBatch

PARSE_FAILURE_CHECK = "parse_failure_rate_within_limit"


def status_columns(batch: LLMBatch, prefix: str = "") -> dict[str, list[Any]]:
    """Per-row ledger status, error, raw model output and whether the answer came from the ledger."""
    return {
        f"{prefix}status": [r.status for r in batch.results],
        f"{prefix}error": [r.error for r in batch.results],
        f"{prefix}raw_output": [r.output if isinstance(r.output, str) else None for r in batch.results],
        f"{prefix}cached": [r.cached for r in batch.results],
    }


def parse_failure_check_spec(asset_key: AssetKey) -> AssetCheckSpec:
    return AssetCheckSpec(
        PARSE_FAILURE_CHECK,
        asset=asset_key,
        blocking=True,
        description="Share of rows whose model answer could not be parsed (or failed) stays under method.max_parse_failure_rate.",
    )


def parse_failure_result(asset_key: AssetKey, statuses: pl.Series, limit: float) -> AssetCheckResult:
    total = statuses.len()
    failed = int((statuses != "ok").sum())
    rate = failed / total if total else 0.0
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=PARSE_FAILURE_CHECK,
        passed=rate <= limit,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "failure_rate": round(rate, 4),
            "limit": limit,
            "rows": total,
            "by_status": {str(k): int(v) for k, v in statuses.value_counts().iter_rows()},
        },
    )
