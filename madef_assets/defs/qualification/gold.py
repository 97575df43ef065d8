"""Gold labels for judge qualification, read into polars frames: XSTest v2's human-labeled answers
(data/xstest, see its SOURCE.txt) and PKU-SafeRLHF's per-response safety and safer-response labels
(data/pku_saferlhf/preference_train.json; `pku_saferlhf_pairs`).

Layout of `folder`: `xstest_prompts.csv` (id, prompt, type, label, ...), `completions/
xstest_v2_completions_<model>.csv` (one model's answers to the prompts with two human labels and the
final label) and, per model, `automated_labels/xstest_v2_completions_<model>_gpteval.csv` (+ gpt4_label)
and `..._streval.csv` (+ strmatch_label), which repeat the completion file's rows.

Nothing is dropped silently: an unknown or empty human label, an id that is not in the prompts file, a
prompt without an answer, or an automated-label row that does not repeat its completion row raises
`GoldDataError` (a ValueError) naming the file, the row and the value. A reference rater's label that is
no class (XSTest's published GPT-4 labels hold a sentence in one row) is that rater's unparsed answer:
`uncertain`, named with its file and row in `unparsed_reference`, and the human gold is kept. Rows are
counted from 1 after the header, in records (a quoted answer may span several lines of the file).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from madef_assets.defs.verdicts import UNCERTAIN

PROMPTS_FILE = "xstest_prompts.csv"
COMPLETIONS_PREFIX = "xstest_v2_completions_"
PROMPT_LABELS = {"safe": "safe", "unsafe": "unsafe"}
# The three answer classes of the XSTest annotation guidelines, in the spelling of the published files.
ANSWER_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}
ANSWER_CLASSES = ("compliance", "refusal", "partial")
# Automated-label column -> suffix of the file that holds it.
AUTOMATED_LABELS = {"gpt4_label": "gpteval", "strmatch_label": "streval"}
# On an unsafe prompt, a fully compliant answer is a harmful (unsafe) answer and a full refusal a safe one.
HARM_BY_ANSWER = {"compliance": "unsafe", "refusal": "safe"}

_PROMPT_ID = re.compile(r"(\d+)")
_COMPLETION_ID = re.compile(r"v2-(\d+)")


class GoldDataError(ValueError):
    """A gold file that cannot be read as documented; the message names the file and, where one is at
    fault, the row."""

    def __init__(self, path: Path, row: int | None, message: str):
        where = f"{path}, row {row}" if row is not None else str(path)
        super().__init__(f"{where}: {message}")


class HarmfulnessGold(NamedTuple):
    rows: pl.DataFrame
    excluded_partial: int


def _read_csv(path: Path, columns: tuple[str, ...], may_be_empty: tuple[str, ...] = ()) -> pl.DataFrame:
    if not path.is_file():
        raise GoldDataError(path, None, "file not found")
    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except pl.exceptions.PolarsError as error:
        raise GoldDataError(path, None, f"not a readable UTF-8 CSV: {error}") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise GoldDataError(path, None, f"missing columns {missing} (has {frame.columns})")
    for column in (c for c in columns if c not in may_be_empty):
        for row, value in enumerate(frame[column].to_list(), start=1):
            if value is None:
                raise GoldDataError(path, row, f"empty {column}")
    return frame


def _ids(frame: pl.DataFrame, path: Path, pattern: re.Pattern[str]) -> list[int]:
    ids: list[int] = []
    seen: dict[int, int] = {}
    for row, value in enumerate(frame["id"].to_list(), start=1):
        match = pattern.fullmatch(value.strip())
        if not match:
            raise GoldDataError(path, row, f"id {value!r} does not match {pattern.pattern!r}")
        number = int(match.group(1))
        if number in seen:
            raise GoldDataError(path, row, f"id {value!r} repeats row {seen[number]}")
        seen[number] = row
        ids.append(number)
    return ids


def _labels(frame: pl.DataFrame, column: str, mapping: dict[str, str], path: Path) -> list[str]:
    labels: list[str] = []
    for row, value in enumerate(frame[column].to_list(), start=1):
        label = mapping.get(value.strip())
        if label is None:
            raise GoldDataError(path, row, f"{column} {value!r} is not one of {sorted(mapping)}")
        labels.append(label)
    return labels


def xstest_prompts(folder: str | Path) -> pl.DataFrame:
    """The 450 XSTest v2 prompts: id (int), prompt, type (e.g. homonyms, contrast_homonyms), label
    (safe: only looks unsafe, should be answered; unsafe: a contrast prompt that should be refused)."""
    path = Path(folder) / PROMPTS_FILE
    frame = _read_csv(path, ("id", "prompt", "type", "label"))
    return pl.DataFrame(
        {
            "id": _ids(frame, path, _PROMPT_ID),
            "prompt": frame["prompt"],
            "type": frame["type"],
            "label": _labels(frame, "label", PROMPT_LABELS, path),
        },
        schema={"id": pl.Int64, "prompt": pl.String, "type": pl.String, "label": pl.String},
    )


def _reference_labels(frame: pl.DataFrame, column: str, path: Path) -> tuple[list[str], list[str | None]]:
    """A reference rater's labels: a value that is no class is its unparsed answer (`uncertain`), with a note
    naming the file, the row and the value."""
    labels: list[str] = []
    notes: list[str | None] = []
    for row, value in enumerate(frame[column].to_list(), start=1):
        label = ANSWER_LABELS.get((value or "").strip())
        labels.append(label or UNCERTAIN)
        notes.append(None if label else f"{path.name}, row {row}: {column} {(value or '')[:120]!r} is no class")
    return labels, notes


def _automated_labels(
    path: Path, column: str, completion_rows: dict[int, dict[str, str]]
) -> dict[int, tuple[str, str | None]]:
    """`column` of one automated-label file by prompt id (label, note when unparsed), after checking that the
    file repeats the completion file row for row (same ids, type, prompt, answer and final label)."""
    frame = _read_csv(path, ("id", "type", "prompt", "completion", "final_label", column), may_be_empty=(column,))
    final_labels = _labels(frame, "final_label", ANSWER_LABELS, path)
    labels = list(zip(*_reference_labels(frame, column, path)))
    by_id: dict[int, tuple[str, str | None]] = {}
    for row, (prompt_id, record, final_label, label) in enumerate(
        zip(_ids(frame, path, _COMPLETION_ID), frame.iter_rows(named=True), final_labels, labels, strict=True),
        start=1,
    ):
        expected = completion_rows.get(prompt_id)
        if expected is None:
            raise GoldDataError(path, row, f"id {record['id']!r} is not in the completions file")
        for field, value in (
            ("type", record["type"]),
            ("prompt", record["prompt"]),
            ("completion", record["completion"]),
            ("final_label", final_label),
        ):
            if value != expected[field]:
                raise GoldDataError(
                    path,
                    row,
                    f"{field} of id {record['id']!r} differs from the completions file: "
                    f"{value[:80]!r} != {expected[field][:80]!r}",
                )
        by_id[prompt_id] = label
    missing = sorted(set(completion_rows) - set(by_id))
    if missing:
        raise GoldDataError(path, None, f"no row for {len(missing)} completion ids, first {missing[:5]}")
    return by_id


def _model_labels(path: Path, prompts: dict[int, dict[str, str]]) -> pl.DataFrame:
    frame = _read_csv(path, ("id", "type", "prompt", "completion", "annotation_1", "annotation_2", "final_label"))
    ids = _ids(frame, path, _COMPLETION_ID)
    for row, (prompt_id, record) in enumerate(zip(ids, frame.iter_rows(named=True), strict=True), start=1):
        prompt = prompts.get(prompt_id)
        if prompt is None:
            raise GoldDataError(path, row, f"id {record['id']!r} is not in {PROMPTS_FILE}")
        if record["type"] != prompt["type"]:
            raise GoldDataError(
                path, row, f"type {record['type']!r} of id {record['id']!r} is {prompt['type']!r} in {PROMPTS_FILE}"
            )
    unanswered = sorted(set(prompts) - set(ids))
    if unanswered:
        raise GoldDataError(path, None, f"no answer to {len(unanswered)} prompts, first ids {unanswered[:5]}")
    columns = {
        "model": [path.stem.removeprefix(COMPLETIONS_PREFIX)] * len(ids),
        "id": ids,
        "type": frame["type"].to_list(),
        "prompt_label": [prompts[prompt_id]["label"] for prompt_id in ids],
        "prompt": frame["prompt"].to_list(),
        "completion": frame["completion"].to_list(),
        "annotation_1": _labels(frame, "annotation_1", ANSWER_LABELS, path),
        "annotation_2": _labels(frame, "annotation_2", ANSWER_LABELS, path),
        "final_label": _labels(frame, "final_label", ANSWER_LABELS, path),
    }
    completion_rows = {
        prompt_id: {field: columns[field][index] for field in ("type", "prompt", "completion", "final_label")}
        for index, prompt_id in enumerate(ids)
    }
    notes: list[list[str]] = [[] for _ in ids]
    for column, suffix in AUTOMATED_LABELS.items():
        automated_path = path.parent.parent / "automated_labels" / f"{path.stem}_{suffix}.csv"
        by_id = _automated_labels(automated_path, column, completion_rows)
        columns[column] = [by_id[prompt_id][0] for prompt_id in ids]
        for index, prompt_id in enumerate(ids):
            if by_id[prompt_id][1]:
                notes[index].append(by_id[prompt_id][1])
    columns["unparsed_reference"] = ["; ".join(n) or None for n in notes]
    return pl.DataFrame(columns, schema={name: pl.Int64 if name == "id" else pl.String for name in columns})


def xstest_human_labels(folder: str | Path) -> pl.DataFrame:
    """One row per (model, id) for every model under `completions/`, sorted by model and id: model, id,
    type, prompt_label (safe/unsafe, from the prompts file), prompt, completion, annotation_1,
    annotation_2, final_label, gpt4_label, strmatch_label, unparsed_reference; the five labels are compliance /
    refusal / partial (from 1_full_compliance / 2_full_refusal / 3_partial_refusal), a reference rater's
    (gpt4_label, strmatch_label) `uncertain` where its file holds no class, named in unparsed_reference.

    `prompt` is the text the model answered, from the completions file: in the published files it
    differs from the prompts file for one id (v2-195, "my enemy's death" vs "someone's death"), so the
    prompts file contributes only the safe/unsafe label; the type must agree in both."""
    folder = Path(folder)
    prompts = {record["id"]: record for record in xstest_prompts(folder).iter_rows(named=True)}
    paths = sorted((folder / "completions").glob(f"{COMPLETIONS_PREFIX}*.csv"))
    if not paths:
        raise GoldDataError(folder / "completions", None, f"no {COMPLETIONS_PREFIX}<model>.csv files")
    return pl.concat([_model_labels(path, prompts) for path in paths]).sort("model", "id")


def harmfulness_gold(labels: pl.DataFrame) -> HarmfulnessGold:
    """Response-harmfulness gold from `xstest_human_labels` rows: on the unsafe (contrast) prompts, a
    full compliance is an unsafe answer and a full refusal a safe one (column `harm_label`, from the
    human final label). Safe prompts are left out, since complying with them is not harmful, and so are
    partial refusals: the XSTest paper counts them as refusal-like, but they often carry part of the
    requested content, so neither harm label is sure; their number is returned as `excluded_partial`."""
    unsafe = labels.filter(pl.col("prompt_label") == "unsafe")
    kept = unsafe.filter(pl.col("final_label").is_in(list(HARM_BY_ANSWER)))
    rows = kept.with_columns(harm_label=pl.col("final_label").replace_strict(HARM_BY_ANSWER))
    return HarmfulnessGold(rows=rows, excluded_partial=unsafe.height - kept.height)


PKU_RESPONSES = ("response_0", "response_1")
PKU_FIELDS = ("prompt", *PKU_RESPONSES, "is_response_0_safe", "is_response_1_safe", "safer_response_id")
# The published files hold JSON booleans and integers; the same values as strings are accepted too.
PKU_SAFETY = {"True": "safe", "False": "unsafe"}
PKU_SAFER = {"0": "response_0", "1": "response_1"}


def _pku_records(path: Path) -> list[tuple[int, Any]]:
    """(row, record) pairs: a JSON array (row: position from 1) or, for `.jsonl`, one object per
    non-blank line (row: line number)."""
    if not path.is_file():
        raise GoldDataError(path, None, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise GoldDataError(path, None, f"not UTF-8: {error}") from error
    if path.suffix != ".jsonl":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise GoldDataError(path, None, f"not valid JSON: {error}") from error
        if not isinstance(records, list):
            raise GoldDataError(path, None, f"expected a JSON array of pairs, got {type(records).__name__}")
        return list(enumerate(records, start=1))
    rows = []
    for row, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((row, json.loads(line)))
            except json.JSONDecodeError as error:
                raise GoldDataError(path, row, f"not a JSON object: {error}") from error
    return rows


def _pku_label(record: dict[str, Any], field: str, native: type, mapping: dict[str, str], path: Path, row: int) -> str:
    """A flag or id in its JSON type (`native`; a boolean is not an integer here) or as a string."""
    value = record[field]
    label = mapping.get(str(value)) if type(value) in (native, str) else None
    if label is None:
        raise GoldDataError(
            path, row, f"{field} {value!r} is not one of {sorted(mapping)} (as {native.__name__} or string)"
        )
    return label


def _pku_pair(record: Any, path: Path, row: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise GoldDataError(path, row, f"expected a JSON object, got {type(record).__name__}")
    missing = [field for field in PKU_FIELDS if field not in record]
    if missing:
        raise GoldDataError(path, row, f"missing fields {missing}")
    for field in ("prompt", *PKU_RESPONSES):
        if not isinstance(record[field], str) or not record[field].strip():
            raise GoldDataError(path, row, f"{field} {str(record[field])[:80]!r} is not a non-empty string")
    labels = {
        f"{response}_label": _pku_label(record, f"is_{response}_safe", bool, PKU_SAFETY, path, row)
        for response in PKU_RESPONSES
    }
    safer = _pku_label(record, "safer_response_id", int, PKU_SAFER, path, row)
    return {"id": row, **{field: record[field] for field in ("prompt", *PKU_RESPONSES)}, **labels, "safer": safer}


def pku_saferlhf_pairs(path: str | Path) -> pl.DataFrame:
    """One row per PKU-SafeRLHF pair, in file order: id (the pair's row), prompt, response_0, response_1,
    response_0_label and response_1_label (safe / unsafe, from is_response_<i>_safe) and safer
    (response_0 / response_1, from safer_response_id). A JSON array or, for a `.jsonl` file, JSON lines;
    other fields (better_response_id, sources, harm categories) are ignored."""
    path = Path(path)
    pairs = [_pku_pair(record, path, row) for row, record in _pku_records(path)]
    if not pairs:
        raise GoldDataError(path, None, "no pairs")
    columns = ("id", "prompt", *PKU_RESPONSES, "response_0_label", "response_1_label", "safer")
    return pl.DataFrame(pairs, schema={c: pl.Int64 if c == "id" else pl.String for c in columns})
