"""Quality gates for ingestion: quarantine share and row-count balance, evaluated while ingesting."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.sources.normalize import NormalizedSource

QUARANTINE_SHARE_CHECK = "quarantine_share_within_limit"
# The name predates merged rows; the check is rows_in == normalized + quarantined + merged.
ROW_BALANCE_CHECK = "rows_in_equal_normalized_plus_quarantined"


def ingestion_check_specs(source_key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            QUARANTINE_SHARE_CHECK,
            asset=source_key,
            blocking=True,
            description="Fails when the share of input rows sent to quarantine exceeds ingest.max_quarantine_share.",
        ),
        AssetCheckSpec(
            ROW_BALANCE_CHECK,
            asset=source_key,
            blocking=True,
            description="Every input row is normalized, quarantined or (preference data sets: another pair of the same "
            "prompt) merged into the kept row: rows_in = normalized + quarantined + merged, nothing dropped silently.",
        ),
    ]


def quarantine_share_result(source_key: AssetKey, result: NormalizedSource, limit: float) -> AssetCheckResult:
    share = result.quarantine_share
    reasons = result.quarantine["reason"].str.replace(r" \(first at .*\)$", "").value_counts(sort=True).head(5)
    return AssetCheckResult(
        asset_key=source_key,
        check_name=QUARANTINE_SHARE_CHECK,
        passed=share <= limit,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "quarantine_share": round(share, 4),
            "limit": limit,
            "rows_quarantined": result.quarantine.height,
            "rows_merged": result.rows_merged,
            "rows_in": result.rows_in,
            "top_reasons": {str(r): int(c) for r, c in reasons.iter_rows()},
        },
    )


def row_balance_result(source_key: AssetKey, result: NormalizedSource) -> AssetCheckResult:
    out = result.prompts.height + result.quarantine.height + result.rows_merged
    return AssetCheckResult(
        asset_key=source_key,
        check_name=ROW_BALANCE_CHECK,
        passed=out == result.rows_in,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "rows_in": result.rows_in,
            "rows_normalized": result.prompts.height,
            "rows_quarantined": result.quarantine.height,
            "rows_merged": result.rows_merged,
        },
    )
