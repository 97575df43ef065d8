"""General-capability benchmarks: MMLU / CMMLU / C-Eval multiple choice, GSM8K and HumanEval.

Pure functions only (loading, prompt rendering, answer extraction, scoring); the model calls and the
Dagster assets live elsewhere. The loaders read the original archives' layout, so they work on both
the samples bundled under data/general_eval and the full files in the shared data folder.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from madef_assets.project import PROJECT_ROOT

MCQ_LETTERS = ("A", "B", "C", "D")
# Member path of one subject's split file inside each benchmark's zip.
_MCQ_MEMBERS = {
    "mmlu": "data/{split}/{subject}_{split}.csv",
    "cmmlu": "{split}/{subject}.csv",
    "ceval": "{split}/{subject}_{split}.csv",
}
_MCQ_SPLITS = {"mmlu": ("dev", "val", "test"), "cmmlu": ("dev", "test"), "ceval": ("dev", "val")}
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
    if split not in _MCQ_SPLITS[benchmark]:
        raise ValueError(f"{benchmark} has no split {split!r}; expected one of {_MCQ_SPLITS[benchmark]}")
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


def render_mcq_prompt(item: McqItem, shots: Sequence[McqItem]) -> str:
    """k-shot prompt ending with the answer cue, whose next token is the letter.

    MMLU uses Hendrycks et al.'s format ("... Answer:" then " X"); CMMLU and C-Eval both use the C-Eval
    paper's Chinese format ("答案：" then "X").
    """
    if any(shot.answer is None for shot in shots):
        raise ValueError("few-shot examples need answers")
    if mcq_lang(item.benchmark) == "en":
        header = (
            f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
        )
        cue, sep = "Answer:", " "
    else:
        header = f"以下是中国关于{item.subject_name}考试的单项选择题，请选出其中的正确答案。\n\n"
        cue, sep = "答案：", ""

    def body(question: McqItem) -> str:
        options = "".join(f"\n{letter}. {option}" for letter, option in zip(MCQ_LETTERS, question.options, strict=True))
        return f"{question.question}{options}\n{cue}"

    return header + "".join(f"{body(shot)}{sep}{shot.answer}\n\n" for shot in shots) + body(item)


def mcq_continuations(benchmark: str) -> tuple[str, ...]:
    """The continuations of the prompt whose log-probabilities are compared, one per letter."""
    prefix = " " if mcq_lang(benchmark) == "en" else ""
    return tuple(prefix + letter for letter in MCQ_LETTERS)


def pick_mcq_answer(scores: Mapping[str, float], continuations: Sequence[str]) -> str:
    """The letter whose continuation scores highest; a tie goes to the earlier letter."""
    best = max(range(len(continuations)), key=lambda i: scores[continuations[i]])
    return continuations[best].strip()


# GSM8K ------------------------------------------------------------------------------------------

# lm-evaluation-harness's gsm8k-cot task (lm_eval/tasks/gsm8k/gsm8k-cot.yaml): its 8 fixed chain-of-thought
# exemplars (Wei et al. 2022), bundled with their SOURCE and LICENSE, its prompt form and its stop sequence.
GSM8K_COT_EXEMPLARS = PROJECT_ROOT / "data" / "general_eval" / "gsm8k_cot" / "exemplars.jsonl"
GSM8K_STOP = ("Q:",)
_NUMBER = re.compile(r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)


@dataclass(frozen=True)
class GsmExemplar:
    """One fixed few-shot example: the question and its worked solution ending "The answer is N."."""

    question: str
    target: str


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


def load_gsm8k_exemplars(path: Path = GSM8K_COT_EXEMPLARS) -> list[GsmExemplar]:
    """The fixed chain-of-thought exemplars (JSONL {question, target}), in their order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [GsmExemplar(record["question"], record["target"]) for record in map(json.loads, lines)]


def render_gsm8k_prompt(question: str, exemplars: Sequence[GsmExemplar]) -> str:
    """lm-evaluation-harness's gsm8k-cot prompt: "Q: {question}\nA: {target}" per exemplar, each followed by a
    blank line, then "Q: {question}\nA:"; every target ends in "The answer is N.", so the model is led to
    finish its own solution the same way (see extract_gsm8k_answer)."""
    examples = "".join(f"Q: {shot.question}\nA: {shot.target}\n\n" for shot in exemplars)
    return f"{examples}Q: {question}\nA:"


def gsm8k_prompts(items: Sequence[GsmItem], exemplars: Sequence[GsmExemplar], shots: int) -> list[str]:
    """Each test item's prompt with the first `shots` fixed exemplars. Raises ValueError when more shots are
    asked than there are exemplars, or when an exemplar is one of the test items (a leaked answer)."""
    if shots > len(exemplars):
        raise ValueError(f"gsm8k: {shots} shots asked, {len(exemplars)} exemplars bundled")
    leaked = {shot.question for shot in exemplars[:shots]} & {item.question for item in items}
    if leaked:
        raise ValueError(f"gsm8k: exemplars that are test items: {sorted(leaked)}")
    return [render_gsm8k_prompt(item.question, exemplars[:shots]) for item in items]


def extract_gsm8k_answer(completion: str) -> str | None:
    """The model's final answer, normalized, or None when the completion holds no number.

    Rule: the first number after the first "The answer is" (case-insensitive) if that phrase is present;
    otherwise the first number after the first "####"; otherwise the last number in the text. Numbers may
    carry "$", thousands commas and a sign; a trailing "." is not part of the number.
    """
    for marker in (_ANSWER_IS.search(completion), re.search("####", completion)):
        if marker:
            found = _NUMBER.search(completion, marker.end())
            return normalize_number(found.group()) if found else None
    numbers = _NUMBER.findall(completion)
    return normalize_number(numbers[-1]) if numbers else None


# HumanEval --------------------------------------------------------------------------------------

HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


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


def truncate_completion(completion: str) -> str:
    """The completion up to the first stop sequence: the function body ends where top-level code begins."""
    cut = min((i for i in (completion.find(stop) for stop in HUMANEVAL_STOP) if i >= 0), default=len(completion))
    return completion[:cut]


def humaneval_program(item: HumanEvalItem, completion: str) -> str:
    """The completed function and the problem's tests; the sandbox's harness then calls the tests' `check`
    on the function named `humaneval_entry_point(item)`, so the program passes iff that call returns."""
    return item.prompt + truncate_completion(completion) + "\n\n" + item.test + "\n"


def humaneval_entry_point(item: HumanEvalItem) -> str:
    if not item.entry_point.isidentifier():
        raise ValueError(f"HumanEval {item.task_id}: entry_point {item.entry_point!r} is not a Python name")
    return item.entry_point


def pass_at_1(results: Sequence[bool]) -> float:
    """Share of problems solved with one sample each (pass@1 with n=1 is the plain mean)."""
    if not results:
        raise ValueError("pass@1 of no results is undefined")
    return sum(map(bool, results)) / len(results)
