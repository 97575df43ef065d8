"""Fine-tuning: the rendered LLaMA-Factory YAML, the trainer log, and real CPU training runs."""

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import COMPARE_RATES_JOB, MAIN_JOB, TRAIN_JOB, build_definitions
from madef_assets.defs.evaluation.candidates import rate_partition_mapping, read_checkpoints, resolve_candidate
from madef_assets.defs.training.llamafactory_config import (
    PAPER_DEFAULTS,
    loss_curves,
    loss_overlay_png,
    read_trainer_log,
    render_train_config,
    reusable,
    trained_from,
    training_key,
)
from madef_assets.project import CONFIG_DIR, ConfigError
from madef_assets.reports import lines_png
from madef_assets.settings import load_settings, parse_section, parse_settings
from madef_assets.storage import duckdb_connection
from madef_assets_tests.run_failures import failure_messages
from madef_assets_tests.sft_tables import sft_settings, write_upstream


def test_production_yaml_follows_the_paper(tmp_path):
    settings = load_settings("production", env={})
    config = render_train_config(
        tmp_path / "llama", tmp_path / "data", "madef_sft", tmp_path / "out", settings.training.args
    )
    expected = {
        "stage": "sft",
        "finetuning_type": "full",
        "learning_rate": 6e-7,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 50,
        "warmup_ratio": 0.0005,
        "lr_scheduler_type": "cosine",
        "num_train_epochs": 3.0,
        "template": "llama3",
        "bf16": True,
        "dataset": "madef_sft",
        "model_name_or_path": str(tmp_path / "llama"),
    }
    assert {k: config[k] for k in expected} == expected
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    with pytest.raises(ValueError, match="may not set"):
        render_train_config(tmp_path, tmp_path, "madef_sft", tmp_path, {"output_dir": "/elsewhere"})
    demo = load_settings("demo", env={}).training.args
    assert demo["use_cpu"] is True and demo["max_steps"] <= 50 and "learning_rate" in PAPER_DEFAULTS


def test_read_trainer_log_has_train_and_eval_loss_per_step(tmp_path):
    # LLaMA-Factory's LogCallback: one line per Trainer log call; evaluation lines carry eval_loss, the
    # last line (end of training) neither loss
    lines = [
        {"current_steps": 1, "total_steps": 4, "loss": 4.2, "lr": 1e-5, "epoch": 0.1},
        {"current_steps": 2, "total_steps": 4, "loss": 3.9, "lr": 9e-6, "epoch": 0.2},
        {"current_steps": 2, "total_steps": 4, "eval_loss": 3.7, "epoch": 0.2},
        {"current_steps": 3, "total_steps": 4, "loss": 3.6, "lr": 8e-6, "epoch": 0.3},
        {"current_steps": 4, "total_steps": 4, "eval_loss": 3.5, "epoch": 0.4},
        {"current_steps": 4, "total_steps": 4, "epoch": 0.4, "percentage": 100.0},
    ]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = read_trainer_log(tmp_path)
    assert log.select("step", "loss", "eval_loss").rows() == [
        (1, 4.2, None),
        (2, 3.9, 3.7),
        (3, 3.6, None),
        (4, None, 3.5),
    ]
    assert read_trainer_log(tmp_path / "missing").columns == ["step", "loss", "eval_loss", "learning_rate", "epoch"]
    chart = lines_png(log, "step", {"loss": "train", "eval_loss": "eval"}, "loss", tmp_path / "loss.png")
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_production_keeps_bounded_weights_only_checkpoints_and_evaluates_a_validation_split(tmp_path):
    for profile in ("production", "demo"):
        args = load_settings(profile, env={}).training.args
        config = render_train_config(tmp_path / "base", tmp_path / "data", "madef_sft", tmp_path / "out", args)
        assert config["save_only_model"] is True and 1 <= config["save_total_limit"] <= 3, profile
        assert 0 < config["val_size"] and config["val_size"] != 1, profile
        assert config["eval_strategy"] == "steps" and config["eval_steps"] >= 1, profile
    assert (
        load_settings("demo", env={}).training.args["eval_steps"]
        <= load_settings("demo", env={}).training.args["max_steps"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ({"val_size": 0.1}, "never be evaluated"),
        ({"eval_strategy": "steps", "eval_steps": 5}, "needs a validation split"),
        ({"val_size": 0.1, "eval_strategy": "steps"}, "needs eval_steps"),
        ({"val_size": 1, "eval_strategy": "epoch"}, "whole set"),
    ],
)
def test_validation_split_and_evaluation_go_together(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        render_train_config(tmp_path, tmp_path, "madef_sft", tmp_path / "out", args)


def test_deepspeed_file_for_multi_gpu_is_resolved_and_is_zero3(tmp_path):
    from madef_assets.defs.training.llamafactory_config import render_train_config

    config = render_train_config(
        tmp_path / "base",
        tmp_path / "data",
        "madef_sft",
        tmp_path / "out",
        {"deepspeed": "deploy/llamafactory/deepspeed_z3.json", "bf16": True},
    )
    path = Path(config["deepspeed"])
    assert path.is_absolute() and path.exists()
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3


@pytest.mark.slow
def test_two_learning_rates_train_for_real_each_in_its_partition_and_are_compared(tmp_path, models_dir):
    """§5.1.1 end to end on the CPU: one real LLaMA-Factory training per rate (1 step each) through the rate
    job, each checkpoint in its own folder and partition row, the comparison overlays both loss logs, and
    each tuned candidate resolves to its own rate's checkpoint."""
    settings = sft_settings(
        tmp_path,
        models_dir,
        {"max_steps": 1, "gradient_accumulation_steps": 1, "cutoff_len": 64, "save_steps": 1, "eval_steps": 1},
        learning_rates=[1e-5, 3e-5],
    )
    if not settings.training.env_python.exists():
        pytest.skip(f"no LLaMA-Factory environment at {settings.training.env_python}: run `make train-env`")
    write_upstream(settings)
    defs, instance = build_definitions(settings), DagsterInstance.ephemeral()
    prepared = defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance,
        asset_selection=[AssetKey(k) for k in ("sft_dataset", "sft_dataset_folder", "base_model_checkpoint")],
    )
    assert prepared.success
    for rate in ("lr1e-5", "lr3e-5"):
        result = defs.resolve_job_def(TRAIN_JOB).execute_in_process(
            instance=instance, partition_key=rate, raise_on_error=False
        )
        assert result.success, failure_messages(result)
    comparison = defs.resolve_job_def(COMPARE_RATES_JOB).execute_in_process(instance=instance)
    curves = comparison.output_for_node("learning_rate_comparison")
    assert sorted(set(curves["rate"])) == ["lr1e-5", "lr3e-5"] and curves["loss"].drop_nulls().len() >= 2
    assert (settings.training.output_dir / "learning_rate_comparison.png").stat().st_size > 5000
    paths = {rate: read_checkpoints(settings, rate)["finetuned_checkpoint"]["path"] for rate in ("lr1e-5", "lr3e-5")}
    assert paths == {rate: str(settings.training.output_dir / rate) for rate in paths}
    tuned = {
        c.name: resolve_candidate(c, read_checkpoints(settings, c.rate))["model"]
        for c in settings.evaluation.candidates
        if c.rate
    }
    assert tuned == {"tuned_lr1e-5": paths["lr1e-5"], "tuned_lr3e-5": paths["lr3e-5"]}


def rates_settings(tmp_path, rates, candidates=None):
    """The demo profile trained at `rates` (training.learning_rates instead of args.learning_rate)."""
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["training"]["learning_rates"] = rates
    if candidates is not None:
        raw["evaluation"]["candidates"] = candidates
    return parse_settings(raw, tmp_path / "rates.yaml", {"MADEF_STATE_DIR": str(tmp_path)})


def test_learning_rates_parse_into_rate_labels_and_checkpoint_folders(tmp_path):
    """§5.1.1 compares learning rates: each rate gets a label (the partition key) and a folder of its own."""
    folder = tmp_path / "checkpoints" / "finetuned"
    training = parse_section("training", {"learning_rates": [6e-7, 1e-6, 2.5e-5, 0.001], "output_dir": folder})
    assert training.rate_labels == ("lr6e-7", "lr1e-6", "lr2.5e-5", "lr0.001") and training.partitioned
    assert training.checkpoint_dir("lr1e-6") == tmp_path / "checkpoints" / "finetuned" / "lr1e-6"
    assert training.learning_rate("lr2.5e-5") == 2.5e-5
    single = parse_section("training", {"args": {"learning_rate": 1e-5}, "output_dir": folder})
    assert single.learning_rates == (1e-5,) and not single.partitioned
    assert single.checkpoint_dir("lr1e-5") == tmp_path / "checkpoints" / "finetuned"  # as before: no rate folder
    assert parse_section("training", {}).learning_rates == (PAPER_DEFAULTS["learning_rate"],)
    assert not parse_section("training", {"learning_rates": [6e-7]}).partitioned


@pytest.mark.parametrize(
    "training, message",
    [
        ({"learning_rates": [1e-6], "args": {"learning_rate": 1e-6}}, "not both"),
        ({"learning_rates": []}, "training.learning_rates: .*at least 1 item"),
        ({"learning_rates": [1e-6, -1e-6]}, r"training.learning_rates\[1\]: Input should be greater than 0"),
        ({"learning_rates": "1e-6"}, "training.learning_rates: Input should be a valid tuple"),
        ({"learning_rates": [1e-6, 0.000001]}, "repeats a rate"),
    ],
)
def test_learning_rates_errors_name_the_key(tmp_path, training, message):
    """§5.1.1's rates go through the strict profile parser: ambiguous, empty, negative or repeated rates fail."""
    with pytest.raises(ConfigError, match=message):
        parse_section("training", training)


def test_several_rates_partition_the_checkpoint_and_give_one_tuned_candidate_per_rate(tmp_path):
    """§5.1.1: one finetuned_checkpoint partition per rate, trained by its own job; the tuned candidate
    follows the partitions (tuned_lr1e-5, tuned_lr3e-5), each candidate_model partition depending on its rate's."""
    settings = rates_settings(tmp_path, [1e-5, 3e-5])
    candidates = settings.evaluation.candidates
    assert [(c.name, c.rate) for c in candidates] == [
        ("base", None),
        ("tuned_lr1e-5", "lr1e-5"),
        ("tuned_lr3e-5", "lr3e-5"),
    ]
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("finetuned_checkpoint")).partitions_def.get_partition_keys() == ["lr1e-5", "lr3e-5"]
    assert graph.get(AssetKey("learning_rate_comparison")).partitions_def is None
    main = {k.to_user_string() for k in defs.resolve_job_def(MAIN_JOB).asset_layer.selected_asset_keys}
    assert "finetuned_checkpoint" not in main and "learning_rate_comparison" not in main and "sft_dataset" in main
    train = defs.resolve_job_def(TRAIN_JOB).asset_layer.selected_asset_keys
    assert train == {AssetKey("finetuned_checkpoint")}
    compare = defs.resolve_job_def(COMPARE_RATES_JOB).asset_layer.selected_asset_keys
    assert compare == {AssetKey("learning_rate_comparison")}
    assert rate_partition_mapping(candidates) == {"lr1e-5": ["tuned_lr1e-5"], "lr3e-5": ["tuned_lr3e-5"]}
    mapping = graph.get(AssetKey("candidate_model")).partition_mappings[AssetKey("finetuned_checkpoint")]
    by_rate = {rate: set(names) for rate, names in mapping.downstream_partition_keys_by_upstream_partition_key.items()}
    assert by_rate == {"lr1e-5": {"tuned_lr1e-5"}, "lr3e-5": {"tuned_lr3e-5"}}


def test_a_single_rate_profile_keeps_one_unpartitioned_checkpoint_and_one_tuned_candidate(tmp_path):
    """The single-rate case (production, rehearsal) is unchanged: no partitions, no rate job, candidate `tuned`."""
    for settings in (load_settings("production", env={}), rates_settings(tmp_path, [1e-5])):
        assert [c.name for c in settings.evaluation.candidates] == ["base", "tuned"]
        assert settings.evaluation.candidates[1].rate is None and not settings.training.partitioned
    defs = build_definitions(settings)
    assert defs.resolve_asset_graph().get(AssetKey("finetuned_checkpoint")).partitions_def is None
    assert AssetKey("finetuned_checkpoint") in defs.resolve_job_def(MAIN_JOB).asset_layer.selected_asset_keys
    assert TRAIN_JOB not in {job.name for job in defs.jobs}


def test_a_served_tuned_candidate_cannot_follow_several_rates(tmp_path):
    """§5.1.1 with a served tuned candidate: one endpoint serves one checkpoint, so several rates are refused."""
    served = {
        "tuned": {
            "checkpoint": "finetuned_checkpoint",
            "backend": "openai",
            "model": "tuned",
            "base_url": "http://vllm-tuned:8000/v1",
            "api_key_env": None,  # as production's served candidates: no key over plain http
        }
    }
    with pytest.raises(ConfigError, match="one endpoint serves one checkpoint"):
        rates_settings(tmp_path, [1e-5, 3e-5], served)


def test_loss_curves_of_two_rates_overlay_in_one_png(tmp_path):
    """§5.1.1's comparison from two hand-made LLaMA-Factory trainer logs (llamafactory/train/callbacks.py's
    LogCallback writes trainer_log.jsonl: `current_steps`, `loss`, evaluation lines `eval_loss`)."""
    logs = {"lr1e-5": [4.0, 3.5, 3.1], "lr3e-5": [4.0, 3.0]}
    for label, losses in logs.items():
        (tmp_path / label).mkdir()
        lines = [{"current_steps": step, "loss": loss, "lr": 1e-5} for step, loss in enumerate(losses, 1)]
        lines.append({"current_steps": 2, "eval_loss": losses[1] + 0.1})
        (tmp_path / label / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    curves = loss_curves({label: tmp_path / label for label in logs})
    assert curves.filter(pl.col("loss").is_not_null()).group_by("rate", maintain_order=True).agg(
        pl.col("loss")
    ).rows() == [("lr1e-5", [4.0, 3.5, 3.1]), ("lr3e-5", [4.0, 3.0])]
    assert curves.filter(pl.col("eval_loss").is_not_null())["eval_loss"].to_list() == [3.6, 3.1]
    chart = loss_overlay_png(curves, tmp_path / "comparison.png")
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 5000
    assert loss_curves({"lr1e-5": tmp_path / "missing"}).height == 0


def test_read_checkpoints_reads_the_rate_partition_of_a_candidate(tmp_path):
    """A tuned candidate trained at several rates resolves to its own partition's checkpoint path."""
    settings = rates_settings(tmp_path, [1e-5, 3e-5])
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    rows = pl.DataFrame(
        {
            "model": "finetuned:m",
            "path": ["/c/lr1e-5", "/c/lr3e-5"],
            "fingerprint": ["a", "b"],
            "size_bytes": 1,
            "rate": ["lr1e-5", "lr3e-5"],
            "learning_rate": [1e-5, 3e-5],
        }
    )
    with duckdb_connection(settings.duckdb_path) as connection:
        connection.register("rows", rows.to_arrow())
        connection.execute("CREATE SCHEMA public")
        connection.execute("CREATE TABLE public.finetuned_checkpoint AS SELECT * FROM rows")
        connection.execute("CREATE TABLE public.base_model_checkpoint AS SELECT '/m/base' AS path, 'z' AS fingerprint")
    by_name = {c.name: c for c in settings.evaluation.candidates}
    for name, path in (("tuned_lr1e-5", "/c/lr1e-5"), ("tuned_lr3e-5", "/c/lr3e-5")):
        candidate = by_name[name]
        resolved = resolve_candidate(candidate, read_checkpoints(settings, candidate.rate))
        assert resolved["model"] == path and resolved["candidate"] == name
    assert "finetuned_checkpoint" not in read_checkpoints(settings, "lr9e-9")
    assert read_checkpoints(settings)["base_model_checkpoint"]["path"] == "/m/base"


def test_a_checkpoint_is_reusable_only_for_the_same_key_and_unchanged_files(tmp_path):
    """finetuned_checkpoint reuses a checkpoint trained from the same base, SFT folder and arguments, unchanged
    since; another rate, base or data version, a changed folder or a missing record trains again."""
    config = {"learning_rate": 1e-5, "output_dir": "/x"}
    key = training_key(config, "base-1", "data-1")
    assert key == training_key(dict(reversed(config.items())), "base-1", "data-1")
    others = (
        ({**config, "learning_rate": 2e-5}, "base-1", "data-1"),
        (config, "base-2", "data-1"),
        (config, "base-1", "data-2"),
    )
    assert all(training_key(*other) != key for other in others)
    record = tmp_path / "finetuned_trained_from.json"
    assert not reusable(record, key, lambda: "weights-1")
    trained_from(record, key, "weights-1")
    assert reusable(record, key, lambda: "weights-1")
    assert not reusable(record, key, lambda: "weights-2") and not reusable(
        record, training_key(*others[0]), lambda: "weights-1"
    )
    record.write_text("{not json")
    assert not reusable(record, key, lambda: "weights-1")
