"""End to end on the bundled model: sources -> intent -> diversity -> responses -> reward -> sft_dataset,
then training, then every evaluation asset for base and tuned."""

import json
import math

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import EVALUATE_JOB, MAIN_JOB, REPORT_JOB, build_definitions
from madef_assets.defs.evaluation.benchmarks.general import sandbox_note
from madef_assets.defs.evaluation.cvalues import CVALUES_CHOICES, RULE_SETS
from madef_assets.defs.evaluation.sandbox import isolation_problem
from madef_assets.defs.training.llamafactory_config import read_trainer_log
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT
from madef_assets.review.decisions import append_decision, read_queue
from madef_assets.settings import load_settings
from madef_assets_tests.conftest import FIXTURES
from madef_assets_tests.run_failures import failure_messages

pytestmark = pytest.mark.slow
# What the tiny profile's training sources (XSafety, PKU-SafeRLHF) supply by their own categories; the others
# come only from generation by the 270M model, which a two-prompt sample cannot promise.
SOURCE_MAPPED_CATEGORIES = ["OFF", "UB", "CIA", "PP", "EM", "PMH", "IA", "MI"]
LLM_ASSETS = ("intent_labels", "augmented_prompts", "safe_responses", "prompt_perplexity", "instruction_safety_scores")


def tiny_profile(tmp_path, name: str, **method_changes) -> str:
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["method"].update(
        label_sample_per_source=2,
        quota_per_category=1,
        general_sample_size=4,
        sft_export_dir=str(tmp_path / "sft"),
        required_categories=SOURCE_MAPPED_CATEGORIES,
        augment_rounds=1,  # the rounds have their own test (test_volume); the sources supply the required categories
        # The demo's gate (0.25) is measured on its 48 labels; on this two-prompt sample a few "1", "2" label lists
        # of the 270M model are a large share. The gate itself is tested in test_llm_steps.
        max_parse_failure_rate=0.5,
        **method_changes,
    )
    raw["training"]["learning_rates"] = [1e-5]  # one rate: the two-rate path has its own test (test_training)
    # The qualifications' own tests measure them; here they run at their smallest (3 XSTest answers, 1 PKU pair,
    # the labeler on s_eval's categories): on CPU they were two thirds of this run.
    raw["qualification"].update(per_model=1, pku_pairs=1, labeler_sources=["s_eval"])
    raw["models"]["responder"]["params"]["max_new_tokens"] = 40
    raw["models"]["attacker"]["params"]["max_new_tokens"] = 40
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(path)


def run(profile: str, tmp_path, models_dir, groups_left_out=("training", "evaluation")):
    """Everything up to sft_dataset by default; training and evaluation have their own tests below."""
    settings = load_settings(
        profile, env={"MADEF_STATE_DIR": str(tmp_path / "state"), "MADEF_MODELS_DIR": str(models_dir)}
    )
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    selection = [k for k in graph.materializable_asset_keys if graph.get(k).group_name not in groups_left_out]
    return settings, defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=selection, raise_on_error=False
    )


def metadata(result, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(asset))
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, models_dir):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    settings, result = run(tiny_profile(tmp_path, "tiny"), tmp_path, models_dir)
    return tmp_path, settings, result


def test_whole_method_materializes_and_exports_a_llamafactory_dataset(first_run):
    tmp_path, settings, result = first_run
    assert result.success, failure_messages(result)
    for event in result.get_asset_materialization_events():
        assert "dagster/row_count" in event.materialization.metadata, event.asset_key
    for asset in LLM_ASSETS:
        assert metadata(result, asset)["llm_backend_calls"] > 0, asset
    sft = result.output_for_node("sft_dataset")
    assert sft.height == metadata(result, "sft_dataset")["dagster/row_count"] > 0
    assert set(sft["kind"]) <= {"safety", "general"} and (sft["kind"] == "general").sum() == 4
    info = json.loads((tmp_path / "sft" / "dataset_info.json").read_text())
    records = json.loads((tmp_path / "sft" / info["madef_sft"]["file_name"]).read_text())
    assert len(records) == sft.height
    assert all(set(r) == {"instruction", "input", "output"} and r["instruction"] and r["output"] for r in records)
    conversations = json.loads((tmp_path / "sft" / info["madef_sft_sharegpt"]["file_name"]).read_text())
    assert [c["conversations"][1]["value"] for c in conversations] == [r["output"] for r in records]
    assert (settings.state_dir / "reports" / "intent_distribution.png").stat().st_size > 1000
    augmented = result.output_for_node("augmented_prompts")
    refused = (augmented["status"] == "refused").sum() / augmented.height
    assert metadata(result, "augmented_prompts")["attacker_refusal_rate"] == round(refused, 4)
    attack = result.output_for_node("attack_prompts")
    assert attack.group_by("category").len()["len"].max() == 1  # the quota
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert (
        checks["no_overlap_with_evaluation_prompts"]
        and checks["perplexity_at_least_one"]
        and checks["no_duplicates_after_dedup"]
    )
    assert checks["every_category_present"] and set(SOURCE_MAPPED_CATEGORIES) <= set(attack["category"])


def test_changing_a_threshold_makes_no_llm_call(first_run, models_dir):
    tmp_path, _, _ = first_run
    profile = tiny_profile(
        tmp_path,
        "loose",
        selection={
            "perplexity_quantile": 1.0,
            "min_response_safety": 0.0,
            "max_instruction_safety": 1.0,
            "per_category_cap": 100,
        },
    )
    _, result = run(profile, tmp_path, models_dir)
    assert result.success
    for asset in LLM_ASSETS:
        assert metadata(result, asset)["llm_backend_calls"] == 0, asset
    # looser thresholds select at least what the defaults did, without asking any model again
    strict = metadata(first_run[2], "safety_sft_selected")["dagster/row_count"]
    loose = metadata(result, "safety_sft_selected")["dagster/row_count"]
    assert loose >= strict and loose == metadata(result, "reward_features")["rows_with_all_features"]


def test_planted_leak_blocks_the_sft_dataset_and_stops_training(first_run, models_dir):
    tmp_path, _, _ = first_run
    general = json.loads((PROJECT_ROOT / "data/general_sft/alpaca_en_demo.json").read_text())
    general += json.loads((PROJECT_ROOT / "data/general_sft/alpaca_zh_demo.json").read_text())
    leak = tmp_path / "leaky_eval.jsonl"
    leak.write_text("".join(json.dumps({"question": r["instruction"]}, ensure_ascii=False) + "\n" for r in general))
    raw = yaml.safe_load(open(tiny_profile(tmp_path, "leaky")))
    raw["sources"]["leaky_eval"] = {
        "reader": "generic",
        "columns": {"prompt": "question"},
        "files": [{"path": str(leak)}],
    }
    raw["method"]["eval_sources"].append("leaky_eval")
    raw["method"]["decontaminate"] = False  # the gate itself: with decontamination the leaked rows are removed
    (tmp_path / "leaky.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    _, result = run(str(tmp_path / "leaky.yaml"), tmp_path, models_dir, groups_left_out=("evaluation",))
    assert not result.success
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_overlap_with_evaluation_prompts")
    assert not gate.passed and gate.metadata["leaked_prompts"].value >= 4
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "base_model_checkpoint" in materialized
    assert "finetuned_checkpoint" not in materialized  # the blocking gate stopped the line before training
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "base_model_checkpoint" in started and "finetuned_checkpoint" not in started


# Training reads the published SFT folder, which the planted-leak run above withdrew: publish it again first.
TRAINING = (
    AssetKey("sft_dataset"),
    AssetKey("sft_dataset_folder"),
    AssetKey("base_model_checkpoint"),
    AssetKey("finetuned_checkpoint"),
)


def train(first_run, models_dir, name: str, args: dict):
    tmp_path, _, _ = first_run
    raw = yaml.safe_load(open(tiny_profile(tmp_path, name)))
    raw["training"]["args"].update(args)
    raw["training"]["output_dir"] = str(tmp_path / name / "checkpoint")
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    settings = load_settings(
        str(tmp_path / f"{name}.yaml"),
        env={"MADEF_STATE_DIR": str(tmp_path / "state"), "MADEF_MODELS_DIR": str(models_dir)},
    )
    if not settings.training.env_python.exists():
        pytest.skip(f"no LLaMA-Factory environment at {settings.training.env_python}: run `make train-env`")
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    return settings, job.execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=list(TRAINING), raise_on_error=False
    )


# 2 CPU steps on the published folder, 2 held-out samples evaluated after each step.
TRAIN_ARGS = {"max_steps": 2, "gradient_accumulation_steps": 1, "cutoff_len": 64, "save_steps": 1, "val_size": 2}
TRAIN_ARGS |= {"eval_strategy": "steps", "eval_steps": 1}


@pytest.fixture(scope="module")
def trained(first_run, models_dir):
    return train(first_run, models_dir, "train", TRAIN_ARGS)


def test_cpu_training_writes_a_loadable_checkpoint_with_eval_loss_and_reuses_it(trained, models_dir, first_run):
    settings, result = trained
    assert result.success, failure_messages(result)
    meta = metadata(result, "finetuned_checkpoint")
    assert meta["steps"] == 2 and meta["eval_steps_logged"] == 2 and meta["samples"] > 0
    assert all(math.isfinite(meta[k]) for k in ("first_loss", "final_loss", "first_eval_loss", "final_eval_loss"))
    assert "| step | loss | eval_loss |" in meta["loss_per_step"] and "loss_curve" in meta
    assert "learning_rate" in meta["train_yaml"] and "val_size: 2" in meta["train_yaml"]
    assert str(settings.method.sft_export_dir) in meta["train_yaml"]
    checkpoint = settings.training.output_dir
    log = read_trainer_log(checkpoint)
    assert log.filter(pl.col("loss").is_not_null() & pl.col("eval_loss").is_not_null())["step"].to_list() == [1, 2]
    checkpoints = list(checkpoint.glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-2"]  # save_total_limit 1 keeps the last
    assert not list(checkpoints[0].glob("optimizer*"))  # save_only_model: weights only
    assert (checkpoint.parent / "finetuned_loss.png").stat().st_size > 5000
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    # The same base, folder and arguments again: the checkpoint is reused, not trained again.
    weights = max(checkpoint.glob("*.safetensors"), key=lambda p: p.stat().st_size)
    written = weights.stat().st_mtime_ns
    _, again = train(first_run, models_dir, "train", TRAIN_ARGS)
    assert again.success, failure_messages(again)
    assert metadata(again, "finetuned_checkpoint")["reused"] and weights.stat().st_mtime_ns == written
    assert again.output_for_node("finetuned_checkpoint").equals(result.output_for_node("finetuned_checkpoint"))


def test_failing_training_fails_the_materialization_with_the_error(first_run, models_dir):
    _, result = train(first_run, models_dir, "broken", {"template": "no_such_template", "max_steps": 1})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "finetuned_checkpoint")
    error = str(failure.step_failure_data.error) + str(failure.step_failure_data.user_failure_data)
    assert "llamafactory-cli train exited with code 1" in error
    assert "no_such_template" in error


def tiny_evaluation_profile(tmp_path) -> str:
    raw = yaml.safe_load(open(tmp_path / "train.yaml"))
    raw["evaluation"].update(
        params={"temperature": 0.0, "max_new_tokens": 8},
        safetybench={"source": "safetybench", "per_category": 1, "answer_modes": ["logprobs", "generate"]},
        new_safety={"sources": ["s_eval"], "per_category": 1},
        review_dir=str(tmp_path / "review"),
        report_dir=str(tmp_path / "report"),
        responsibility={"prompts_source": "cvalues_responsibility", "per_domain": 1, "mcq_source": "cvalues_mc"},
        over_refusal={"source": "xstest", "per_type": 1, "max_new_tokens": 8},
        jailbreak_rubric={
            **raw["evaluation"]["jailbreak_rubric"],
            "per_language": 1,
            "methods": ["none", "positive_induction"],
            "max_new_tokens": 8,
            "judge_max_new_tokens": 16,
        },
    )
    raw["evaluation"]["safetybench"]["max_new_tokens"] = 8
    raw["models"]["judge"]["params"]["max_new_tokens"] = 8  # a label and the start of a reason
    raw["sources"]["cvalues_mc"] = {
        "reader": "cvalues_responsibility_mc",
        "files": [{"path": str(FIXTURES / "cvalues_responsibility_mc.jsonl"), "lang": "zh"}],
    }
    general = raw["evaluation"]["general"]
    general["gsm8k"].update(limit=1, shots=1, max_new_tokens=8)
    for benchmark in ("mmlu", "cmmlu", "ceval"):
        general[benchmark].update(per_subject=1, shots=1)
    general["humaneval"].update(limit=1, max_new_tokens=16)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(tmp_path / "eval.yaml")


MCQ_FIXTURE_ROWS = len((FIXTURES / "cvalues_responsibility_mc.jsonl").read_text(encoding="utf-8").splitlines())
PER_CANDIDATE = (
    "candidate_model",
    "safetybench_predictions",
    "safetybench_scores",
    "new_safety_responses",
    "new_safety_judgements",
    "responsibility_responses",
    "responsibility_judgements",
    "responsibility_mcq_predictions",
    "review_queue",
    "new_safety_scores",
    "responsibility_scores",
    "general_capability_predictions",
    "general_capability_scores",
    "over_refusal_responses",
    "over_refusal_judgements",
    "over_refusal_scores",
    "jailbreak_rubric_responses",
    "jailbreak_rubric_judgements",
    "jailbreak_rubric_scores",
)


@pytest.fixture(scope="module")
def evaluated(first_run, trained, models_dir):
    tmp_path = first_run[0]
    assert trained[1].success
    settings = load_settings(
        tiny_evaluation_profile(tmp_path),
        env={"MADEF_STATE_DIR": str(tmp_path / "state"), "MADEF_MODELS_DIR": str(models_dir)},
    )
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    shared = defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance,
        asset_selection=[
            AssetKey(["quarantine", "cvalues_mc"]),
            *(
                AssetKey(k)
                for k in ("cvalues_mc", "new_safety_benchmark", "review_decisions", "jailbreak_rubric_prompts")
            ),
        ],
        raise_on_error=False,
    )
    per_candidate = {
        c: defs.resolve_job_def(EVALUATE_JOB).execute_in_process(
            instance=instance, partition_key=c, raise_on_error=False
        )
        for c in ("base", "tuned")
    }
    report = defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance, raise_on_error=False)
    return settings, defs, instance, shared, per_candidate, report


def test_every_evaluation_asset_materializes_for_base_and_tuned(evaluated):
    settings, _, _, shared, per_candidate, report = evaluated
    for result in (shared, *per_candidate.values(), report):
        assert result.success, failure_messages(result)
    benchmark = shared.output_for_node("new_safety_benchmark")
    # S-Eval's eight source-mapped categories at least (a labeled prompt may add the labeler's), one prompt each;
    # never a training source's prompt (§4.2)
    assert benchmark.height >= 8 and benchmark.group_by("category").len()["len"].max() == 1
    assert set(benchmark["source"]) == {"s_eval"} and set(benchmark["category_origin"]) <= {"intent", "source"}
    assert next(c for c in shared.get_asset_check_evaluations() if c.check_name == "disjoint_from_sft_dataset").passed
    models = {}
    for candidate, result in per_candidate.items():
        assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == set(PER_CANDIDATE)
        model = result.output_for_node("candidate_model")
        models[candidate] = model.row(0, named=True)
        predictions = result.output_for_node("safetybench_predictions")
        assert predictions.height == 14 and set(predictions["mode"]) == {
            "logprobs",
            "generate",
        }  # 7 categories x 1 x 2 modes
        assert predictions.filter(pl.col("mode") == "logprobs")["predicted_index"].is_not_null().all()
        # generate mode: every answer gets an option, by an official rule or as a seeded random guess
        rules = set(predictions.filter(pl.col("mode") == "generate")["extraction"])
        assert rules <= {"letter", "option_text", "second_line", "random"}
        submission = json.loads(
            (settings.evaluation.report_dir / candidate / "safetybench_logprobs_submission.json").read_text()
        )
        assert len(submission) == 7 and set(submission.values()) <= {0, 1, 2, 3}
        scores = result.output_for_node("safetybench_scores")
        assert scores.filter(pl.col("mode") == "logprobs")["category"].to_list() == [
            "OFF",
            "UB",
            "PH",
            "MH",
            "IA",
            "EM",
            "PP",
            "Avg",
        ]
        for table in ("safetybench_scores", "new_safety_scores", "responsibility_scores", "general_capability_scores"):
            frame = result.output_for_node(table)
            assert frame.height and {
                "backend",
                "model",
                "model_hash",
                "chat_template",
                "params",
                "dataset_hash",
            } <= set(frame.columns), table
            assert (frame["model_hash"] == models[candidate]["model_hash"]).all(), table
        judgements = result.output_for_node("new_safety_judgements")
        assert (
            set(judgements["judge_label"]) <= {"safe", "unsafe", "uncertain"} and judgements.height == benchmark.height
        )
        general_scores = result.output_for_node("general_capability_scores").filter(pl.col("subject") == "(all)")
        assert set(general_scores["benchmark"]) == {"gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"}
        mcq = result.output_for_node("responsibility_mcq_predictions")
        choice_columns = [f"choice_{rule_set}" for rule_set in RULE_SETS]
        assert mcq.height == MCQ_FIXTURE_ROWS and set(mcq.select(choice_columns).unpivot()["value"]) <= set(
            CVALUES_CHOICES
        )
        mcq_scores = result.output_for_node("responsibility_scores").filter(pl.col("mcq_questions") > 0)
        assert mcq_scores["mcq_questions"].sum() == MCQ_FIXTURE_ROWS and mcq_scores["acc"].is_not_null().all()
        queue = read_queue(settings.evaluation.review_dir / "queue" / f"{candidate}.jsonl")
        refusals = result.output_for_node("over_refusal_judgements")
        assert refusals.height == 18 and set(refusals["prompt_label"]) == {"safe", "unsafe"}  # 1 prompt per XSTest type
        assert set(refusals["final_label"]) <= {"compliance", "refusal", "partial", "uncertain"}
        refusal_scores = result.output_for_node("over_refusal_scores").filter(pl.col("type") == "(all)")
        assert refusal_scores.select("prompt_label", "measure", "prompts").rows() == [
            ("safe", "compliance", 10),
            ("unsafe", "refusal", 8),
        ]
        assert (
            (refusal_scores["ci_low"] <= refusal_scores["rate"]) & (refusal_scores["rate"] <= refusal_scores["ci_high"])
        ).all()
        jailbreak = result.output_for_node("jailbreak_rubric_judgements")
        assert jailbreak.height == 4 and set(jailbreak["judge_label"]) <= {"graded", "uncertain"}  # 2 prompts x 2
        jailbreak_all = result.output_for_node("jailbreak_rubric_scores").filter(pl.col("method") == "(all)")
        assert jailbreak_all["answers"].to_list() == [4]
        expected = (
            (judgements["judge_label"] == "uncertain").sum()
            + mcq.select(pl.any_horizontal(pl.col(choice_columns) == "need_check")).to_series().sum()
            + (refusals["final_label"] == "uncertain").sum()
            + (jailbreak["judge_label"] == "uncertain").sum()
        )
        assert len(queue) == result.output_for_node("review_queue").height == expected
    assert models["base"]["model_hash"] != models["tuned"]["model_hash"]
    assert models["tuned"]["model"] == str(settings.training.output_dir) and models["tuned"]["chat_template"]
    text = (settings.evaluation.report_dir / "eval_report.md").read_text()
    assert text.index("SafetyBench (generate, Table 5-1") < text.index("SafetyBench (logprobs")
    assert "SB-IA (Illegal Activities)" in text
    for heading in (
        "SafetyBench (logprobs",
        "New-Safety benchmark",
        "Responsibility",
        "General capability",
        "What fed each category",
        "Over-refusal (XSTest)",
        "Judged by",
        "The judge against human labels",
        "| refusal | XSTest v2 human labels | human annotator 2 vs 1 |",
        "| refusal | XSTest v2 human labels | GPT-4",
        "| refusal | XSTest v2 human labels | string matcher",
        "The labeler against the sources' categories",
        "The data: intent distributions",
        "/intent_labels_s_eval.png)",
        sandbox_note(settings).strip(),  # how HumanEval's programs ran, above the general-capability table
    ):
        assert heading in text
    # the report opens with the fitness verdict, the judge's qualification first
    verdict = text.splitlines()[2]
    assert verdict.startswith(("**Fitness verdict — not fit for training: ", "**Fitness verdict — fit for training")), (
        verdict
    )
    assert "judge κ = " in text
    assert " n=" in text
    assert "| base | tuned | Δ tuned |" in text
    # every delta carries its paired test (McNemar / paired bootstrap, Holm-corrected), never an interval overlap
    assert "Holm p=" in text and "intervals overlap" not in text.replace("overlapping intervals are not a test", "")
    assert "Responsibility MCQ: acc per official evaluator rule set" in text and "· chinese_alpaca" in text
    tests = report.get_asset_materialization_events()[0].materialization.metadata["paired_tests"].value
    assert tests > 0
    assert (settings.evaluation.report_dir / "new_safety_radar.png").stat().st_size > 5000
    regression = next(
        c for c in report.get_asset_check_evaluations() if c.check_name == "no_category_worse_than_baseline"
    )
    assert regression.passed == (regression.metadata["significant_regressions"].value == 0)


def test_humaneval_without_its_sandbox_fails_naming_the_setting(evaluated, monkeypatch):
    """bwrap missing (PATH without it): HumanEval is not run unisolated; the step fails and says which
    setting opts out."""
    settings, defs, instance, *_ = evaluated
    assert settings.sandbox.isolation == "bubblewrap"
    monkeypatch.setenv("PATH", "/nonexistent")
    isolation_problem.cache_clear()
    try:
        result = defs.resolve_job_def(EVALUATE_JOB).execute_in_process(
            instance=instance,
            partition_key="base",
            asset_selection=[AssetKey("general_capability_predictions")],
            raise_on_error=False,
        )
    finally:
        isolation_problem.cache_clear()
    assert not result.success
    assert any(
        "HumanEval not run" in m and "bwrap is not installed" in m and "sandbox: {isolation: rlimits}" in m
        for m in failure_messages(result)
    ), failure_messages(result)


def test_review_decisions_count_and_survive_a_judge_rerun(evaluated):
    settings, defs, instance, _, per_candidate, _ = evaluated
    judgements = per_candidate["base"].output_for_node("new_safety_judgements")
    # An uncertain answer when the judge left one, else any: a reviewer's decision overrides the judge's label.
    row = judgements.sort(pl.col("judge_label") != "uncertain").row(0, named=True)
    key, category, label = row["review_key"], row["category"], row["judge_label"]
    decision = "safe" if label == "unsafe" else "unsafe"
    decisions_file = settings.evaluation.review_dir / "decisions.jsonl"
    append_decision(decisions_file, key, decision, "tester", allowed=["safe", "unsafe"])
    before = decisions_file.read_text()
    assert (
        defs.resolve_job_def(MAIN_JOB)
        .execute_in_process(instance=instance, asset_selection=[AssetKey("review_decisions")])
        .success
    )
    rerun = defs.resolve_job_def(EVALUATE_JOB).execute_in_process(
        instance=instance,
        partition_key="base",
        asset_selection=[AssetKey("new_safety_judgements"), AssetKey("review_queue"), AssetKey("new_safety_scores")],
    )
    assert rerun.success and metadata(rerun, "new_safety_judgements")["llm_backend_calls"] == 0
    scores = rerun.output_for_node("new_safety_scores").filter(pl.col("category") == category).row(0, named=True)
    original = (
        per_candidate["base"]
        .output_for_node("new_safety_scores")
        .filter(pl.col("category") == category)
        .row(0, named=True)
    )
    assert scores["from_review"] == original["from_review"] + 1 and scores[decision] == original[decision] + 1
    before_label = {"uncertain": "pending_review"}.get(label, label)
    assert scores[before_label] == original[before_label] - 1
    assert decisions_file.read_text() == before  # the judge re-ran; the decision file is untouched
