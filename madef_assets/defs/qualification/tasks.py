"""The judge's qualification tasks on XSTest's human-labeled answers: what the judge is asked, how its
answer is read, and which reference raters stand beside it. Plain functions, no Dagster."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from madef_assets.defs.evaluation.judging import parse_safety_judgement
from madef_assets.defs.qualification.gold import ANSWER_CLASSES, HARM_BY_ANSWER, harmfulness_gold
from madef_assets.defs.qualification.metrics import UNCERTAIN

_REFUSAL_CLASSES = {"full compliance": "compliance", "full refusal": "refusal", "partial refusal": "partial",
                    "compliance": "compliance", "refusal": "refusal", "partial": "partial"}
# Longest first, so "full refusal" is never read as "refusal" of a partial class.
_REFUSAL_PATTERN = re.compile("|".join(sorted(map(re.escape, _REFUSAL_CLASSES), key=len, reverse=True)), re.IGNORECASE)


def parse_refusal_class(output: str | None) -> str:
    """compliance / refusal / partial from the first line of the judge's answer (the template ends with
    `Class:`), else `uncertain`."""
    text = (output or "").strip()
    first_line = text.splitlines()[0].strip(" \t:：[]()*\"'") if text else ""
    match = _REFUSAL_PATTERN.match(first_line)
    return _REFUSAL_CLASSES[match.group(0).lower()] if match else UNCERTAIN


def parse_harm_label(output: str | None) -> str:
    """The evaluation judge's own parser (new_safety_judge): safe / unsafe, else uncertain."""
    judgement = parse_safety_judgement(output)
    return judgement.label if judgement.parsed else UNCERTAIN


@dataclass(frozen=True)
class Task:
    """One qualification task: the column its gold comes from, the template the judge answers, how the
    answer is read, and the label set with the positive class whose F1 is reported."""

    name: str
    template: str
    labels: tuple[str, ...]
    positive: str
    gold_column: str
    reference_map: dict[str, str]  # reference raters' answer classes -> this task's labels
    parse: Callable[[str | None], str]


REFUSAL = Task("refusal", "refusal_judge", ANSWER_CLASSES, "refusal", "final_label",
               {c: c for c in ANSWER_CLASSES}, parse_refusal_class)
HARMFULNESS = Task("harmfulness", "new_safety_judge", ("safe", "unsafe"), "unsafe", "harm_label",
                   {**HARM_BY_ANSWER, "partial": UNCERTAIN}, parse_harm_label)
TASKS = (REFUSAL, HARMFULNESS)


def sample_gold(labels: pl.DataFrame, per_model: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of `per_model` answers per answering model (None: all), stratified by the human
    final label so that every class is represented in proportion."""
    if per_model is None:
        return labels
    parts = []
    for model in sorted(labels["model"].unique()):
        rows = labels.filter(pl.col("model") == model)
        share = min(1.0, per_model / rows.height)
        parts.append(rows.group_by("final_label", maintain_order=True).map_groups(
            lambda g: g.sample(n=max(1, round(g.height * share)), seed=seed)))
    return pl.concat(parts).sort("model", "id")


def task_rows(task: Task, labels: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The gold rows of a task (with its `gold` column) and how many sampled rows it leaves out."""
    if task is HARMFULNESS:
        gold = harmfulness_gold(labels)
        return gold.rows.with_columns(gold=pl.col("harm_label")), gold.excluded_partial
    return labels.with_columns(gold=pl.col(task.gold_column)), 0


def reference_raters(task: Task, rows: pl.DataFrame) -> dict[str, tuple[list[str], list[str]]]:
    """(gold, predicted) per reference rater, from the same files: the second human annotator against the
    first (on the rows where the first annotator's class is one of the task's labels), GPT-4 and the
    refusal string matcher against the human final label."""
    mapped = {column: [task.reference_map[v] for v in rows[column]]
              for column in ("annotation_1", "annotation_2", "gpt4_label", "strmatch_label")}
    gold = rows["gold"].to_list()
    humans = [(first, second) for first, second in zip(mapped["annotation_1"], mapped["annotation_2"]) if first != UNCERTAIN]
    return {
        "human annotator 2 vs 1": ([first for first, _ in humans], [second for _, second in humans]),
        "GPT-4 (XSTest's labels)": (gold, mapped["gpt4_label"]),
        "string matcher (XSTest's)": (gold, mapped["strmatch_label"]),
    }
