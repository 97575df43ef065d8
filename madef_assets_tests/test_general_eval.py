"""General-capability benchmark logic on the bundled samples: loaders, prompts, answer extraction, sandbox."""

import zipfile
from collections import Counter
from pathlib import Path

import pytest

from madef_assets.defs.evaluation.general import (
    GSM8K_COT_EXEMPLARS,
    GSM8K_STOP,
    HUMANEVAL_STOP,
    extract_gsm8k_answer,
    gsm8k_prompts,
    humaneval_entry_point,
    humaneval_program,
    load_gsm8k_exemplars,
    mcq_continuations,
    pass_at_1,
    pick_mcq_answer,
    render_gsm8k_prompt,
    render_mcq_prompt,
    truncate_completion,
)
from madef_assets.defs.sources.benchmark_files import (
    MCQ_LETTERS,
    GsmItem,
    HumanEvalItem,
    McqItem,
    load_gsm8k,
    load_humaneval,
    load_mcq_benchmark,
    mcq_lang,
    normalize_number,
)
from madef_assets.project import PROJECT_ROOT
from madef_assets_tests.conftest import SHARED_DATA

DATA = PROJECT_ROOT / "data" / "general_eval"
SAMPLES = {
    "mmlu": DATA / "mmlu" / "mmlu_sample.zip",
    "cmmlu": DATA / "cmmlu" / "cmmlu_sample.zip",
    "ceval": DATA / "ceval" / "ceval_sample.zip",
}
EVAL_SPLIT = {"mmlu": "test", "cmmlu": "test", "ceval": "val"}


def load_sample(benchmark: str, split: str, **kwargs) -> list[McqItem]:
    return load_mcq_benchmark(benchmark, SAMPLES[benchmark], DATA / benchmark / "mapping.json", split, **kwargs)


# Multiple choice -------------------------------------------------------------------------------


SAMPLE_SUBJECTS = {
    "mmlu": ("abstract_algebra", "high_school_geography", "college_medicine", "us_foreign_policy"),
    "cmmlu": ("high_school_geography", "college_medicine", "chinese_foreign_policy", "elementary_mathematics"),
    "ceval": ("high_school_geography", "clinical_medicine", "logic", "computer_network"),
}


@pytest.mark.parametrize(
    ("benchmark", "split", "counts"),
    [
        ("mmlu", "dev", (5, 5, 5, 5)),
        ("mmlu", "test", (20, 20, 20, 20)),
        ("cmmlu", "dev", (5, 5, 5, 5)),
        ("cmmlu", "test", (20, 20, 20, 20)),
        ("ceval", "dev", (5, 5, 5, 5)),
        ("ceval", "val", (19, 20, 20, 19)),  # two C-Eval subjects have only 19 val questions
    ],
)
def test_bundled_mcq_counts_and_answers(benchmark, split, counts):
    items = load_sample(benchmark, split)
    assert Counter(item.subject for item in items) == dict(zip(SAMPLE_SUBJECTS[benchmark], counts, strict=True))
    assert {item.answer for item in items} <= set(MCQ_LETTERS)
    assert all(len(item.options) == 4 and item.question for item in items)
    assert len({item.item_id for item in items}) == len(items)
    assert items[0].item_id == f"{items[0].subject}/{split}/0"


def test_mcq_subject_names_subsets_and_limits():
    items = load_sample("ceval", "val", subjects=["logic"], limit_per_subject=3)
    assert [item.item_id for item in items] == ["logic/val/0", "logic/val/1", "logic/val/2"]
    assert {item.subject_name for item in items} == {"逻辑学"}
    assert load_sample("mmlu", "dev", subjects=["us_foreign_policy"])[0].subject_name == "us foreign policy"
    with pytest.raises(ValueError, match="not in"):
        load_sample("mmlu", "dev", subjects=["astrology"])


def test_mmlu_row_is_parsed_with_quoted_commas():
    first = load_sample("mmlu", "test", subjects=["abstract_algebra"])[0]
    assert first.question == "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
    assert first.options == ("0", "4", "2", "6")
    assert first.answer == "B"


def test_ceval_test_split_is_refused_and_unknown_inputs_raise():
    with pytest.raises(ValueError, match="no answers"):
        load_sample("ceval", "test")
    with pytest.raises(ValueError, match="no split"):
        load_sample("cmmlu", "val")
    with pytest.raises(ValueError, match="unknown"):
        load_mcq_benchmark("arc", SAMPLES["mmlu"], DATA / "mmlu" / "mapping.json", "test")


def write_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [("What?,1,2,3,A\n", "5 columns, expected 6"), ("What?,1,2,3,4,E\n", "answer 'E'")],
)
def test_malformed_mmlu_row_names_zip_member_and_row(tmp_path, row, message):
    archive = write_zip(tmp_path / "bad.zip", {"data/test/toy_test.csv": "Fine?,1,2,3,4,B\n" + row})
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"toy": {"name": "toy", "category": "Other"}}', encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        load_mcq_benchmark("mmlu", archive, mapping, "test")
    assert "bad.zip:data/test/toy_test.csv row 1" in str(error.value)


def test_missing_member_and_bad_header_raise(tmp_path):
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"toy": {"name": "玩具", "category": "Other"}}', encoding="utf-8")
    archive = write_zip(tmp_path / "cmmlu.zip", {"dev/toy.csv": "idx,Q,A,B,C,D,Answer\n0,q,1,2,3,4,A\n"})
    with pytest.raises(ValueError, match="cmmlu.zip:dev/toy.csv: header .* lacks columns \\['Question'\\]"):
        load_mcq_benchmark("cmmlu", archive, mapping, "dev")
    with pytest.raises(ValueError, match="no member test/toy.csv"):
        load_mcq_benchmark("cmmlu", archive, mapping, "test")


@pytest.mark.skipif(not (SHARED_DATA / "general_eval").exists(), reason="shared data folder not present")
@pytest.mark.parametrize(
    ("benchmark", "split", "rows"),
    [
        ("mmlu", "dev", 285),
        ("mmlu", "test", 14042),
        ("cmmlu", "dev", 335),
        ("cmmlu", "test", 11582),
        ("ceval", "dev", 260),
        ("ceval", "val", 1346),
    ],
)
def test_full_archives_load(benchmark, split, rows):
    folder = SHARED_DATA / "general_eval" / benchmark
    items = load_mcq_benchmark(benchmark, folder / f"{benchmark}.zip", folder / "mapping.json", split)
    assert len(items) == rows


def test_mmlu_prompt_format():
    shots = load_sample("mmlu", "dev", subjects=["abstract_algebra"])
    item = load_sample("mmlu", "test", subjects=["abstract_algebra"])[0]
    prompt = render_mcq_prompt(item, shots)
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
    )
    assert prompt.endswith(
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert prompt.count("Answer:") == len(shots) + 1
    assert render_mcq_prompt(item, []).count("Answer:") == 1


@pytest.mark.parametrize("benchmark", ["cmmlu", "ceval"])
def test_zh_prompt_format(benchmark):
    subject = "high_school_geography"
    shots = load_sample(benchmark, "dev", subjects=[subject])[:3]
    item = load_sample(benchmark, EVAL_SPLIT[benchmark], subjects=[subject])[0]
    prompt = render_mcq_prompt(item, shots)
    header = f"以下是中国关于{item.subject_name}考试的单项选择题，请选出其中的正确答案。\n\n"
    assert prompt.startswith(f"{header}{shots[0].question}\nA. ")
    assert f"答案：{shots[0].answer}\n\n" in prompt
    assert prompt.count("答案：") == len(shots) + 1
    assert prompt.endswith(f"\nD. {item.options[3]}\n答案：")


def test_prompt_refuses_unanswered_shots():
    item = load_sample("mmlu", "dev")[0]
    with pytest.raises(ValueError, match="need answers"):
        render_mcq_prompt(item, [McqItem(**{**item.__dict__, "answer": None})])


def test_continuations_language_and_pick():
    assert mcq_continuations("mmlu") == (" A", " B", " C", " D")
    assert mcq_continuations("cmmlu") == mcq_continuations("ceval") == ("A", "B", "C", "D")
    assert (mcq_lang("mmlu"), mcq_lang("cmmlu"), mcq_lang("ceval")) == ("en", "zh", "zh")
    en = mcq_continuations("mmlu")
    assert pick_mcq_answer({" A": -3.0, " B": -0.5, " C": -2.0, " D": -9.0}, en) == "B"
    assert pick_mcq_answer({" A": -1.0, " B": -2.0, " C": -1.0, " D": -1.0}, en) == "A"
    assert pick_mcq_answer({"A": -4.0, "B": -3.0, "C": -2.0, "D": -1.0}, mcq_continuations("ceval")) == "D"


# GSM8K ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,000.00", "1000"), ("3.50", "3.5"), ("-2", "-2"), ("$18.", "18"), (" 0.25 ", "0.25"), ("-0", "0"), ("7", "7")],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_normalize_number_rejects_text():
    with pytest.raises(ValueError, match="not a number"):
        normalize_number("eighteen")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("She sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18.", "18"),
        ("The answer is $1,250. Then 7 more questions follow.", "1250"),
        ("Step 1: 3 + 4 = 7.\nthe answer is 7.50\nQuestion: 2 + 2?", "7.5"),
        ("The answer is 5. Later the answer is 6.", "5"),
        ("5 + 5 = 10\n#### 10\nand 3 more", "10"),
        ("He pays 3 * $4 = $12, and with the $1,000 bonus it costs $1,012.", "1012"),
        ("The temperature drops to -4 degrees.", "-4"),
        ("No idea.", None),
        ("The answer is unknown.", None),
    ],
)
def test_extract_gsm8k_answer(completion, expected):
    assert extract_gsm8k_answer(completion) == expected


def test_gsm8k_references_parse():
    items = load_gsm8k(DATA / "gsm8k" / "test_sample.jsonl")
    assert len(items) == 60
    first = items[0]
    assert first.item_id == "gsm8k/0"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18"
    for item in items:
        assert extract_gsm8k_answer(item.answer_text) == item.answer
    assert len(load_gsm8k(DATA / "gsm8k" / "test_sample.jsonl", limit=5)) == 5


def test_gsm8k_exemplars_are_lm_eval_gsm8k_cot():
    """Pins the 8 fixed chain-of-thought exemplars of EleutherAI/lm-evaluation-harness
    lm_eval/tasks/gsm8k/gsm8k-cot.yaml (fewshot_config.samples), bundled with SOURCE.txt and LICENSE."""
    exemplars = load_gsm8k_exemplars()
    assert len(exemplars) == 8
    assert exemplars[0].question.startswith("There are 15 trees in the grove. Grove workers will plant trees")
    assert exemplars[-1].question.startswith("Olivia has $23.")
    assert [extract_gsm8k_answer(e.target) for e in exemplars] == ["6", "5", "39", "8", "9", "29", "33", "8"]
    assert all(e.target.endswith(f"The answer is {extract_gsm8k_answer(e.target)}.") for e in exemplars)
    folder = GSM8K_COT_EXEMPLARS.parent
    assert "gsm8k-cot.yaml" in (folder / "SOURCE.txt").read_text()
    assert (folder / "LICENSE").read_text().startswith("MIT License")


def test_gsm8k_prompt_is_the_gsm8k_cot_form():
    """lm_eval/tasks/gsm8k/gsm8k-cot.yaml (EleutherAI/lm-evaluation-harness): "Q: …\\nA: target" per exemplar,
    a blank line between, the question last, generation until "Q:"."""
    first, second = load_gsm8k_exemplars()[:2]
    assert render_gsm8k_prompt("What is 2 + 2?", [first, second]) == (
        f"Q: {first.question}\nA: {first.target}\n\nQ: {second.question}\nA: {second.target}\n\nQ: What is 2 + 2?\nA:"
    )
    assert render_gsm8k_prompt("q?", []) == "Q: q?\nA:"
    assert GSM8K_STOP == ("Q:",)


def test_no_gsm8k_test_item_is_used_as_a_shot():
    """The shots are the fixed exemplars, never the first test items: every bundled test item is evaluated."""
    items = load_gsm8k(DATA / "gsm8k" / "test_sample.jsonl")
    exemplars = load_gsm8k_exemplars()
    prompts = gsm8k_prompts(items, exemplars, 8)
    assert len(prompts) == len(items) == 60
    for item, prompt in zip(items, prompts):
        assert prompt.count("Q: ") == 9 and prompt.endswith(f"Q: {item.question}\nA:")
        assert not any(other.question in prompt for other in items if other is not item)
    with pytest.raises(ValueError, match="exemplars that are test items"):
        gsm8k_prompts([GsmItem("gsm8k/0", exemplars[0].question, "#### 6", "6")], exemplars, 1)
    with pytest.raises(ValueError, match="9 shots asked, 8 exemplars"):
        gsm8k_prompts(items, exemplars, 9)


# HumanEval --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval() -> list[HumanEvalItem]:
    return load_humaneval(DATA / "humaneval" / "HumanEval_sample.jsonl.gz")


def test_load_humaneval_gz_and_plain(humaneval, tmp_path):
    assert [item.task_id for item in humaneval] == [f"HumanEval/{i}" for i in range(20)]
    plain = tmp_path / "he.jsonl"
    plain.write_text(
        "\n".join(
            f'{{"task_id": "T/{i}", "prompt": "p", "entry_point": "f", "test": "t", '
            f'"canonical_solution": "c", "extra": 1}}'
            for i in range(3)
        )
        + "\n",
        encoding="utf-8",
    )
    assert [item.task_id for item in load_humaneval(plain, limit=2)] == ["T/0", "T/1"]


def test_truncate_completion():
    body = "    total = 0\n    for x in xs:\n        total += x  # running sum\n    return total\n"
    assert truncate_completion(body) == body
    assert truncate_completion(body + "\n\ndef main():\n    pass\n") == body + "\n"
    assert truncate_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_completion(body + "\n# tests\nprint(f([1]))") == body
    assert all(stop.startswith("\n") for stop in HUMANEVAL_STOP)


def test_humaneval_program_layout(humaneval):
    item = humaneval[0]
    program = humaneval_program(item, item.canonical_solution + "\nprint('stray')")
    assert program == item.prompt + item.canonical_solution + "\n\n" + item.test + "\n"
    assert humaneval_entry_point(item) == "has_close_elements"  # the sandbox's harness calls check on it


def test_pass_at_1():
    assert pass_at_1([True, False, True, True]) == 0.75
    assert pass_at_1([False]) == 0.0
    with pytest.raises(ValueError):
        pass_at_1([])
