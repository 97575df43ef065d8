"""General-capability benchmarks: MMLU / CMMLU / C-Eval multiple choice, GSM8K and HumanEval.

Pure functions only (prompt rendering, answer extraction, scoring); the files are read by
defs/sources/benchmark_files.py, the model calls and the Dagster assets live elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from madef_assets.defs.sources.benchmark_files import (
    MCQ_LETTERS,
    GsmItem,
    HumanEvalItem,
    McqItem,
    mcq_lang,
    normalize_number,
)
from madef_assets.project import PROJECT_ROOT


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
