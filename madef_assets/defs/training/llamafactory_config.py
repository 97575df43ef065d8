"""The LLaMA-Factory training YAML, rendered from the profile: the paper's hyperparameters by default."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madef_assets.settings import PAPER_LEARNING_RATE

if TYPE_CHECKING:
    import polars as pl

# Full-parameter SFT as in the paper (LLaMA-Factory, Llama-3.2-1B-Instruct).
PAPER_DEFAULTS: dict[str, Any] = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "learning_rate": PAPER_LEARNING_RATE,
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


def render_train_config(
    base_model: Path, dataset_dir: Path, dataset: str, output_dir: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The `llamafactory-cli train` arguments: paper defaults, then the profile's `training.args`,
    then the paths madef owns (model, dataset, output), which overrides cannot change."""
    owned = {"model_name_or_path", "dataset", "dataset_dir", "output_dir"}
    clash = owned & set(overrides)
    if clash:
        raise ValueError(f"training.args may not set {sorted(clash)}: madef sets them from the graph")
    config = {
        **PAPER_DEFAULTS,
        **overrides,
        "model_name_or_path": str(base_model),
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "output_dir": str(output_dir),
    }
    check_evaluation_args(config)
    if "deepspeed" in config and not Path(config["deepspeed"]).is_absolute():
        # A profile names the DeepSpeed file relative to the project; the trainer may run elsewhere.
        from madef_assets.project import PROJECT_ROOT

        config["deepspeed"] = str(PROJECT_ROOT / config["deepspeed"])
    return config


def check_evaluation_args(config: dict[str, Any]) -> None:
    """A held-out split (`val_size`) and evaluation during training (`eval_strategy`, `eval_steps`) go
    together; caught here, before a training run fails or silently skips its validation split."""
    val_size = config.get("val_size") or 0
    strategy = str(config.get("eval_strategy") or "no")
    if val_size == 1:
        raise ValueError(
            "training.args.val_size: 1 means the whole set to LLaMA-Factory (a fraction); give a fraction "
            "below 1 or a count of 2 or more"
        )
    if val_size and strategy == "no":
        raise ValueError(
            "training.args.val_size holds out a validation split that would never be evaluated: "
            "set eval_strategy (steps or epoch) and eval_steps"
        )
    if strategy != "no" and not val_size:
        raise ValueError(f"training.args.eval_strategy {strategy!r} needs a validation split: set val_size")
    if strategy == "steps" and not config.get("eval_steps"):
        raise ValueError(
            "training.args.eval_strategy steps needs eval_steps (otherwise it evaluates at every logged step)"
        )


def to_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def read_trainer_log(output_dir: Path) -> pl.DataFrame:
    """Train and eval loss per logged step from LLaMA-Factory's trainer_log.jsonl, one row per step:
    `loss` (null where the step only evaluated), `eval_loss` (null where it did not evaluate; logged when
    a validation split is held out: val_size with eval_strategy/eval_steps). Empty when nothing was logged.
    LLaMA-Factory's callback writes one line per Trainer log call: training lines carry `loss`, `lr` and
    `epoch`, evaluation lines `eval_loss`, both keyed by `current_steps`."""
    import polars as pl

    schema = {
        "step": pl.Int64,
        "loss": pl.Float64,
        "eval_loss": pl.Float64,
        "learning_rate": pl.Float64,
        "epoch": pl.Float64,
    }
    path = output_dir / "trainer_log.jsonl"
    if not path.exists():
        return pl.DataFrame(schema=schema)
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        step = entry.get("current_steps")
        if step is None:
            continue
        if entry.get("loss") is not None:
            row = by_step.setdefault(step, {"step": step})
            row.update(loss=entry["loss"], learning_rate=entry.get("lr"), epoch=entry.get("epoch"))
        if entry.get("eval_loss") is not None:
            row = by_step.setdefault(step, {"step": step})
            row["eval_loss"] = entry["eval_loss"]
            row.setdefault("epoch", entry.get("epoch"))
    return pl.DataFrame([by_step[step] for step in sorted(by_step)], schema=schema)


def loss_curves(log_dirs: Mapping[str, Path]) -> pl.DataFrame:
    """§5.1.1's comparison: every run's trainer_log.jsonl (by rate label) as one long table, one row per
    rate and logged step (`rate`, `step`, `loss`, `eval_loss`); a run that logged nothing adds no rows."""
    import polars as pl

    frames = [
        read_trainer_log(Path(path)).select(pl.lit(label).alias("rate"), "step", "loss", "eval_loss")
        for label, path in log_dirs.items()
    ]
    return (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={"rate": pl.Utf8, "step": pl.Int64, "loss": pl.Float64, "eval_loss": pl.Float64})
    )


def loss_overlay_png(curves: pl.DataFrame, path: Path) -> Path:
    """One PNG with every rate's train loss (and eval loss, where logged) over the steps, overlaid."""
    from madef_assets.reports import lines_png

    rates = curves["rate"].unique(maintain_order=True).to_list()
    wide = curves.pivot(on="rate", index="step", values=["loss", "eval_loss"], aggregate_function="first").sort("step")
    series = {
        f"{measure}_{rate}": f"{'train' if measure == 'loss' else 'eval'} loss, {rate}"
        for rate in rates
        for measure in ("loss", "eval_loss")
    }
    return lines_png(
        wide,
        "step",
        {c: label for c, label in series.items() if c in wide.columns},
        "Loss per learning rate",
        path,
        ylabel="loss",
    )


def read_final_eval_loss(output_dir: Path) -> float | None:
    """eval_loss of the evaluation LLaMA-Factory runs after training (eval_results.json), if any."""
    path = output_dir / "eval_results.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("eval_loss")
    return float(value) if value is not None else None


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def training_key(config: Mapping[str, Any], base_fingerprint: str, dataset_version: str) -> str:
    """What a checkpoint is trained from: the rendered arguments, the base checkpoint's content and the SFT
    folder's version. The same key would train the same checkpoint again, so it is reused instead."""
    text = json.dumps(
        {"config": config, "base": base_fingerprint, "data": dataset_version}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def trained_from(record: Path, key: str, fingerprint: str) -> None:
    """Records that the checkpoint with this fingerprint was trained from `key` (written after a successful run)."""
    record.write_text(json.dumps({"key": key, "fingerprint": fingerprint}), encoding="utf-8")


def reusable(record: Path, key: str, fingerprint: Callable[[], str]) -> bool:
    """Whether the checkpoint recorded in `record` was trained from `key` and is unchanged since (its
    fingerprint as recorded): then training again would only reproduce it."""
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("key") == key and recorded.get("fingerprint") == fingerprint()
