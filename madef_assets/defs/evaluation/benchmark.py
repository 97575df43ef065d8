"""What a benchmark declares, and the registry of benchmarks.

A benchmark is one module in `madef_assets/defs/evaluation/benchmarks/` with a module-level `BENCHMARK`: the
function that builds its assets, the tables it adds to the report (each from one of its scores assets, with
the rows the regression check reads), the rows of its judged assets that wait for a human, and the assets
that use the judge. The evaluation definitions, the review queue, the report and automation are built from
the registry; none of them names a benchmark.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import polars as pl
from dagster import StaticPartitionsDefinition

from madef_assets.defs.evaluation.intervals import Tests, compare_with_intervals
from madef_assets.defs.evaluation.significance import TEST_SCHEMA
from madef_assets.llm.resource import LLMResource
from madef_assets.reports import markdown_table
from madef_assets.review.decisions import QUEUE_FIELDS
from madef_assets.settings import Settings

LlmFor = Callable[[pl.DataFrame, bool], LLMResource]


@dataclass(frozen=True)
class Report:
    """What a benchmark's report section may use: the report's inputs by name (its own scores and outcome
    assets and the shared ones: sft_dataset, attack_prompts, ...), the candidates in order (the first is the
    baseline), where the report and its charts go, and the paired tests of every view (significance.py)."""

    settings: Settings
    inputs: dict[str, pl.DataFrame]
    order: list[str]
    report_dir: Path
    judged_by: str  # "Judged by `model`: its qualification verdict." for sections the judge scored
    tests: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TEST_SCHEMA))

    def tests_of(self, view: str) -> Tests:
        """The paired tests of one view's table by (row, candidate)."""
        return {(t["row"], t["candidate"]): t for t in self.tests.filter(pl.col("view") == view).iter_rows(named=True)}

    def table(
        self, scores: pl.DataFrame, row: str, value: str, n: str, view: str, rows: pl.DataFrame | None = None
    ) -> str:
        """Every candidate's value [95 % interval] n=… per row, with deltas against the baseline and their
        paired tests (the outcomes the view's `outcomes` gave under `view`)."""
        table = compare_with_intervals(scores, row, value, n, self.order, self.tests_of(view))
        return markdown_table(rows.join(table, on=row, how="left") if rows is not None and table.height else table)


@dataclass(frozen=True)
class ReportView:
    """One table of the report read from one scores asset: its markdown section(s), and the rows
    (`row`, `value`, ci_low, ci_high per candidate) that go into the report's long table under `view` and,
    when `regression_label` is set, into the no-regression check. `outcomes` gives each item's outcome per
    candidate (significance.OUTCOME_SCHEMA; its `view` names the table a row belongs to) from the report's
    inputs, on which every delta is tested; `reads` names the assets beyond the scores asset that the
    outcomes and sections read (they become the report's inputs)."""

    scores_asset: str
    view: str | None  # None: a section only, not in the long table
    row: str
    value: str
    sections: Callable[[Report, pl.DataFrame], list[str]]
    rows: Callable[[Report, pl.DataFrame], pl.DataFrame] = lambda report, scores: scores
    regression_label: str | None = None
    outcomes: Callable[[Report], pl.DataFrame] | None = None
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReviewSource:
    """Rows of a judged asset that wait for a human: `select` returns them in QUEUE_FIELDS."""

    asset: str
    select: Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark. `build` returns its assets ([] when the profile does not configure it); `order`
    places its report sections (lower first); `quiet_inputs` names, per asset, inputs it reads that are no
    reason to re-run it (automation)."""

    name: str
    order: int
    build: Callable[[Settings, StaticPartitionsDefinition, LlmFor], list]
    report: tuple[ReportView, ...] = ()
    review: tuple[ReviewSource, ...] = ()
    judge_users: tuple[str, ...] = ()
    quiet_inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (asset, its quiet inputs)


@cache
def registered() -> tuple[Benchmark, ...]:
    """Every benchmark module's BENCHMARK, in report order."""
    from madef_assets.defs.evaluation import benchmarks

    found = []
    for module in pkgutil.iter_modules(benchmarks.__path__):
        spec = getattr(importlib.import_module(f"{benchmarks.__name__}.{module.name}"), "BENCHMARK", None)
        if not isinstance(spec, Benchmark):
            raise TypeError(f"{benchmarks.__name__}.{module.name} declares no BENCHMARK")
        found.append(spec)
    names = [spec.name for spec in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two benchmarks share a name: {names}")
    return tuple(sorted(found, key=lambda spec: (spec.order, spec.name)))


def quiet_inputs() -> dict[str, tuple[str, ...]]:
    """Every benchmark's inputs that are read but are no reason to re-run, by asset."""
    return {asset: inputs for spec in registered() for asset, inputs in spec.quiet_inputs}


def judge_users() -> tuple[str, ...]:
    """The assets of every benchmark that ask the judge."""
    return tuple(asset for spec in registered() for asset in spec.judge_users)


def queue_rows(selected: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The review queue: every benchmark's rows that wait for a human, in QUEUE_FIELDS."""
    frames = [frame.select(QUEUE_FIELDS) for frame in selected]
    if not frames:
        return pl.DataFrame(schema={c: pl.List(pl.Utf8) if c == "allowed_decisions" else pl.Utf8 for c in QUEUE_FIELDS})
    return pl.concat(frames, how="vertical_relaxed")
