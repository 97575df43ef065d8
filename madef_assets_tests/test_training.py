"""Fine-tuning: the rendered LLaMA-Factory YAML, the trainer log, and real CPU training runs."""

import json
from pathlib import Path

import pytest
import yaml

from madef_assets.defs.training.llamafactory_config import PAPER_DEFAULTS, read_trainer_log, render_train_config
from madef_assets.settings import load_settings


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


def test_read_trainer_log(tmp_path):
    lines = [{"current_steps": 1, "total_steps": 3, "loss": 4.2, "lr": 1e-5, "epoch": 0.1},
             {"current_steps": 2, "total_steps": 3, "loss": 3.9, "lr": 9e-6, "epoch": 0.2},
             {"current_steps": 3, "total_steps": 3, "eval_loss": 3.5}]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = read_trainer_log(tmp_path)
    assert log.select("step", "loss").rows() == [(1, 4.2), (2, 3.9)]
    assert read_trainer_log(tmp_path / "missing").height == 0


def test_deepspeed_file_for_multi_gpu_is_resolved_and_is_zero3(tmp_path):
    from madef_assets.defs.training.llamafactory_config import render_train_config

    config = render_train_config(tmp_path / "base", tmp_path / "data", "madef_sft", tmp_path / "out",
                                 {"deepspeed": "deploy/llamafactory/deepspeed_z3.json", "bf16": True})
    path = Path(config["deepspeed"])
    assert path.is_absolute() and path.exists()
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3
