"""The taxonomy review queue: raw labels the reviewed file leaves `proposed` or `unmapped`, decided by a person
on the review page (the paper merged its 100+ raw labels into the 14 categories by manual annotation, §3.2)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.review.decisions import latest_decisions

IGNORE = "ignore"
TAXONOMY_DECISIONS = (*CATEGORIES, IGNORE)
REVIEWABLE = ("proposed", "unmapped")
# A person's decision also wins over the labeler's confident choice (status llm_choice, not in the queue).
DECIDABLE = (*REVIEWABLE, "llm_choice")
DECISION_SCHEMA = {
    "review_key": pl.Utf8,
    "decision": pl.Utf8,
    "reviewer": pl.Utf8,
    "note": pl.Utf8,
    "decided_at": pl.Utf8,
}


def taxonomy_queue(table: pl.DataFrame) -> list[dict]:
    """One queue item per raw intent label the taxonomy file does not map (proposed or unmapped), most frequent
    first, keyed by the label's normalized key; a decision is one of the 14 categories or `ignore`. `proposed` is
    the labeler's choice where it made one (`choice`, `choice_confidence`: it was unsure), else the nearest
    reviewed label's category (`similarity`)."""
    pending = table.filter((pl.col("kind") == "intent_label") & pl.col("status").is_in(REVIEWABLE))
    return [
        {
            "review_key": row["key"],
            "label": row["label"],
            "count": row["count"],
            "status": row["status"],
            "proposed": row["category"],
            "similarity": row["similarity"],
            "allowed_decisions": list(TAXONOMY_DECISIONS),
            # beyond TAXONOMY_QUEUE_FIELDS (shown when present): the labeler's choice, NONE or null
            "choice": row.get("choice"),
            "choice_confidence": row.get("choice_confidence"),
        }
        for row in pending.sort(["count", "key"], descending=[True, False]).iter_rows(named=True)
    ]


def read_taxonomy_decisions(path: Path) -> tuple[pl.DataFrame, list[str]]:
    """The latest decision per label key from the append-only decisions file, and the problems: malformed lines
    and latest decisions that are neither a category nor `ignore` (that label stays undecided)."""
    latest, problems = latest_decisions(path)
    valid = [record for record in latest.values() if record["decision"] in TAXONOMY_DECISIONS]
    problems += [
        f"{path}: decision {r['decision']!r} for {r['review_key']!r} is not one of {list(TAXONOMY_DECISIONS)}"
        for r in latest.values()
        if r["decision"] not in TAXONOMY_DECISIONS
    ]
    frame = pl.DataFrame([{k: r.get(k) for k in DECISION_SCHEMA} for r in valid], schema=DECISION_SCHEMA)
    return frame, problems


def apply_taxonomy_decisions(table: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """A decided proposed/unmapped/llm_choice label gets status `reviewed` with the chosen category, or `ignored`
    with no category; labels the taxonomy file maps (accepted, rule) keep the file's category."""
    decided = dict(zip(decisions["review_key"], decisions["decision"], strict=True))
    decision = pl.col("key").replace_strict(decided, default=None, return_dtype=pl.Utf8)
    open_ = (pl.col("kind") == "intent_label") & pl.col("status").is_in(DECIDABLE) & decision.is_not_null()
    ignored = decision == IGNORE
    category = pl.when(ignored).then(pl.lit(None, pl.Utf8)).otherwise(decision)
    status = pl.when(ignored).then(pl.lit("ignored")).otherwise(pl.lit("reviewed"))
    return table.with_columns(
        category=pl.when(open_).then(category).otherwise("category"),
        status=pl.when(open_).then(status).otherwise("status"),
    )
