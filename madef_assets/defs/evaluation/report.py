"""The evaluation report: the paper's four views, candidate against baseline with deltas, and a radar chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from madef_assets.defs.evaluation.intervals import Tests, significant_drops
from madef_assets.defs.evaluation.significance import delta_note


def compare(frame: pl.DataFrame, row: str, value: str, candidates: Sequence[str]) -> pl.DataFrame:
    """One row per `row`, one column per candidate (in the given order) and a `Δ <candidate>` column for
    every candidate after the first, which is the baseline."""
    if frame.is_empty():
        return pl.DataFrame({row: []}, schema={row: pl.Utf8})
    wide = frame.pivot(on="candidate", index=row, values=value, aggregate_function="first", maintain_order=True)
    present = [c for c in candidates if c in wide.columns]
    wide = wide.select(row, *present)
    if len(present) > 1 and present[0] == candidates[0]:  # deltas only against the report's baseline
        baseline = present[0]
        wide = wide.with_columns((pl.col(c) - pl.col(baseline)).round(2).alias(f"Δ {c}") for c in present[1:])
    return wide


def marked_regressions(
    scores: pl.DataFrame, row: str, value: str, candidates: Sequence[str], tests: Tests, prefix: str = ""
) -> list[tuple[str, bool]]:
    """Every row where a candidate scores below the baseline, with its paired test, and whether the drop is
    significant (Holm's p below 0.05); `scores`: one row per candidate and `row`, with `value`."""
    significant = significant_drops(scores, row, value, candidates, tests)
    table = compare(scores, row, value, candidates)
    return [
        (
            f"{prefix}{r[row]} ({c[2:]} {r[c]:+.2f}, {delta_note(tests.get((r[row], c[2:])))})",
            (r[row], c[2:]) in significant,
        )
        for r in table.iter_rows(named=True)
        for c in table.columns
        if c.startswith("Δ ") and r[c] is not None and r[c] < 0
    ]


def radar_png(table: pl.DataFrame, row: str, candidates: Sequence[str], title: str, path: Path) -> Path:
    """A radar chart of each candidate's value per `row` (0-100), the paper's Figure 5-3 form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = table[row].to_list()
    angles = [2 * math.pi * i / max(len(labels), 1) for i in range(len(labels))]
    figure = plt.figure(figsize=(7, 7))
    axis = figure.add_subplot(polar=True)
    for candidate in candidates:
        if candidate not in table.columns:
            continue
        values = [v if v is not None else 0.0 for v in table[candidate].to_list()]
        axis.plot(angles + angles[:1], values + values[:1], label=candidate, linewidth=2)
        axis.fill(angles + angles[:1], values + values[:1], alpha=0.15)
    axis.set_xticks(angles)
    axis.set_xticklabels(labels)
    axis.set_ylim(0, 100)
    axis.set_title(title)
    axis.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def lineage_by_category(lineage: pl.DataFrame) -> pl.DataFrame:
    """Per category: the SFT rows and a readable list of the sources and routes that fed them."""
    if lineage.is_empty():
        return pl.DataFrame(schema={"category": pl.Utf8, "sft_rows": pl.Int64, "fed_by": pl.Utf8})
    return (
        lineage.with_columns(part=pl.format("{}/{}: {}", "source", "route", "sft_rows"))
        .group_by("category", maintain_order=True)
        .agg(pl.col("sft_rows").sum(), pl.col("part").str.join(", ").alias("fed_by"))
    )
