"""The general-capability benchmarks' files as published: MMLU / CMMLU / C-Eval archives, GSM8K JSONL and
HumanEval JSONL(.gz). Read by evaluation (the questions asked) and by selection (the questions no SFT row may
copy); the loaders follow the original archives' layout, so they read the bundled samples and the full files."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

MCQ_LETTERS = ("A", "B", "C", "D")
# The splits of each multiple-choice benchmark (C-Eval's test split has no answers).
MCQ_SPLITS = {"mmlu": ("dev", "val", "test"), "cmmlu": ("dev", "test"), "ceval": ("dev", "val")}
# Member path of one subject's split file inside each benchmark's zip.
_MCQ_MEMBERS = {
    "mmlu": "data/{split}/{subject}_{split}.csv",
    "cmmlu": "{split}/{subject}.csv",
    "ceval": "{split}/{subject}_{split}.csv",
}
# Header names of the question, option and answer columns in the zh benchmarks (MMLU has no header).
_ZH_COLUMNS = {"cmmlu": ("Question", *MCQ_LETTERS, "Answer"), "ceval": ("question", *MCQ_LETTERS, "answer")}


@dataclass(frozen=True)
class McqItem:
    """One four-option multiple-choice question; `answer` is a letter of MCQ_LETTERS, or None if unknown."""

    benchmark: str
    subject: str
    subject_name: str
    item_id: str
    question: str
    options: tuple[str, ...]
    answer: str | None


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in _MCQ_MEMBERS:
        raise ValueError(f"unknown multiple-choice benchmark {benchmark!r}; expected one of {sorted(_MCQ_MEMBERS)}")


def mcq_lang(benchmark: str) -> Literal["en", "zh"]:
    """Language of a multiple-choice benchmark: MMLU is English, CMMLU and C-Eval are Chinese."""
    _check_benchmark(benchmark)
    return "en" if benchmark == "mmlu" else "zh"


def load_mcq_benchmark(
    benchmark: str,
    zip_path: Path,
    mapping_path: Path,
    split: str,
    subjects: Sequence[str] | None = None,
    limit_per_subject: int | None = None,
) -> list[McqItem]:
    """Questions of `split` for each subject (default: every subject of mapping.json, in its order).

    Splits are dev/val/test for MMLU, dev/test for CMMLU and dev/val for C-Eval, whose test split
    carries no answers. `limit_per_subject` keeps the first rows of each file. A missing subject or
    member, a wrong header, a row with the wrong column count or an answer outside A-D raises ValueError.
    """
    _check_benchmark(benchmark)
    if benchmark == "ceval" and split == "test":
        raise ValueError("C-Eval's test split has no answers; evaluate on 'val' (and take shots from 'dev')")
    if split not in MCQ_SPLITS[benchmark]:
        raise ValueError(f"{benchmark} has no split {split!r}; expected one of {MCQ_SPLITS[benchmark]}")
    mapping = json.loads(Path(mapping_path).read_text(encoding="utf-8"))
    subjects = list(mapping) if subjects is None else list(subjects)
    unknown = [s for s in subjects if s not in mapping]
    if unknown:
        raise ValueError(f"subjects not in {mapping_path}: {unknown}")
    items: list[McqItem] = []
    with zipfile.ZipFile(zip_path) as archive:
        for subject in subjects:
            member = _MCQ_MEMBERS[benchmark].format(split=split, subject=subject)
            try:
                text = archive.read(member).decode("utf-8-sig")
            except KeyError:
                raise ValueError(f"{zip_path} has no member {member}") from None
            rows = list(csv.reader(io.StringIO(text, newline="")))
            where = f"{zip_path}:{member}"
            question_col, option_cols, answer_col, width = _mcq_columns(benchmark, rows, where)
            data = rows if benchmark == "mmlu" else rows[1:]
            for index, row in enumerate(data[:limit_per_subject]):
                if len(row) != width:
                    raise ValueError(f"{where} row {index}: {len(row)} columns, expected {width}")
                answer = row[answer_col]
                if answer not in MCQ_LETTERS:
                    raise ValueError(f"{where} row {index}: answer {answer!r} is not one of {MCQ_LETTERS}")
                items.append(
                    McqItem(
                        benchmark=benchmark,
                        subject=subject,
                        subject_name=mapping[subject]["name"],
                        item_id=f"{subject}/{split}/{index}",
                        question=row[question_col],
                        options=tuple(row[c] for c in option_cols),
                        answer=answer,
                    )
                )
    return items


def _mcq_columns(benchmark: str, rows: list[list[str]], where: str) -> tuple[int, tuple[int, ...], int, int]:
    """(question column, option columns, answer column, row width) of one benchmark CSV file."""
    if benchmark == "mmlu":
        return 0, (1, 2, 3, 4), 5, 6
    header = rows[0] if rows else []
    missing = [name for name in _ZH_COLUMNS[benchmark] if name not in header]
    if missing:
        raise ValueError(f"{where}: header {header} lacks columns {missing}")
    question, *options, answer = (header.index(name) for name in _ZH_COLUMNS[benchmark])
    return question, tuple(options), answer, len(header)


@dataclass(frozen=True)
class GsmItem:
    """One GSM8K problem: `answer_text` is the reference solution, `answer` its normalized final number."""

    item_id: str
    question: str
    answer_text: str
    answer: str


def normalize_number(text: str) -> str:
    """Canonical form of a number for exact-match scoring: "1,000.00" → "1000", "3.50" → "3.5", "$-2." → "-2".

    Strips surrounding whitespace, "$", thousands separators and a trailing "."; raises ValueError if the
    rest is not a number.
    """
    cleaned = text.strip().replace("$", "").replace(",", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a number: {text!r}")
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def load_gsm8k(path: Path, limit: int | None = None) -> list[GsmItem]:
    """The first `limit` problems (all by default) of a GSM8K JSONL file; item ids are "gsm8k/<line index>"."""
    items = []
    with Path(path).open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if limit is not None and index >= limit:
                break
            record = json.loads(line)
            if "####" not in record["answer"]:
                raise ValueError(f"{path} line {index + 1}: answer has no '####' final answer")
            final = record["answer"].rsplit("####", 1)[1]
            items.append(
                GsmItem(
                    item_id=f"gsm8k/{index}",
                    question=record["question"],
                    answer_text=record["answer"],
                    answer=normalize_number(final),
                )
            )
    return items


@dataclass(frozen=True)
class HumanEvalItem:
    """One HumanEval problem: the model completes `prompt`; `test` defines check(candidate)."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str


def load_humaneval(path: Path, limit: int | None = None) -> list[HumanEvalItem]:
    """The first `limit` problems (all by default) of a HumanEval .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    items = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(items) >= limit:
                break
            if line.strip():
                record = json.loads(line)
                items.append(HumanEvalItem(**{f.name: record[f.name] for f in fields(HumanEvalItem)}))
    return items
