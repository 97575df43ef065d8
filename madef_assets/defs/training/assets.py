"""Fine-tuning: the trainee's base checkpoint and a LLaMA-Factory full-parameter SFT run on sft_dataset."""

from pathlib import Path

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    Failure,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    StaticPartitionsDefinition,
    asset,
)

from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.selection.export import DATASET_NAME, read_manifest
from madef_assets.defs.training.llamafactory_config import (
    folder_size,
    loss_curves,
    loss_overlay_png,
    read_final_eval_loss,
    read_trainer_log,
    render_train_config,
    reusable,
    to_yaml,
    trained_from,
    training_key,
)
from madef_assets.llm.engines import ENGINES, free_gpu_problem, gpu_memory
from madef_assets.llm.model_files import folder_fingerprint, resolve_model_path
from madef_assets.reports import lines_png, markdown_image, markdown_table
from madef_assets.settings import Settings

GROUP = "training"
PIPES_SCRIPT = __file__.replace("assets.py", "pipes_train.py")
CHECKPOINT_SCHEMA = {"model": pl.Utf8, "path": pl.Utf8, "fingerprint": pl.Utf8, "size_bytes": pl.Int64}


def checkpoint_row(model: str, path) -> pl.DataFrame:
    return pl.DataFrame(
        [{"model": model, "path": str(path), "fingerprint": folder_fingerprint(path), "size_bytes": folder_size(path)}],
        schema=CHECKPOINT_SCHEMA,
    )


def build_training_assets(settings: Settings) -> list:
    trainee = settings.roles["trainee"]
    training = settings.training

    @asset(group_name=GROUP, kinds={"duckdb", "pytorch"})
    def base_model_checkpoint(context: AssetExecutionContext) -> pl.DataFrame:
        """The trainee model as a local Hugging Face checkpoint folder (the bundled Gemma 3 270M is
        converted from GGUF once); one row with its path, fingerprint and size."""
        path = resolve_model_path(trainee.model, settings.models_dir)
        table = checkpoint_row(trainee.model, path)
        context.add_output_metadata({"path": MetadataValue.path(str(path)), "size_bytes": int(table["size_bytes"][0])})
        return table

    rates = StaticPartitionsDefinition(list(training.rate_labels)) if training.partitioned else None

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "pytorch"},
        **role_step(settings, "trainee"),  # LLaMA-Factory trains on the trainee's device
        partitions_def=rates,
        metadata={"partition_expr": "rate"} if rates else None,
    )
    def finetuned_checkpoint(
        context: AssetExecutionContext,
        pipes_subprocess_client: PipesSubprocessClient,
        base_model_checkpoint: pl.DataFrame,
        sft_dataset_folder: pl.DataFrame,
    ) -> Output:
        """LLaMA-Factory full-parameter SFT of the base checkpoint on the published sft_dataset folder (only a
        set that passed the contamination gate is ever published), run in the training environment through
        Dagster Pipes (log streamed to the run); metadata: train and eval loss per step, one loss curve with
        both, rendered YAML, wall time, checkpoint path and size. With several `training.learning_rates`
        (§5.1.1) one partition per rate, each in `<output_dir>/<rate label>`. A checkpoint already trained from
        the same base checkpoint, SFT folder and arguments, and unchanged since, is reused (`reused` in the
        metadata) instead of trained again."""
        label = context.partition_key if rates else training.rate_labels[0]
        dataset_dir = Path(sft_dataset_folder["path"][0])
        manifest = read_manifest(dataset_dir)
        if manifest is None or manifest["files_version"] != sft_dataset_folder["files_version"][0]:
            raise Failure(
                description=f"the SFT folder {dataset_dir} is not the published sft_dataset_folder "
                f"(version {sft_dataset_folder['files_version'][0]}): a later sft_dataset run was blocked by its "
                "contamination gate and withdrew it, or the folder was changed by hand; materialize sft_dataset and "
                "sft_dataset_folder again"
            )
        output_dir = training.checkpoint_dir(label)
        config = render_train_config(
            base_model_checkpoint["path"][0],
            dataset_dir,
            DATASET_NAME,
            output_dir,
            {**training.args, "learning_rate": training.learning_rate(label)},
        )
        prefix = label if rates else "finetuned"  # finetuned_train.yaml / finetuned_loss.png with one rate
        record = output_dir.parent / f"{prefix}_trained_from.json"
        key = training_key(config, base_model_checkpoint["fingerprint"][0], manifest["files_version"])
        if reusable(record, key, lambda: folder_fingerprint(output_dir) if output_dir.is_dir() else ""):
            context.log.info(
                f"{output_dir} was trained from the same base checkpoint, SFT folder and arguments and is unchanged: "
                f"reused, not trained again (delete {record} to train it again)"
            )
            return checkpoint_output(config, output_dir, prefix, manifest, label, reused=True)
        record.unlink(missing_ok=True)
        closed = ENGINES.release()  # every loaded model, whatever gpu.release says: training needs the memory
        problem = free_gpu_problem(gpu_memory(), settings.gpu.training_min_free_fraction)
        if problem:
            raise Failure(description=f"training not started: {problem}")
        context.log.info(f"closed {closed} loaded model engine(s) before training")
        config_path = output_dir.parent / f"{prefix}_train.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(to_yaml(config), encoding="utf-8")
        session = pipes_subprocess_client.run(
            command=[str(training.env_python), PIPES_SCRIPT],
            context=context,
            extras={"config_path": str(config_path)},
            # Local files only, and the tokenized-dataset cache beside the checkpoints, not under $HOME.
            env={
                "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_CACHE": str(output_dir.parent / "datasets_cache"),
            },
        )
        outcome = next(iter(session.get_custom_messages()), {"exit_code": None, "tail": []})
        if outcome["exit_code"] != 0:
            # Checkpoints already written under output_dir are kept.
            raise Failure(
                description=f"llamafactory-cli train exited with code {outcome['exit_code']}:\n"
                + "\n".join(outcome["tail"][-15:]),
                metadata={
                    "exit_code": outcome["exit_code"],
                    "train_yaml": MetadataValue.md(f"```yaml\n{to_yaml(config)}```"),
                },
            )
        trained_from(record, key, folder_fingerprint(output_dir))
        return checkpoint_output(config, output_dir, prefix, manifest, label, wall_seconds=outcome.get("wall_seconds"))

    def checkpoint_output(
        config: dict,
        output_dir: Path,
        prefix: str,
        manifest: dict,
        label: str,
        reused: bool = False,
        wall_seconds: float | None = None,
    ) -> Output:
        """The checkpoint's row, with train and eval loss per step, the loss curve and the rendered YAML."""
        log = read_trainer_log(output_dir)
        train_loss, eval_loss = log.drop_nulls("loss"), log.drop_nulls("eval_loss")
        chart = lines_png(
            log,
            "step",
            {"loss": "train loss", "eval_loss": "eval loss (validation split)"},
            "Training and validation loss",
            output_dir.parent / f"{prefix}_loss.png",
            ylabel="loss",
        )
        metadata = {
            "train_yaml": MetadataValue.md(f"```yaml\n{to_yaml(config)}```"),
            "loss_per_step": MetadataValue.md(markdown_table(log) if log.height else "no loss logged"),
            "samples": int(manifest["rows"]),
            "learning_rate": training.learning_rate(label),
            "dataset_version": manifest["files_version"],
            "loss_curve": MetadataValue.md(markdown_image(chart)),
            "steps": int(log["step"].max() or 0) if log.height else 0,
            "first_loss": float(train_loss["loss"][0]) if train_loss.height else None,
            "final_loss": float(train_loss["loss"][-1]) if train_loss.height else None,
            "eval_steps_logged": eval_loss.height,
            "first_eval_loss": float(eval_loss["eval_loss"][0]) if eval_loss.height else None,
            "final_eval_loss": float(eval_loss["eval_loss"][-1])
            if eval_loss.height
            else read_final_eval_loss(output_dir),
            "reused": reused,
            "wall_seconds": wall_seconds,
            "checkpoint": MetadataValue.path(str(output_dir)),
        }
        # Output, not a bare frame: a Pipes session makes Dagster treat the body's result as events.
        row = checkpoint_row("finetuned:" + trainee.model, output_dir)
        if rates:  # the partition column; a single-rate table keeps the base checkpoint's columns
            row = row.with_columns(rate=pl.lit(label), learning_rate=pl.lit(training.learning_rate(label)))
        return Output(row, metadata=metadata)

    if not rates:
        return [base_model_checkpoint, finetuned_checkpoint]

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "polars"},
        ins={"finetuned_checkpoint": AssetIn(partition_mapping=AllPartitionMapping())},
    )
    def learning_rate_comparison(context: AssetExecutionContext, finetuned_checkpoint: pl.DataFrame) -> pl.DataFrame:
        """§5.1.1's learning-rate comparison: the loss logs of every trained rate (every partition of
        finetuned_checkpoint) as one table (rate, step, loss, eval_loss) and one PNG with the curves overlaid."""
        paths = dict(finetuned_checkpoint.sort("learning_rate").select("rate", "path").iter_rows())
        curves = loss_curves(paths)
        chart = loss_overlay_png(curves, training.output_dir / "learning_rate_comparison.png")
        final = (
            curves.drop_nulls("loss")
            .group_by("rate", maintain_order=True)
            .agg(final_step=pl.col("step").last(), final_loss=pl.col("loss").last())
        )
        context.add_output_metadata(
            {
                "rates": list(paths),
                "loss_curves": MetadataValue.md(markdown_image(chart)),
                "final_loss": MetadataValue.md(markdown_table(final)),
                "chart": MetadataValue.path(str(chart)),
            }
        )
        return curves

    return [base_model_checkpoint, finetuned_checkpoint, learning_rate_comparison]
