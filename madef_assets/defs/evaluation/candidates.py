"""Candidates: which model each evaluation partition runs, and the LLM resources that ask it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from madef_assets.defs.sources.assets import content_version, source_input_files
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import CandidateConfig, Settings

CANDIDATE_SCHEMA = {"candidate": pl.Utf8, "backend": pl.Utf8, "model": pl.Utf8, "model_hash": pl.Utf8,
                    "chat_template": pl.Boolean, "options": pl.Utf8}
# Every score table carries these columns: what was evaluated, how, and on which data.
FINGERPRINT_COLUMNS = ("backend", "model", "model_hash", "chat_template", "params", "dataset_hash")


def resolve_candidate(candidate: CandidateConfig, checkpoints: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The backend, model (path or served name) and options a candidate runs with. A `checkpoint:`
    candidate takes the path of that checkpoint asset's row (e.g. the fine-tuned folder)."""
    model = candidate.model
    if candidate.checkpoint is not None:
        if candidate.checkpoint not in checkpoints:
            raise ValueError(f"candidate {candidate.name!r}: {candidate.checkpoint} is not materialized yet")
        model = checkpoints[candidate.checkpoint]["path"]
    return {"candidate": candidate.name, "backend": candidate.backend, "model": model, "options": candidate.options}


def candidate_llm(settings: Settings, row: Mapping[str, Any], raw_prompts: bool) -> LLMResource:
    """An LLM resource over the candidate. `raw_prompts` scores or completes the prompt text as is
    (log-probability and few-shot completion tasks, as lm-evaluation-harness does by default); otherwise
    a local model's chat template wraps the prompt when the model has one."""
    options = json.loads(row["options"]) if isinstance(row["options"], str) else dict(row["options"])
    if raw_prompts and row["backend"] != "openai":
        options["chat_template"] = "never"
    return LLMResource(
        role=f"candidate:{row['candidate']}",
        backend=row["backend"],
        model=row["model"],
        params_json=json.dumps(settings.evaluation.params),
        options_json=json.dumps(options),
        duckdb_path=str(settings.duckdb_path),
        models_dir=str(settings.models_dir),
    )


def fingerprint(llm: LLMResource, params: Mapping[str, Any], dataset_hash: str) -> dict[str, Any]:
    """The eval fingerprint columns for one candidate run of one benchmark."""
    model = llm.get_backend().fingerprint()
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
