"""The judge's agreement reports computed from judge_qualification's stored rows alone (the judge's or its
panel's label, each member's vote, and on XSTest the reference raters' labels), so that the asset, its
gate, the fitness verdict and the evaluation report all print the same numbers. Plain functions."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from madef_assets.defs.qualification.metrics import agreement_report
from madef_assets.defs.qualification.tasks import HARMFULNESS, REFUSAL, TASKS, Task, reference_raters
from madef_assets.settings import QualificationConfig

JUDGE_RATER = "judge (this profile's)"
REFERENCE_COLUMNS = ("annotation_1", "annotation_2", "gpt4_label", "strmatch_label")
# One row per judged gold row; columns a task's gold does not have are null (model, type, prompt_label and the
# reference raters' labels are XSTest's; response and shown_first PKU-SafeRLHF's; id is XSTest's prompt id or
# the PKU pair's row). panel_votes: the members' labels, comma-joined, when the judge is a panel of judge_models.
JUDGEMENT_SCHEMA = {
    "task": pl.Utf8,
    "gold_set": pl.Utf8,
    "model": pl.Utf8,
    "id": pl.Int64,
    "type": pl.Utf8,
    "prompt_label": pl.Utf8,
    "response": pl.Utf8,
    "shown_first": pl.Utf8,
    "gold": pl.Utf8,
    **{column: pl.Utf8 for column in REFERENCE_COLUMNS},
    "judge_models": pl.Utf8,
    "judge_label": pl.Utf8,
    "panel_votes": pl.Utf8,
    "judge_status": pl.Utf8,
    "judge_raw_output": pl.Utf8,
}


def judge_raters(rows: pl.DataFrame) -> dict[str, tuple[list[str], list[str]]]:
    """(gold, labels) of the judge as used (a panel's majority) and, for a panel, of each member."""
    gold = rows["gold"].to_list()
    models = rows["judge_models"][0].split(",")
    if len(models) == 1:
        return {JUDGE_RATER: (gold, rows["judge_label"].to_list())}
    votes = [row.split(",") for row in rows["panel_votes"]]
    raters = {f"{JUDGE_RATER}: panel of {len(models)}, majority": (gold, rows["judge_label"].to_list())}
    raters.update({f"judge member {i + 1}: {model}": (gold, [v[i] for v in votes]) for i, model in enumerate(models)})
    return raters


def judge_reports(
    table: pl.DataFrame, config: QualificationConfig, tasks: Sequence[Task] = TASKS
) -> dict[str, dict[str, dict]]:
    """Per task with rows: the agreement report of the judge as used (first), of each panel member, and of
    the task's reference raters, with the profile's resamples and seed."""
    reports = {}
    for task in tasks:
        rows = table.filter(pl.col("task") == task.name)
        if not rows.height:
            continue
        raters = {**judge_raters(rows), **reference_raters(task, rows)}
        reports[task.name] = {
            rater: agreement_report(gold, rated, task.labels, task.positive, config.n_resamples, config.seed)
            for rater, (gold, rated) in raters.items()
        }
    return reports


# The tasks the gate reads, in order: the refusal task, or for a judge that has no refusal reading (a guard
# such as Llama Guard or ShieldGemma in the panel) the harmfulness task on the same XSTest answers.
GATE_TASKS = (REFUSAL, HARMFULNESS)


def gate_task(tasks_with_rows: set[str]) -> Task | None:
    """The task the gate reads among those the judge answered (None: neither)."""
    return next((task for task in GATE_TASKS if task.name in tasks_with_rows), None)


def gate_report(table: pl.DataFrame, config: QualificationConfig) -> dict | None:
    """The report the gate reads: the judge as used, on the gate's task (`gate_task`; None without its rows)."""
    task = gate_task(set(table["task"].unique().to_list()) if table.height else set())
    if task is None:
        return None
    reports = judge_reports(table, config, (task,))
    return next(iter(reports[task.name].values()))


def interval(value: float, bounds: tuple[float, float]) -> str:
    return f"{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def agreement_table(reports: dict[str, dict[str, dict]]) -> str:
    """One markdown table: per task, the gold it is measured on and the judge's row among the reference
    raters'; F1 is that of the task's positive class, named in its own column."""
    lines = [
        "| task | gold | rater | n | accuracy | Cohen's κ | positive | F1 (positive) | uncertain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        for rater, r in reports.get(task.name, {}).items():
            lines.append(
                f"| {task.name} | {task.gold_set} | {rater} | {r['n']} | "
                f"{interval(r['accuracy'], r['accuracy_ci'])} | {interval(r['kappa'], r['kappa_ci'])} | "
                f"{task.positive} | {interval(r['f1'], r['f1_ci'])} | {r['unparsed_rate']:.3f} |"
            )
    return "\n".join(lines)


def language_agreement_table(reports: dict[str, dict]) -> str:
    """One markdown table: the labeler's agreement with the gold categories per language and overall."""
    lines = ["| language | n | accuracy | Cohen's κ | macro-F1 | uncertain rate |", "|---|---|---|---|---|---|"]
    for language, r in reports.items():
        cells = [interval(r[name], r[f"{name}_ci"]) for name in ("accuracy", "kappa", "macro_f1", "unparsed_rate")]
        lines.append(f"| {language} | {r['n']} | {' | '.join(cells)} |")
    return "\n".join(lines)
