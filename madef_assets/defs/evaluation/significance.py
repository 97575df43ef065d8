"""Paired significance for the report's deltas. Every candidate answers the same items, so a delta is
tested on the pairs, not by comparing two intervals: an exact McNemar test for a rate (on the discordant
pairs), a paired bootstrap for a mean (on the per-item differences), then Holm's step-down correction
across every comparison of one report, since a report makes dozens of them.

Outcomes come in one long table: `view` (which report table), `row` (the table's row), `candidate`,
`item` (the item's id, the same for every candidate), `outcome` (1.0 / 0.0 for a rate, the value for a
mean; null when the item has none) and `binary`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from madef_assets.defs.sign_test import exact_sign_test

ALPHA = 0.05
TESTS_SENTENCE = (
    "an exact McNemar test on the discordant pairs for a rate, for a mean an exact sign-flip test of the "
    "per-item differences (up to 16 pairs) or a paired bootstrap, with Holm's correction across every "
    "comparison of this report. A delta shows p and Holm's p and is marked n.s. when Holm's p is not below "
    "0.05; overlapping intervals are not a test."
)
OUTCOME_SCHEMA = {
    "view": pl.Utf8,
    "row": pl.Utf8,
    "candidate": pl.Utf8,
    "item": pl.Utf8,
    "outcome": pl.Float64,
    "binary": pl.Boolean,
}
TEST_SCHEMA = {
    "view": pl.Utf8,
    "row": pl.Utf8,
    "candidate": pl.Utf8,
    "test": pl.Utf8,
    "pairs": pl.Int64,
    "difference": pl.Float64,  # the paired mean difference, candidate - baseline (its sign: up or down)
    "baseline_only": pl.Int64,
    "candidate_only": pl.Int64,
    "p_value": pl.Float64,
    "p_holm": pl.Float64,
    "significant": pl.Boolean,
}


def mcnemar_exact(baseline_only: int, candidate_only: int) -> float:
    """McNemar's exact test (two-sided): the exact sign test on the discordant pairs (b items only the
    baseline got right, c only the candidate), p = 2 · P(Binomial(b + c, 1/2) ≤ min(b, c)), capped at 1."""
    return exact_sign_test(baseline_only, candidate_only)


# Up to this many pairs a mean is tested exactly by flipping signs (every one of the 2^n patterns); the
# bootstrap needs more pairs than that before its resampled means say anything about the tail.
EXACT_SIGN_FLIP_MAX_PAIRS = 16


def sign_flip_p(differences: Sequence[float]) -> float:
    """The exact paired permutation test of a zero mean difference (two-sided; Fisher's sign-flip test): under
    the null each difference is as likely negated, so p is the share of the 2^n sign patterns whose mean is at
    least as far from zero as the observed one. Five differences all of one sign give 2/32 = 0.0625."""
    data = np.asarray(list(differences), dtype=float)
    observed = abs(float(data.mean())) if data.size else 0.0
    if data.size == 0 or observed == 0.0:
        return 1.0
    patterns = ((np.arange(2**data.size)[:, None] >> np.arange(data.size)) & 1) * 2 - 1
    means = np.abs((patterns * data).mean(axis=1))
    return float(np.count_nonzero(means >= observed - 1e-12) / means.size)


def paired_bootstrap_p(differences: Sequence[float], n_resamples: int = 10_000, seed: int = 0) -> float:
    """A paired test of a zero mean difference (two-sided). Up to EXACT_SIGN_FLIP_MAX_PAIRS pairs: the exact
    sign-flip test (a bootstrap of a handful of same-signed differences would call them significant at
    p = 1/(B+1)). More: the paired bootstrap — the differences centred on zero (the null), resampled
    `n_resamples` times with numpy.random.default_rng(seed), p the share of resampled means at least as far
    from zero as the observed one, (count + 1) / (n_resamples + 1). A zero mean difference tests nothing."""
    data = np.asarray(list(differences), dtype=float)
    observed = float(data.mean()) if data.size else 0.0
    if data.size <= EXACT_SIGN_FLIP_MAX_PAIRS or observed == 0.0:
        return sign_flip_p(data)
    centred = data - observed
    draws = np.random.default_rng(seed).integers(0, data.size, size=(n_resamples, data.size))
    extreme = np.count_nonzero(np.abs(centred[draws].mean(axis=1)) >= abs(observed) - 1e-12)
    return (extreme + 1) / (n_resamples + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): sorted ascending, the i-th (from 0) is multiplied by
    m - i, made non-decreasing, capped at 1; returned in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_tests(outcomes: pl.DataFrame, baseline: str, seed: int = 0) -> pl.DataFrame:
    """One test per (view, row, candidate other than the baseline) on the items both have an outcome
    for, Holm-corrected across all of them; `significant` is p_holm < 0.05."""
    if outcomes.is_empty():
        return pl.DataFrame(schema=TEST_SCHEMA)
    keys = ["view", "row", "item"]
    base = outcomes.filter(pl.col("candidate") == baseline).select(*keys, base=pl.col("outcome"))
    pairs = (
        outcomes.filter(pl.col("candidate") != baseline)
        .join(base, on=keys, how="inner")
        .drop_nulls(["outcome", "base"])
    )
    rows = []
    for (view, row, candidate), group in pairs.group_by("view", "row", "candidate", maintain_order=True):
        binary = bool(group["binary"].all())
        difference = float((group["outcome"] - group["base"]).mean())
        if binary:
            baseline_only = int(((group["base"] == 1) & (group["outcome"] == 0)).sum())
            candidate_only = int(((group["base"] == 0) & (group["outcome"] == 1)).sum())
            test, p = "McNemar exact", mcnemar_exact(baseline_only, candidate_only)
        else:
            baseline_only = candidate_only = None
            differences = (group["outcome"] - group["base"]).to_list()
            test = "sign-flip exact" if len(differences) <= EXACT_SIGN_FLIP_MAX_PAIRS else "paired bootstrap"
            p = paired_bootstrap_p(differences, seed=seed)
        rows.append(
            {
                "view": view,
                "row": row,
                "candidate": candidate,
                "test": test,
                "pairs": group.height,
                "difference": difference,
                "baseline_only": baseline_only,
                "candidate_only": candidate_only,
                "p_value": p,
            }
        )
    tests = pl.DataFrame(rows, schema={k: v for k, v in TEST_SCHEMA.items() if k not in ("p_holm", "significant")})
    adjusted = holm(tests["p_value"].to_list())
    return tests.with_columns(p_holm=pl.Series(adjusted, dtype=pl.Float64)).with_columns(
        significant=pl.col("p_holm") < ALPHA
    )


def delta_note(test: dict | None) -> str:
    """How a delta reads in the report: its p-values, `n.s.` when Holm's p is not below 0.05, `untested`
    when no paired outcomes exist for it."""
    if test is None:
        return "untested"
    p = f"p={_p(test['p_value'])}, Holm p={_p(test['p_holm'])}, {test['pairs']} pairs"
    return p if test["significant"] else f"n.s.: {p}"


def _p(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
