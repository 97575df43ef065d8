"""§5.1.1 chooses a learning rate: among the tuned candidates of several rates, the one a configured rule
prefers (training.choose_rate_by), with the numbers that decided it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

VALIDATION_LOSS = "validation_loss"


@dataclass(frozen=True)
class RateChoice:
    rate: str | None  # the chosen rate label, None when the rule had nothing to decide on
    candidate: str | None
    reason: str
    values: dict[str, float]  # rate label -> the value the rule compared


def final_validation_loss(curves: pl.DataFrame) -> dict[str, float]:
    """Each rate's last logged finite eval_loss (rates that logged none are left out; a diverged run's NaN or
    infinity never wins)."""
    logged = curves.drop_nulls("eval_loss").filter(pl.col("eval_loss").is_finite()).sort("step")
    return {rate: float(group["eval_loss"][-1]) for (rate,), group in logged.group_by("rate", maintain_order=True)}


def choose_rate(
    rule: str, curves: pl.DataFrame, long_table: pl.DataFrame, candidates_by_rate: Mapping[str, str]
) -> RateChoice:
    """The rate `rule` prefers: `validation_loss` the lowest final eval loss (from learning_rate_comparison's
    curves), `<view>: <item>` the highest score of that row of eval_report's long table among the rates' tuned
    candidates. Ties go to the rate listed first."""
    if rule == VALIDATION_LOSS:
        values = {rate: loss for rate, loss in final_validation_loss(curves).items() if rate in candidates_by_rate}
        if not values:
            return RateChoice(None, None, "no rate chosen: no validation loss was logged (training.args.val_size)", {})
        rate = min(candidates_by_rate, key=lambda r: values.get(r, float("inf")))
        return RateChoice(
            rate, candidates_by_rate[rate], f"the lowest final validation loss, {values[rate]:.4f}", values
        )
    view, item = (part.strip() for part in rule.split(":", 1))
    rows = long_table.filter(
        (pl.col("view") == view)
        & (pl.col("item") == item)
        & pl.col("candidate").is_in(list(candidates_by_rate.values()))
    ).drop_nulls("score")
    by_candidate = dict(rows.select("candidate", "score").iter_rows())
    values = {rate: float(by_candidate[c]) for rate, c in candidates_by_rate.items() if c in by_candidate}
    if not values:
        return RateChoice(None, None, f"no rate chosen: the report has no `{view}: {item}` row for the rates", {})
    rate = max(candidates_by_rate, key=lambda r: values.get(r, float("-inf")))
    return RateChoice(rate, candidates_by_rate[rate], f"the highest `{view}: {item}`, {values[rate]:.2f}", values)
