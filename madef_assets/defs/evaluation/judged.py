"""The shape every judged benchmark shares: the candidate's answers to a sample of prompts, the judge's
reading of each answer (a row without an answer is never sent to the judge) and the scores table. A judged
benchmark's module keeps only what is its own: the sample, the judge's template and parser, the columns it
derives from the verdicts and its scores SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output

from madef_assets.defs.evaluation.candidates import fingerprint, with_fingerprint
from madef_assets.defs.evaluation.judging import answered
from madef_assets.defs.panel import PanelAnswers, ask_panel
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMResource, LLMResult
from madef_assets.llm.types import GenerationParams
from madef_assets.prompts import family_version, template
from madef_assets.reports import markdown_table


def candidate_answers(
    context: AssetExecutionContext,
    llm: LLMResource,
    sample: pl.DataFrame,
    keep: Sequence[str],
    template_version: str,
    params: GenerationParams,
    dataset_hash: str,
    metadata: dict[str, Any] | None = None,
) -> Output:
    """The candidate's answer to each sampled prompt: the `keep` columns, then candidate, response (null
    unless the call succeeded), status, error and the eval fingerprint."""
    batch = llm.generate(sample["prompt"].to_list(), template_version, params=params, log=context.log)
    table = sample.select(keep).with_columns(
        candidate=pl.lit(context.partition_key),
        response=pl.Series([r.value if r.status == "ok" else None for r in batch.results], dtype=pl.Utf8),
        status=pl.Series([r.status for r in batch.results], dtype=pl.Utf8),
        error=pl.Series([r.error for r in batch.results], dtype=pl.Utf8),
    )
    table = with_fingerprint(table, fingerprint(llm, params.as_dict(), dataset_hash))
    return Output(table, metadata={**batch.metadata(), **(metadata or {})})


@dataclass(frozen=True)
class Verdicts:
    """The judge panel's reading of a responses table, per row of that table: `label` (the panel's; uncertain
    for a row never judged), `result` (the first member's call; None for a row never judged) and `votes`
    (each member's label, when the panel has more than one member)."""

    rows: list[dict[str, Any]]
    judged: list[int]
    answers: PanelAnswers
    results: dict[int, LLMResult] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", dict(zip(self.judged, self.answers.first.results)))

    @property
    def labels(self) -> list[str]:
        by_row = dict(zip(self.judged, self.answers.labels))
        return [by_row.get(i, UNCERTAIN) for i in range(len(self.rows))]

    def votes(self, row: int) -> tuple[str, ...] | None:
        if len(self.answers.models) < 2 or row not in self.results:
            return None
        return tuple(member[self.judged.index(row)] for member in self.answers.votes)

    def raw_outputs(self) -> pl.Series:
        """The first member's raw output per row (null when not judged or not text)."""
        outputs = [self.results[i].output if i in self.results else None for i in range(len(self.rows))]
        return pl.Series([o if isinstance(o, str) else None for o in outputs], dtype=pl.Utf8)

    def metadata(self) -> dict[str, Any]:
        return {
            **self.answers.metadata(),
            "judge_model": ", ".join(self.answers.models),
            "unanswered": len(self.rows) - len(self.judged),
        }


def judge_answers(
    context: AssetExecutionContext,
    judge: LLMResource,
    responses: pl.DataFrame,
    render: Callable[[dict[str, Any]], str],
    template_family: str,
    read: Callable[[LLMResult, int], str],
    question: str | None = None,
    **generate: Any,
) -> Verdicts:
    """Every answered row of `responses` sent to each member of the judge panel: a madef-format member gets
    `render(row)` and `read` turns its answer into its label; a guard member (`judge_format`) gets its card's
    prompt on the row's prompt and response and answers `question` (guards.HARM / guards.REFUSAL; None: the
    step asks what only madef's prompt asks, and a guard in the panel is a ConfigError)."""
    rows = responses.to_dicts()
    judged = answered([r["response"] for r in rows], [r["status"] for r in rows])
    answers = ask_panel(
        judge,
        [rows[i] for i in judged],
        family_version(template_family),
        render,
        read,
        context.log,
        question=question,
        **generate,
    )
    return Verdicts(rows, judged, answers)


def in_row_language(template_family: str) -> Callable[[dict[str, Any]], str]:
    """The judge request for a row: the family's template in the row's language, with its prompt and response."""
    return lambda row: template(template_family, row["lang"]).render(prompt=row["prompt"], response=row["response"])


def scores_table(
    context: AssetExecutionContext, table: pl.DataFrame, responses: pl.DataFrame, shown: Sequence[str]
) -> pl.DataFrame:
    """A scores table carrying its responses' eval fingerprint, with `shown` as markdown metadata."""
    if responses.height:
        table = with_fingerprint(table, responses.row(0, named=True))
    context.add_output_metadata({"scores": MetadataValue.md(markdown_table(table.select(shown)))})
    return table
