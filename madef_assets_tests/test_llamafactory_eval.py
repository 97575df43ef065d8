"""LLaMA-Factory's own evaluator beside madef's general-capability numbers: the task folders it loads, its
result files, the report section, the settings, and (slow) a real run on the bundled model."""

import json

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import EVALUATE_JOB, MAIN_JOB, build_definitions
from madef_assets.defs.evaluation.llamafactory_eval import (
    SERVED_REASON,
    comparison_section,
    evaluator_args,
    outcome_rows,
    read_results,
    score_table,
    template_for,
    write_task_folder,
)
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT, ConfigError
from madef_assets.settings import LlamaFactoryEvalConfig, parse_settings
from madef_assets_tests.run_failures import failure_messages

DATA = PROJECT_ROOT / "data" / "general_eval"


def demo_raw() -> dict:
    """The demo profile with the evaluator switched on (the demo leaves it off for time)."""
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["evaluation"]["llamafactory_eval"]["enabled"] = True
    return raw


@pytest.mark.parametrize(
    "benchmark, split, per_subject", [("mmlu", "test", 2), ("cmmlu", "test", 1), ("ceval", "validation", None)]
)
def test_task_folder_has_the_layout_llamafactory_loads(tmp_path, benchmark, split, per_subject):
    """llamafactory/eval/evaluator.py reads <task_dir>/<task>/mapping.json and calls
    load_dataset(<task_dir>/<task>, name=<subject>), using split `train` for the shots and the task's split
    (`mmlu_test`, `ceval_validation`) for the questions, rows {question, A, B, C, D, answer}; datasets 4
    reads a script-less folder's per-config files from its README.md `configs`."""
    references = write_task_folder(
        benchmark,
        DATA / benchmark / f"{benchmark}_sample.zip",
        DATA / benchmark / "mapping.json",
        per_subject,
        tmp_path,
    )
    folder = tmp_path / benchmark
    mapping = json.loads((folder / "mapping.json").read_text(encoding="utf-8"))
    assert list(references) == list(mapping) and all(set(v) == {"name", "category"} for v in mapping.values())
    configs = yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == list(mapping)
    for config in configs:
        subject = config["config_name"]
        assert config["data_files"] == [
            {"split": "train", "path": f"{subject}/train.jsonl"},
            {"split": split, "path": f"{subject}/{split}.jsonl"},
        ]
        questions = [json.loads(line) for line in (folder / subject / f"{split}.jsonl").read_text().splitlines()]
        shots = (folder / subject / "train.jsonl").read_text().splitlines()
        assert len(shots) >= 1 and set(questions[0]) == {"question", "A", "B", "C", "D", "answer"}
        assert [q["answer"] for q in questions] == references[subject]
        if per_subject is not None:
            assert len(questions) == per_subject


def test_evaluator_arguments_name_the_task_and_split_llamafactory_expects(tmp_path):
    """EvaluationArguments (llamafactory/hparams/evaluation_args.py): task `<folder>_<split>`, lang en|zh, n_shot,
    save_dir; no template means LLaMA-Factory's own choice (the tokenizer's chat template, else `empty`)."""
    args = evaluator_args(tmp_path / "m", "default", "ceval", tmp_path / "tasks", tmp_path / "out", 5, 4, 0)
    assert (args["task"], args["lang"], args["n_shot"], args["template"]) == ("ceval_validation", "zh", 5, "default")
    assert evaluator_args(tmp_path / "m", None, "mmlu", tmp_path, tmp_path, 5, 4, 0)["task"] == "mmlu_test"
    assert "template" not in evaluator_args(tmp_path / "m", None, "mmlu", tmp_path, tmp_path, 5, 4, 0)
    config = LlamaFactoryEvalConfig(template="llama3", templates={"llama2_chinese_7b_chat": "llama2_zh"})
    assert template_for("llama2_chinese_7b_chat", config, {"template": "default"}) == "llama2_zh"
    assert template_for("tuned", config, {"template": "default"}) == "llama3"
    assert template_for("tuned", LlamaFactoryEvalConfig(), {"template": "default"}) == "default"


def test_results_are_read_from_the_evaluators_save_dir(tmp_path):
    """Evaluator._save_results writes results.json ({subject: {index: letter}}) and results.log
    (`{category:>15}: {score:.2f}` per line, Average first)."""
    (tmp_path / "results.json").write_text(json.dumps({"logic": {"0": "A", "1": "C"}, "law": {"0": "B"}}))
    (tmp_path / "results.log").write_text("        Average: 66.67\n           STEM: 50.00\nSocial Sciences: 100.00")
    outcome = read_results(tmp_path, {"logic": ["A", "B"], "law": ["B"]})
    assert (outcome["score"], outcome["questions"], outcome["correct"]) == (66.67, 3, 2)
    assert json.loads(outcome["categories"]) == {"Average": 66.67, "STEM": 50.0, "Social Sciences": 100.0}


def test_a_failed_evaluator_task_becomes_a_failed_row_with_its_error(tmp_path):
    """An exception in llamafactory/eval/evaluator.py's Evaluator (reported by pipes_llamafactory_eval.py)
    becomes a failed row with its error; a task without an outcome too."""
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "results.json").write_text(json.dumps({"logic": {"0": "B"}}))
    (tmp_path / "mmlu" / "results.log").write_text("        Average: 100.00")
    tasks = [
        {"benchmark": b, "args": evaluator_args(tmp_path / "m", "default", b, tmp_path, tmp_path / b, 2, 4, 0)}
        for b in ("mmlu", "ceval")
    ]
    rows = outcome_rows(
        tasks,
        {"mmlu": {"error": None}, "ceval": {"error": "Traceback ...\nValueError: boom"}},
        {"mmlu": {"logic": ["B"]}},
        "default",
    )
    assert [(r["benchmark"], r["status"], r.get("correct")) for r in rows] == [
        ("mmlu", "ok", 1),
        ("ceval", "failed", None),
    ]
    assert rows[1]["reason"].endswith("ValueError: boom") and rows[0]["n_shot"] == 2
    assert outcome_rows(tasks[1:], {}, {}, None)[0]["reason"] == "the evaluator reported no outcome"
    assert score_table("base", rows)["status"].to_list() == ["ok", "failed"]


def test_report_section_puts_both_numbers_side_by_side_and_says_why_they_differ():
    """The report's comparison: madef's score next to llamafactory/eval/evaluator.py's (chat template, random
    seeded shots, argmax of the A-D logits), with the difference, in the candidates' order; a skipped one says why."""
    general = pl.DataFrame(
        {
            "candidate": ["base", "tuned"],
            "benchmark": "mmlu",
            "score": [50.0, 25.0],
            "questions": 4,
            "ci_low": [15.0, 4.6],
            "ci_high": [85.0, 70.0],
        }
    )
    factory = pl.concat(
        [
            score_table("tuned", [{"benchmark": "mmlu", "status": "ok", "score": 75.0, "questions": 4, "correct": 3}]),
            score_table("base", [{"benchmark": "mmlu", "status": "ok", "score": 50.0, "questions": 4, "correct": 2}]),
            score_table("served", [{"benchmark": "mmlu", "status": "skipped", "reason": SERVED_REASON}]),
        ]
    )
    section = comparison_section(general, factory, ["base", "tuned", "served"])
    assert section.startswith("## General capability: madef vs llamafactory-cli eval")
    assert "chat template" in section and "shots" in section
    rows = [line for line in section.splitlines() if line.startswith("| mmlu")]
    assert rows[0].startswith("| mmlu | base | 50.0 [15.0, 85.0] n=4 | 50.0 [") and rows[0].endswith("| +0.0 |")
    assert rows[1].startswith("| mmlu | tuned | 25.0") and "| 75.0 [" in rows[1] and rows[1].endswith("| +50.0 |")
    assert rows[2] == f"| mmlu | served | — | skipped: {SERVED_REASON} | — |"


@pytest.mark.parametrize(
    "section, message",
    [
        ({"templates": {"nobody": "llama3"}}, "are not candidates"),
        ({"batch_size": 0}, "llamafactory_eval.batch_size: Input should be greater than 0"),
        ({"n_shot": 3}, "llamafactory_eval.n_shot: unknown key; allowed: batch_size, enabled, template, templates"),
    ],
)
def test_llamafactory_eval_settings_errors_name_the_key(tmp_path, section, message):
    """evaluation.llamafactory_eval is strict: templates name candidates, batch_size (EvaluationArguments'
    batch_size, llamafactory/hparams/evaluation_args.py) is positive, n_shot comes from evaluation.general."""
    raw = demo_raw()
    raw["evaluation"]["llamafactory_eval"] = section
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, tmp_path / "x.yaml", {})


def test_the_asset_exists_per_candidate_unless_disabled(tmp_path):
    """llamafactory_eval_scores (running llamafactory/eval/evaluator.py) is partitioned by candidate, feeds the
    report, and is left out with enabled: false."""
    raw = demo_raw()
    graph = build_definitions(parse_settings(raw, tmp_path / "x.yaml", {})).resolve_asset_graph()
    node = graph.get(AssetKey("llamafactory_eval_scores"))
    assert node.partitions_def.get_partition_keys() == ["base", "tuned_lr1e-5", "tuned_lr3e-5"]
    assert node.group_name == "evaluation"
    assert AssetKey("llamafactory_eval_scores") in graph.get(AssetKey("eval_report")).parent_keys
    raw["evaluation"]["llamafactory_eval"]["enabled"] = False
    graph = build_definitions(parse_settings(raw, tmp_path / "x.yaml", {})).resolve_asset_graph()
    assert not graph.has(AssetKey("llamafactory_eval_scores"))


@pytest.mark.slow
def test_llamafactory_evaluator_runs_on_the_bundled_model(tmp_path, models_dir):
    """The real thing, tiny: the base candidate (bundled Gemma 3 270M) through llamafactory/eval/evaluator.py
    in the training environment, one question per subject and two shots of MMLU and C-Eval, read offline
    from the task folders written at run time."""
    raw = demo_raw()
    general = raw["evaluation"]["general"]
    raw["evaluation"]["general"] = {
        "data_dir": general["data_dir"],
        **{b: {**general[b], "per_subject": 1, "shots": 2} for b in ("mmlu", "ceval")},
    }
    env = {"MADEF_STATE_DIR": str(tmp_path), "MADEF_MODELS_DIR": str(models_dir)}
    settings = parse_settings(raw, tmp_path / "x.yaml", env)
    if not settings.training.env_python.exists():
        pytest.skip(f"no LLaMA-Factory environment at {settings.training.env_python}: run `make train-env`")
    defs, instance = build_definitions(settings), DagsterInstance.ephemeral()
    assert (
        defs.resolve_job_def(MAIN_JOB)
        .execute_in_process(instance=instance, asset_selection=[AssetKey("base_model_checkpoint")])
        .success
    )
    result = defs.resolve_job_def(EVALUATE_JOB).execute_in_process(
        instance=instance,
        partition_key="base",
        raise_on_error=False,
        asset_selection=[AssetKey("candidate_model"), AssetKey("llamafactory_eval_scores")],
    )
    assert result.success, failure_messages(result)
    table = result.output_for_node("llamafactory_eval_scores")
    assert table["status"].to_list() == ["ok", "ok"], table["reason"].to_list()
    assert table["benchmark"].to_list() == ["mmlu", "ceval"] and table["questions"].to_list() == [4, 4]
    for row in table.iter_rows(named=True):
        assert row["score"] == pytest.approx(100 * row["correct"] / 4, abs=0.01) and row["template"] == "default"
        assert "Average" in json.loads(row["categories"])
