"""What every LLM-backed asset shares: its decorator (pool, GPU request, the two gates), per-row status
columns, the gates' results (failures, refusals), and `LLMStep`, the spec of a step that asks one role about
each row of a table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, AssetKey, asset

from madef_assets.llm.pools import auto_device, gpu_request_tags, role_pools, step_pool
from madef_assets.llm.resource import LLMBatch, LLMResource
from madef_assets.llm.structured import OutputSpec
from madef_assets.llm.types import GenerationParams
from madef_assets.prompts import family_version, template
from madef_assets.settings import MethodConfig, Settings

PARSE_FAILURE_CHECK = "parse_failure_rate_within_limit"
REFUSAL_CHECK = "refusal_rate_within_limit"


def role_pool(settings: Settings, *roles: str) -> str | None:
    """The Dagster pool of a step that asks these roles' models (llm/pools.py): the scarcest of theirs."""
    device = auto_device()
    return step_pool(p for role in roles for p in role_pools(settings.roles[role], device))


def role_step(settings: Settings, *roles: str) -> dict[str, Any]:
    """`pool` and `op_tags` of a step that asks these roles' models: its pool, and a GPU request when that
    pool is a GPU's (the k8s executor)."""
    pool = role_pool(settings, *roles)
    return {"pool": pool, "op_tags": gpu_request_tags([pool])}


def status_columns(batch: LLMBatch, prefix: str = "") -> dict[str, list[Any]]:
    """Per-row ledger status, error, raw model output and whether the answer came from the ledger."""
    return {
        f"{prefix}status": [r.status for r in batch.results],
        f"{prefix}error": [r.error for r in batch.results],
        f"{prefix}raw_output": [r.output if isinstance(r.output, str) else None for r in batch.results],
        f"{prefix}cached": [r.cached for r in batch.results],
    }


def llm_gate_specs(asset_key: AssetKey) -> list[AssetCheckSpec]:
    """The two blocking gates of every LLM-backed asset: answers that failed, and answers refused."""
    return [
        AssetCheckSpec(
            PARSE_FAILURE_CHECK,
            asset=asset_key,
            blocking=True,
            description="Share of rows whose model answer could not be parsed (or failed) stays under "
            "method.max_parse_failure_rate; refusals are counted apart.",
        ),
        AssetCheckSpec(
            REFUSAL_CHECK,
            asset=asset_key,
            blocking=True,
            description="Share of rows the model refused or the provider moderated stays under "
            "method.max_refusal_rate (final answers: never sent again, never training data).",
        ),
    ]


def llm_gate_results(asset_key: AssetKey, statuses: pl.Series, method: MethodConfig) -> list[AssetCheckResult]:
    total = statuses.len()
    refused = int((statuses == "refused").sum())
    failed = int(((statuses != "ok") & (statuses != "refused")).sum())
    by_status = {str(k): int(v) for k, v in statuses.value_counts().iter_rows()}

    def result(name: str, count: int, limit: float) -> AssetCheckResult:
        rate = count / total if total else 0.0
        return AssetCheckResult(
            asset_key=asset_key,
            check_name=name,
            passed=rate <= limit,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rate": round(rate, 4), "limit": limit, "rows": total, "count": count, "by_status": by_status},
        )

    return [
        result(PARSE_FAILURE_CHECK, failed, method.max_parse_failure_rate),
        result(REFUSAL_CHECK, refused, method.max_refusal_rate),
    ]


def llm_asset(settings: Settings, name: str, group: str, *roles: str, **decorator: Any):
    """The decorator of an LLM-backed asset: its group, kinds, the pool of the roles it asks (and a GPU
    request when that is a GPU's) and the two blocking gates; `decorator` adds ins, deps, a description."""
    return asset(
        name=name,
        group_name=group,
        kinds={"duckdb", "llm"},
        **role_step(settings, *roles),
        check_specs=llm_gate_specs(AssetKey(name)),
        **decorator,
    )


@dataclass(frozen=True)
class LLMStep:
    """A step that asks one role about each row, as distilabel's Tasks declare theirs: the prompt family
    rendered per row (in the row's `lang`, with its `prompt`), the parser of an answer, the columns read from
    the parsed answers (None where there is none), the input columns kept, and optionally the generation
    parameters, a check of a parsed answer against its row (a problem makes it `parse_error`) and the
    answer's shape for roles that enforce one (llm/structured.py; its reader returns what `parse` does)."""

    name: str
    role: str
    template: str
    parse: Callable[[str], Any]
    columns: Callable[[list[Any]], dict[str, pl.Series]]
    keep: tuple[str | pl.Expr, ...]
    params: Callable[[GenerationParams], GenerationParams] | None = None
    reject: Callable[[Any, dict[str, Any]], str | None] | None = None
    output: OutputSpec | None = None

    def run(
        self, context: AssetExecutionContext, llm: LLMResource, rows: pl.DataFrame
    ) -> tuple[pl.DataFrame, LLMBatch]:
        """The output table (kept columns, the parsed columns, status columns) and the ledger batch."""
        rendered = [template(self.template, lang).render(prompt=p) for lang, p in zip(rows["lang"], rows["prompt"])]
        batch = llm.generate(
            rendered,
            template_version=family_version(self.template),
            params=self.params(llm.default_params) if self.params else None,
            parse=self.parse,
            log=context.log,
            refusals=True,
            output=self.output,
        )
        columns = status_columns(batch)
        values = []
        for index, (result, row) in enumerate(zip(batch.results, rows.iter_rows(named=True))):
            problem = result.status == "ok" and self.reject is not None and self.reject(result.value, row)
            if problem:
                columns["status"][index], columns["error"][index] = "parse_error", problem
            values.append(result.value if result.status == "ok" and not problem else None)
        table = rows.select(*self.keep).with_columns(
            **self.columns(values), **{k: pl.Series(k, v) for k, v in columns.items()}
        )
        return table, batch
