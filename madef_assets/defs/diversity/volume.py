"""Volume that reaches its target (§3.5: ~200k rows, the general sample included): each category's quota of
attack prompts derived from method.sft_total and the share of a category's prompts that reached the SFT set
in the last build (its measured pass rate), and the data rounds of `madef run` while the set falls short."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl
from dagster import AssetKey, DagsterInstance

from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.settings import MethodConfig

# A measured pass rate below this is taken as this: a category where almost nothing passed would otherwise ask
# for a hundred times its target, which the rounds cannot deliver either.
MIN_PASS_RATE = 0.05


@dataclass(frozen=True)
class PassRates:
    """Per category, the share of its attack prompts that passed selection's thresholds in the last build, and
    where the numbers come from."""

    per_category: dict[str, float]
    overall: float | None
    origin: str

    def rate(self, category: str, prior: float) -> tuple[float, str]:
        """The category's pass rate and its origin: its own measurement, else the build's overall one, else the
        prior (the share the perplexity cut keeps by construction)."""
        if category in self.per_category:
            return self.per_category[category], f"measured ({self.origin})"
        if self.overall is not None:
            return self.overall, f"measured overall ({self.origin})"
        return prior, "prior: selection.perplexity_quantile"


def measured_pass_rates(collected: Mapping[str, int], selected: Mapping[str, int], origin: str) -> PassRates:
    """Selected / collected per category (categories with collected prompts), and overall."""
    per_category = {c: min(selected.get(c, 0) / n, 1.0) for c, n in collected.items() if n > 0}
    total = sum(n for n in collected.values() if n > 0)
    overall = min(sum(selected.get(c, 0) for c in per_category) / total, 1.0) if total else None
    return PassRates(per_category, overall, origin)


def category_targets(safety_rows: int, categories: tuple[str, ...]) -> dict[str, int]:
    """The safety rows of the SFT set split evenly over the categories, the remainder one each to the first."""
    share, remainder = divmod(safety_rows, len(categories))
    return {c: share + (i < remainder) for i, c in enumerate(categories)}


def derived_quotas(safety_rows: int, categories: tuple[str, ...], rates: PassRates, prior: float) -> pl.DataFrame:
    """Per category: the SFT rows it should bring, the pass rate used and its origin, and the attack prompts
    that rate asks for (`quota` = ceil(rows / max(rate, MIN_PASS_RATE)))."""
    rows = []
    for category, wanted in category_targets(safety_rows, categories).items():
        rate, origin = rates.rate(category, prior)
        quota = math.ceil(wanted / max(rate, MIN_PASS_RATE)) if wanted else 0
        rows.append((category, wanted, round(rate, 4), origin, quota))
    schema = {
        "category": pl.Utf8,
        "sft_rows_target": pl.Int64,
        "pass_rate": pl.Float64,
        "pass_rate_origin": pl.Utf8,
        "quota": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def shortfall(achieved: int | None, target: int | None) -> int | None:
    """How many rows the SFT set lacks against method.sft_total; None when there is no target or it is met."""
    if target is None or achieved is None or achieved >= target:
        return None
    return target - achieved


def safety_rows_target(sft_total: int | None, general_rows: int) -> int | None:
    """How many safety rows the SFT set's total leaves after the general sample (§3.5); None: no target."""
    return None if sft_total is None else max(sft_total - general_rows, 0)


def quota_table(method: MethodConfig, measured: PassRates | None) -> pl.DataFrame:
    """category_quota's quotas: method.quota_per_category for every category, or, when that is null, those
    derived from method.sft_total and the measured pass rates (the prior before any build)."""
    if method.quota_per_category is not None:
        return pl.DataFrame(
            {"category": list(CATEGORIES), "quota": method.quota_per_category},
            schema_overrides={"quota": pl.Int64},
        ).with_columns(
            sft_rows_target=pl.lit(None, pl.Int64),
            pass_rate=pl.lit(None, pl.Float64),
            pass_rate_origin=pl.lit("method.quota_per_category"),
        )
    rates = measured or PassRates({}, None, "")
    safety_rows = safety_rows_target(method.sft_total, method.general_sample_size) or 0
    return derived_quotas(safety_rows, CATEGORIES, rates, method.selection.perplexity_quantile)


def latest_per_category(instance: DagsterInstance) -> PassRates | None:
    """The pass rates of the last build: the prompts per category that passed selection's thresholds (before
    the per-category cap and the total trim, which say nothing about how many prompts to collect;
    safety_sft_selected's `passed_per_category`) over attack_prompts' rows, from their latest materializations;
    None before both exist, or when the selection is older than the prompts (a build that stopped between them)."""
    prompts, selection = (
        instance.get_latest_materialization_event(AssetKey(k)) for k in ("attack_prompts", "safety_sft_selected")
    )
    if prompts is None or selection is None or selection.timestamp < prompts.timestamp:
        return None
    passed = selection.asset_materialization.metadata.get("passed_per_category")
    if passed is None:
        return None
    collected = prompts.asset_materialization.metadata["per_category"].value
    return measured_pass_rates(collected, passed.value, f"run {selection.run_id[:8]}")


def latest_sft_rows(instance: DagsterInstance) -> int | None:
    """The SFT set's rows at its latest materialization (None before one)."""
    event = instance.get_latest_materialization_event(AssetKey("sft_dataset"))
    return None if event is None else int(event.asset_materialization.metadata["sft_total"].value)


def data_rounds(instance: DagsterInstance, method: MethodConfig, build: Callable[[], bool], say=print) -> bool:
    """After the first build: build the data again while the SFT set falls short of method.sft_total, up to
    method.volume_rounds builds in all; each build's derived quotas take the pass rates the one before measured,
    and its generation sends only what the ledger does not hold. Stops when a build adds no row, and says why
    the target was not met. False when a build failed."""
    achieved = latest_sft_rows(instance)
    builds = 1
    while (missing := shortfall(achieved, method.sft_total)) is not None and builds < method.volume_rounds:
        if method.quota_per_category is not None:
            say(
                f"the SFT set has {achieved} of {method.sft_total} rows; the quotas are fixed (quota_per_category): "
                "another build adds nothing"
            )
            return True
        builds += 1
        say(
            f"data build {builds} of {method.volume_rounds}: the SFT set has {achieved} of {method.sft_total} rows "
            f"({missing} short); the quotas take the pass rates just measured"
        )
        if not build():
            return False
        before, achieved = achieved, latest_sft_rows(instance)
        if achieved is None or before is None or achieved <= before:
            say(
                f"data build {builds} added no row ({achieved} rows): the sources and generation give no more at "
                "these thresholds"
            )
            return True
    if missing is not None:
        say(
            f"after {builds} data build(s) the SFT set has {achieved} of {method.sft_total} rows ({missing} short): "
            "raise method.volume_rounds or augment_rounds, loosen method.selection, or add sources"
        )
    return True
