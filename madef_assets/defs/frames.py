"""Table shapes and small helpers for asset bodies: the prompt schema, combining source tables and one-row
parameter views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

# The normalized prompt table every source becomes (defs/sources/normalize.py) and the stages read.
PROMPT_SCHEMA = {
    "prompt_id": pl.Utf8,
    "source": pl.Utf8,
    "lang": pl.Utf8,
    "prompt": pl.Utf8,
    "response": pl.Utf8,
    "source_category": pl.Utf8,
    "attack_method": pl.Utf8,
    "meta": pl.Utf8,
}


def concat_prompts(frames: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Source tables in the normalized prompt schema, stacked (an empty table keeps the schema)."""
    tables = [frame for frame in frames.values() if frame.height]
    return pl.concat(tables, how="vertical_relaxed") if tables else pl.DataFrame(schema=PROMPT_SCHEMA)


def params_view(**values: Any) -> pl.DataFrame:
    """A one-row frame for SQL files to read their parameters from (`FROM params`)."""
    schema = {
        k: (pl.Int64 if isinstance(v, int) or v is None else pl.Float64 if isinstance(v, float) else pl.Utf8)
        for k, v in values.items()
    }
    return pl.DataFrame([values], schema=schema)
