"""The LLaMA-Factory training YAML, rendered from the profile: the paper's hyperparameters by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

# Full-parameter SFT as in the paper (LLaMA-Factory, Llama-3.2-1B-Instruct).
PAPER_DEFAULTS: dict[str, Any] = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "learning_rate": 6.0e-7,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 50,
    "warmup_ratio": 0.0005,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 3.0,
    "cutoff_len": 2048,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 500,
    "overwrite_output_dir": True,
    "report_to": "none",
    "preprocessing_num_workers": 1,
}


def render_train_config(base_model: Path, dataset_dir: Path, dataset: str, output_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The `llamafactory-cli train` arguments: paper defaults, then the profile's `training.args`,
    then the paths madef owns (model, dataset, output), which overrides cannot change."""
    owned = {"model_name_or_path", "dataset", "dataset_dir", "output_dir"}
    clash = owned & set(overrides)
    if clash:
        raise ValueError(f"training.args may not set {sorted(clash)}: madef sets them from the graph")
    config = {**PAPER_DEFAULTS, **overrides, "model_name_or_path": str(base_model), "dataset": dataset,
              "dataset_dir": str(dataset_dir), "output_dir": str(output_dir)}
    if "deepspeed" in config and not Path(config["deepspeed"]).is_absolute():
        # A profile names the DeepSpeed file relative to the project; the trainer may run elsewhere.
        from madef_assets.settings import PROJECT_ROOT

        config["deepspeed"] = str(PROJECT_ROOT / config["deepspeed"])
    return config


def to_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def read_trainer_log(output_dir: Path) -> pl.DataFrame:
    """Loss per logged step from LLaMA-Factory's trainer_log.jsonl (empty when nothing was logged)."""
    import polars as pl

    schema = {"step": pl.Int64, "loss": pl.Float64, "learning_rate": pl.Float64, "epoch": pl.Float64}
    path = output_dir / "trainer_log.jsonl"
    if not path.exists():
        return pl.DataFrame(schema=schema)
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "loss" in entry and entry["loss"] is not None:
            rows.append({"step": entry["current_steps"], "loss": entry["loss"], "learning_rate": entry.get("lr"), "epoch": entry.get("epoch")})
    return pl.DataFrame(rows, schema=schema)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
