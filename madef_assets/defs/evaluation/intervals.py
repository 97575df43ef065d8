"""95 % intervals for the report's rates and means, and the comparison tables that show them.

Every score table the report reads carries `ci_low` / `ci_high` beside its value, on the value's own
scale: Wilson score intervals for proportions (x100), percentile-bootstrap intervals for means. Whether a
delta between two candidates is more than noise is not read from the intervals (two overlapping intervals
can hide a clear paired difference): it is the paired test of significance.py, shown beside the delta."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from madef_assets.defs.evaluation.significance import delta_note
from madef_assets.defs.qualification.metrics import wilson_interval


def with_wilson(table: pl.DataFrame, successes: str, n: str, scale: float = 100.0) -> pl.DataFrame:
    """`table` with `ci_low` / `ci_high`: the Wilson interval of successes/n, times `scale`, rounded to 2."""
    bounds = [wilson_interval(int(k), int(m)) for k, m in zip(table[successes], table[n])]
    return table.with_columns(
        ci_low=pl.Series([round(low * scale, 2) for low, _ in bounds], dtype=pl.Float64),
        ci_high=pl.Series([round(high * scale, 2) for _, high in bounds], dtype=pl.Float64),
    )


def bootstrap_mean_interval(
    values: Sequence[float], scale: tuple[float, float], n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Efron's percentile-bootstrap 95 % interval of the mean of `values`: the 2.5 and 97.5 % quantiles of
    the means of `n_resamples` resamples drawn with numpy.random.default_rng(seed). Fewer than two values
    say nothing about their spread (a resample of one value is that value): the interval is then the whole
    `scale` the values live on, as Wilson's interval of a rate at n = 0 or 1 is nearly all of [0, 1]."""
    data = np.asarray(list(values), dtype=float)
    if data.size < 2:
        return scale
    draws = np.random.default_rng(seed).integers(0, data.size, size=(n_resamples, data.size))
    low, high = np.quantile(data[draws].mean(axis=1), [0.025, 0.975])
    return (round(float(low), 3), round(float(high), 3))


def _cell(value: float | None, low: float | None, high: float | None, n: int | None) -> str | None:
    if value is None:
        return None
    bounds = f" [{low:.1f}, {high:.1f}]" if low is not None and high is not None else ""
    return f"{value:.2f}{bounds} n={n}" if n is not None else f"{value:.2f}{bounds}"


Tests = Mapping[tuple[str, str], dict]  # (row, candidate) -> its paired test (significance.paired_tests' row)


def compare_with_intervals(
    frame: pl.DataFrame, row: str, value: str, n: str, candidates: Sequence[str], tests: Tests | None = None
) -> pl.DataFrame:
    """The report's form of a comparison: one row per `row`, one text column per candidate ("value [low,
    high] n=…") and a `Δ <candidate>` column against the first candidate, "+1.23 (p=…, Holm p=…, n pairs)",
    "(n.s.: …)" when Holm's p is not below 0.05, "(untested)" without paired outcomes. `frame` has one row
    per candidate and `row` with `value`, `n`, ci_low, ci_high."""
    present = [c for c in candidates if c in set(frame["candidate"].to_list())] if frame.height else []
    if not present:
        return pl.DataFrame({row: []}, schema={row: pl.Utf8})
    by_key: dict[str, dict[str, dict]] = {}
    for record in frame.iter_rows(named=True):
        by_key.setdefault(record[row], {})[record["candidate"]] = record
    rows = []
    for key, per_candidate in by_key.items():
        out: dict[str, str | None] = {row: key}
        for candidate in present:
            r = per_candidate.get(candidate)
            out[candidate] = _cell(r[value], r.get("ci_low"), r.get("ci_high"), r.get(n)) if r else None
        baseline = per_candidate.get(candidates[0])  # the report's baseline; no row of it: no delta
        for candidate in present[1:]:
            other = per_candidate.get(candidate)
            if baseline and other and baseline[value] is not None and other[value] is not None:
                note = delta_note((tests or {}).get((key, candidate)))
                out[f"Δ {candidate}"] = f"{other[value] - baseline[value]:+.2f} ({note})"
            else:
                out[f"Δ {candidate}"] = None
        rows.append(out)
    return pl.DataFrame(
        rows, schema={row: pl.Utf8, **{c: pl.Utf8 for c in present}, **{f"Δ {c}": pl.Utf8 for c in present[1:]}}
    )


def significant_drops(
    frame: pl.DataFrame, row: str, value: str, candidates: Sequence[str], tests: Tests
) -> set[tuple[str, str]]:
    """(row, candidate) pairs where a candidate scores below the first candidate and the paired test,
    Holm-corrected, is significant with a negative paired difference."""
    if not frame.height:
        return set()
    baseline = {r[row]: r for r in frame.filter(pl.col("candidate") == candidates[0]).iter_rows(named=True)}
    drops = set()
    for record in frame.filter(pl.col("candidate") != candidates[0]).iter_rows(named=True):
        base = baseline.get(record[row])
        if base is None or base[value] is None or record[value] is None or record[value] >= base[value]:
            continue
        test = tests.get((record[row], record["candidate"]))
        # A drop counts when the paired test finds it, in the same direction on the items both answered.
        if test is not None and test["significant"] and test["difference"] < 0:
            drops.add((record[row], record["candidate"]))
    return drops
