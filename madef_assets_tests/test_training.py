"""Fine-tuning: the rendered LLaMA-Factory YAML, the trainer log, and real CPU training runs."""

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.defs.training.llamafactory_config import PAPER_DEFAULTS, read_trainer_log, render_train_config
from madef_assets.definitions import MAIN_JOB, build_definitions
from madef_assets.reports import lines_png
from madef_assets.settings import load_settings
from madef_assets_tests.sft_tables import sft_settings, write_upstream


def test_production_yaml_follows_the_paper(tmp_path):
    settings = load_settings("production", env={})
    config = render_train_config(tmp_path / "llama", tmp_path / "data", "madef_sft", tmp_path / "out", settings.training.args)
    expected = {"stage": "sft", "finetuning_type": "full", "learning_rate": 6e-7, "per_device_train_batch_size": 1,
                "gradient_accumulation_steps": 50, "warmup_ratio": 0.0005, "lr_scheduler_type": "cosine", "num_train_epochs": 3.0,
                "template": "llama3", "bf16": True, "dataset": "madef_sft", "model_name_or_path": str(tmp_path / "llama")}
    assert {k: config[k] for k in expected} == expected
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    with pytest.raises(ValueError, match="may not set"):
        render_train_config(tmp_path, tmp_path, "madef_sft", tmp_path, {"output_dir": "/elsewhere"})
    demo = load_settings("demo", env={}).training.args
    assert demo["use_cpu"] is True and demo["max_steps"] <= 50 and "learning_rate" in PAPER_DEFAULTS


def test_read_trainer_log_has_train_and_eval_loss_per_step(tmp_path):
    # LLaMA-Factory's LogCallback: one line per Trainer log call; evaluation lines carry eval_loss, the
    # last line (end of training) neither loss
    lines = [{"current_steps": 1, "total_steps": 4, "loss": 4.2, "lr": 1e-5, "epoch": 0.1},
             {"current_steps": 2, "total_steps": 4, "loss": 3.9, "lr": 9e-6, "epoch": 0.2},
             {"current_steps": 2, "total_steps": 4, "eval_loss": 3.7, "epoch": 0.2},
             {"current_steps": 3, "total_steps": 4, "loss": 3.6, "lr": 8e-6, "epoch": 0.3},
             {"current_steps": 4, "total_steps": 4, "eval_loss": 3.5, "epoch": 0.4},
             {"current_steps": 4, "total_steps": 4, "epoch": 0.4, "percentage": 100.0}]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = read_trainer_log(tmp_path)
    assert log.select("step", "loss", "eval_loss").rows() == [(1, 4.2, None), (2, 3.9, 3.7), (3, 3.6, None), (4, None, 3.5)]
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
    assert load_settings("demo", env={}).training.args["eval_steps"] <= load_settings("demo", env={}).training.args["max_steps"]


@pytest.mark.parametrize("args, message", [
    ({"val_size": 0.1}, "never be evaluated"),
    ({"eval_strategy": "steps", "eval_steps": 5}, "needs a validation split"),
    ({"val_size": 0.1, "eval_strategy": "steps"}, "needs eval_steps"),
    ({"val_size": 1, "eval_strategy": "epoch"}, "whole set"),
])
def test_validation_split_and_evaluation_go_together(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        render_train_config(tmp_path, tmp_path, "madef_sft", tmp_path / "out", args)


def test_deepspeed_file_for_multi_gpu_is_resolved_and_is_zero3(tmp_path):
    from madef_assets.defs.training.llamafactory_config import render_train_config

    config = render_train_config(tmp_path / "base", tmp_path / "data", "madef_sft", tmp_path / "out",
                                 {"deepspeed": "deploy/llamafactory/deepspeed_z3.json", "bf16": True})
    path = Path(config["deepspeed"])
    assert path.is_absolute() and path.exists()
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3


@pytest.mark.slow
def test_cpu_training_on_the_published_folder_logs_eval_loss_next_to_train_loss(tmp_path, models_dir):
    """sft_dataset → sft_dataset_folder → finetuned_checkpoint for real (2 CPU steps, 2 held-out samples
    evaluated after each step), on hand-made upstream tables."""
    settings = sft_settings(tmp_path, models_dir, {"max_steps": 2, "gradient_accumulation_steps": 1, "cutoff_len": 64, "save_steps": 1,
                                                   "val_size": 2, "eval_strategy": "steps", "eval_steps": 1})
    if not settings.training.env_python.exists():
        pytest.skip(f"no LLaMA-Factory environment at {settings.training.env_python}: run `make train-env`")
    write_upstream(settings)
    selection = [AssetKey(k) for k in ("sft_dataset", "sft_dataset_folder", "base_model_checkpoint", "finetuned_checkpoint")]
    result = build_definitions(settings).resolve_job_def(MAIN_JOB).execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=selection, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("finetuned_checkpoint"))
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["steps"] == 2 and meta["eval_steps_logged"] == 2 and meta["samples"] == 12
    assert math.isfinite(meta["first_loss"]) and math.isfinite(meta["first_eval_loss"]) and math.isfinite(meta["final_eval_loss"])
    assert "| step | loss | eval_loss |" in meta["loss_per_step"]
    log = read_trainer_log(settings.training.output_dir)
    assert log.filter(pl.col("loss").is_not_null() & pl.col("eval_loss").is_not_null())["step"].to_list() == [1, 2]
    assert (settings.training.output_dir.parent / "finetuned_loss.png").stat().st_size > 5000 and "loss_curve" in meta
    assert "val_size: 2" in meta["train_yaml"] and str(settings.method.sft_export_dir) in meta["train_yaml"]
    checkpoints = list(settings.training.output_dir.glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-2"]  # save_total_limit 1
    assert not list(checkpoints[0].glob("optimizer*"))  # save_only_model: weights only
