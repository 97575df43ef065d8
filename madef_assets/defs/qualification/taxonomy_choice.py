"""The labeler's taxonomy choice (defs/intent/choice.py) measured against people's mapping of raw labels: the
reviewed `labels:` list of the taxonomy file and the reviewers' taxonomy decisions. Plain functions, no Dagster."""

from __future__ import annotations

import polars as pl

from madef_assets.defs.intent.choice import CHOSEN, NONE, OPTIONS
from madef_assets.defs.intent.review import IGNORE
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.qualification.metrics import agreement_report, wilson_interval

FILE, DECISION = "taxonomy_file", "human_decision"
GOLD_SCHEMA = {"key": pl.Utf8, "label": pl.Utf8, "gold_category": pl.Utf8, "gold_origin": pl.Utf8}


def choice_gold(taxonomy: Taxonomy, decisions: pl.DataFrame, choices: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Raw labels with the category people gave them: every label of the file's `labels:` list (its normalized
    key, as the file writes it) and every decided label of the taxonomy queue (its text from taxonomy_choices;
    `ignore` counts as NONE). A key in both is the file's. Also the decided keys left out: those the current
    labels do not include (no text to ask about)."""
    rows = [{"key": k, "label": k, "gold_category": v, "gold_origin": FILE} for k, v in taxonomy.labels.items()]
    texts = dict(zip(choices["key"], choices["label"], strict=True))
    skipped = []
    for key, decision in zip(decisions["review_key"], decisions["decision"], strict=True):
        if key in taxonomy.labels:
            continue
        if key not in texts:
            skipped.append(key)
            continue
        gold = NONE if decision == IGNORE else decision
        rows.append({"key": key, "label": texts[key], "gold_category": gold, "gold_origin": DECISION})
    return pl.DataFrame(rows, schema=GOLD_SCHEMA), sorted(skipped)


def _share(successes: int, n: int) -> dict:
    low, high = wilson_interval(successes, n)
    return {"n": n, "correct": successes, "accuracy": successes / n if n else None, "wilson_95": [low, high]}


def choice_agreement(table: pl.DataFrame, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Agreement of `choice` with `gold_category` over the 15 options (an unparsed choice is `uncertain` and
    counts against it): n, accuracy with its Wilson interval, Cohen's κ with a bootstrap interval; the same
    accuracy on the choices confident enough to be applied (`outcome` chosen), and accuracy per gold origin.
    No rows: n 0 and nothing else (agreement is undefined)."""
    if not table.height:
        return {"n": 0}
    gold, predicted = table["gold_category"].to_list(), table["choice"].to_list()
    report = agreement_report(gold, predicted, OPTIONS, None, n_resamples, seed)
    correct = table.with_columns(correct=(pl.col("choice") == pl.col("gold_category")).fill_null(False))
    confident = correct.filter(pl.col("outcome") == CHOSEN)
    return {
        **_share(int(correct["correct"].sum()), table.height),
        "kappa": report["kappa"],
        "kappa_ci": list(report["kappa_ci"]),
        "unparsed": report["unparsed"],
        "applied": _share(int(confident["correct"].sum()), confident.height),
        "by_origin": {
            origin: _share(int(rows["correct"].sum()), rows.height)
            for (origin,), rows in correct.group_by("gold_origin", maintain_order=True)
        },
    }
