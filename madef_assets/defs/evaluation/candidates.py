"""Candidates: which model each evaluation partition runs, and the LLM resources that ask it."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, StaticPartitionsDefinition, asset

from madef_assets.compat import hold_pool_slot
from madef_assets.defs.frames import params_view
from madef_assets.defs.sources.assets import content_version, source_input_files
from madef_assets.llm.pools import auto_device, gpu_request_tags, model_pool
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import CHECKPOINT_ASSETS, CandidateConfig, Settings, model_from_parts
from madef_assets.storage import duckdb_connection, run_sql

CANDIDATE_SCHEMA = {
    "candidate": pl.Utf8,
    "backend": pl.Utf8,
    "model": pl.Utf8,
    "model_hash": pl.Utf8,
    "chat_template": pl.Boolean,
    "options": pl.Utf8,
    "weights": pl.Utf8,  # the weights on disk (a local model, or a served checkpoint's folder); null: none known
}
# Every score table carries these columns: what was evaluated, how, and on which data.
FINGERPRINT_COLUMNS = ("backend", "model", "model_hash", "chat_template", "params", "dataset_hash")


def per_candidate_asset(
    candidates: StaticPartitionsDefinition,
    kinds: set[str],
    pool_of: Mapping[str, str | None] | None = None,
    **asset_args,
):
    """`@asset` for an evaluation step run once per candidate: the evaluation group, one partition per
    candidate, stored under the table's `candidate` column. A step that asks the candidate's model gets
    `pool_of` (candidate_pools): each partition holds its candidate's pool while it runs (one op has one
    static pool, the same for every partition; `pool=` gives that one to a step that asks a role's model)."""
    decorator = asset(
        group_name="evaluation",
        kinds=kinds,
        partitions_def=candidates,
        metadata={"partition_expr": "candidate"},
        **{**asset_args, "op_tags": asset_args.get("op_tags") or gpu_request_tags((pool_of or {}).values())},
    )
    if pool_of is None:
        return decorator

    def holding_the_candidates_pool(compute):
        @functools.wraps(compute)
        def compute_in_pool(context: AssetExecutionContext, *args, **kwargs):
            pool = pool_of[context.partition_key]
            if pool is None:
                return compute(context, *args, **kwargs)
            with hold_pool_slot(context, pool):
                return compute(context, *args, **kwargs)

        return decorator(compute_in_pool)

    return holding_the_candidates_pool


def candidate_pools(settings: Settings) -> dict[str, str | None]:
    """Each candidate's pool (llm/pools.py): its device's when local, its endpoint's when served."""
    device = auto_device()
    return {c.name: model_pool(c.backend, c.options, device) for c in settings.evaluation.candidates}


def resolve_candidate(candidate: CandidateConfig, checkpoints: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The backend, model (path or served name) and options a candidate runs with. A local `checkpoint:`
    candidate takes the path of that checkpoint asset's row (e.g. the fine-tuned folder); a served one
    (`backend: openai`, `model:` the served name) takes the checkpoint's fingerprint as its revision, so
    its answers in the ledger follow the checkpoint's content. `weights`: where the candidate's weights are on
    disk (a local model's path, a served checkpoint's folder), for the evaluators that load weights themselves."""
    model, options = candidate.model, dict(candidate.options)
    weights = model if candidate.backend != "openai" else None
    if candidate.checkpoint is not None:
        if candidate.checkpoint not in checkpoints:
            raise ValueError(f"candidate {candidate.name!r}: {candidate.checkpoint} is not materialized yet")
        row = checkpoints[candidate.checkpoint]
        if candidate.backend == "openai":
            if model is None:
                raise ValueError(f"candidate {candidate.name!r}: a served checkpoint needs model: <the served name>")
            options["model_revision"] = row["fingerprint"]
        else:
            model = row["path"]
        weights = row["path"]
    return {
        "candidate": candidate.name,
        "backend": candidate.backend,
        "model": model,
        "options": options,
        "weights": weights,
    }


def read_checkpoints(settings: Settings, rate: str | None = None) -> dict[str, dict]:
    """The materialized checkpoint rows by asset name (base_model_checkpoint, finetuned_checkpoint): with
    several learning rates (§5.1.1) the finetuned_checkpoint row of partition `rate`, absent until trained."""
    rows = {}
    with duckdb_connection(settings.storage) as connection:
        tables = {
            t
            for (t,) in connection.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'public'"
            ).fetchall()
        }
        for name in CHECKPOINT_ASSETS:
            if name not in tables:
                continue
            where = " WHERE rate = ?" if name == "finetuned_checkpoint" and rate is not None else ""
            found = connection.execute(f"SELECT * FROM public.{name}{where}", [rate] if where else []).pl()
            if found.height:
                rows[name] = found.row(0, named=True)
    return rows


def rate_partition_mapping(candidates: Sequence[CandidateConfig]) -> dict[str, list[str]]:
    """Which candidate partitions read which finetuned_checkpoint partition (rate label -> candidate names)."""
    mapping: dict[str, list[str]] = {}
    for candidate in candidates:
        if candidate.rate is not None:
            mapping.setdefault(candidate.rate, []).append(candidate.name)
    return mapping


RAW_APIS = ("completions", "chat", "none")


def candidate_llm(settings: Settings, row: Mapping[str, Any], raw_prompts: bool) -> LLMResource:
    """An LLM resource over the candidate. `raw_prompts` scores or completes the prompt text as is
    (log-probability and few-shot completion tasks, as lm-evaluation-harness does by default); otherwise
    a local model's chat template wraps the prompt when the model has one. A served candidate answers
    open prompts through its `api` and raw prompts through `raw_api` (default: its `api`): `completions`
    on a server that has that endpoint (vLLM has both), so log-prob tasks score the raw prompt; through
    chat they are refused with a clear error by the backend."""
    options = json.loads(row["options"]) if isinstance(row["options"], str) else dict(row["options"])
    raw_api = options.pop("raw_api", options.get("api", "chat"))
    if raw_api not in RAW_APIS:
        raise ValueError(f"candidate {row['candidate']!r}: raw_api must be one of {RAW_APIS}, got {raw_api!r}")
    if raw_prompts and row["backend"] != "openai":
        options["chat_template"] = "never"
    elif raw_prompts and raw_api == "completions":
        options["api"] = "completions"
    return LLMResource(
        role=f"candidate:{row['candidate']}",
        config=model_from_parts(
            row["backend"], row["model"], options, settings.evaluation.params.model_dump(exclude_none=True)
        ),
        **settings.storage.resource_fields(),
        models_dir=str(settings.models_dir),
    )


def fingerprint(llm: LLMResource, params: Mapping[str, Any], dataset_hash: str) -> dict[str, Any]:
    """The eval fingerprint columns for one candidate run of one benchmark."""
    model = llm.identity()
    return {
        "backend": llm.backend,
        "model": str(model.get("model", llm.model)),
        "model_hash": str(model.get("hash") or model.get("revision") or ""),
        "chat_template": bool(model.get("chat_template", model.get("api") == "chat")),
        "params": json.dumps(dict(params), sort_keys=True, ensure_ascii=False),
        "dataset_hash": dataset_hash,
    }


def with_fingerprint(table: pl.DataFrame, values: Mapping[str, Any]) -> pl.DataFrame:
    return table.with_columns(**{k: pl.lit(values[k]) for k in FINGERPRINT_COLUMNS})


def files_hash(paths: list[Path]) -> str:
    """The content hash of a benchmark's data files."""
    return content_version([Path(p) for p in paths])


def sources_hash(settings: Settings, names: list[str]) -> str:
    """The content hash of every input file of the named sources (the same hash their raw assets observe)."""
    return content_version([f for name in names for f in source_input_files(settings.sources[name])])


def sample_per_group(items: pl.DataFrame, group: str, key: str, per_group: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of `per_group` items per value of `group` (None: every item), the same for every candidate."""
    sampled = run_sql(
        "evaluation/sample_per_group",
        items=items.with_columns(group_key=pl.col(group), item_key=pl.col(key)),
        params=params_view(per_group=per_group, seed=seed),
    )
    return sampled.drop("group_key", "item_key")
