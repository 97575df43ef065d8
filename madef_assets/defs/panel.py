"""A judge panel (`models.judge` a list of models): every member answers the same rows, each through the
ledger under its own identity, in its own format (`judge_format`): a madef-format member gets the step's
request rendered from the row and read by the step's reader; a guard member (defs/guards.py) gets its model
card's prompt on the row's prompt and response and is read by the guard's reader. The panel's label is the one
more members gave than any other, and a tie is `uncertain` (which sends the row to review)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from madef_assets.defs.guards import (
    GUARDS,
    MADEF_FORMAT,
    SHIELDGEMMA_OPTIONS,
    SHIELDGEMMA_POLICIES,
    Guard,
    require_answer,
)
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMBatch, LLMResource, LLMResult, batches_metadata

Row = Mapping[str, Any]


def panel_label(votes: Sequence[str]) -> str:
    """The label with strictly more votes than every other (an uncertain vote counts as a vote); a tie,
    or no vote, is uncertain. One vote is that vote."""
    ranked = Counter(votes).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return UNCERTAIN
    return ranked[0][0]


@dataclass(frozen=True)
class PanelAnswers:
    """The panel's label per request, each member's label (`votes[member][row]`), its batch and model."""

    labels: list[str]
    votes: list[list[str]]
    batches: list[LLMBatch]
    models: list[str]

    @property
    def first(self) -> LLMBatch:
        """The first member's batch: its raw outputs and statuses are the ones kept beside the panel's label."""
        return self.batches[0]

    def metadata(self) -> dict[str, Any]:
        """The members' LLM metadata summed (llm_backend_calls counts every member's calls), with the panel."""
        totals = batches_metadata(self.batches)
        if len(self.models) > 1:
            totals["panel_models"] = self.models
            totals["panel_ties"] = sum(
                label == UNCERTAIN and len(set(v)) > 1 for label, v in zip(self.labels, zip(*self.votes))
            )
        return totals


def prompt_and_response(row: Row) -> tuple[str, str]:
    """The conversation a guard judges: the row's prompt and response."""
    return row["prompt"], row["response"]


def member_names(judge: LLMResource) -> list[str]:
    """How the profile names each member (models.judge, or models.judge[i] in a panel), with its model."""
    members = judge.panel()
    return [
        f"models.{judge.role}" + (f"[{i}]" if len(members) > 1 else "") + f" ({m.model})" for i, m in enumerate(members)
    ]


def ask_panel(
    judge: LLMResource,
    rows: Sequence[Row],
    template_version: str,
    render: Callable[[Row], str],
    read: Callable[[LLMResult, int], str],
    log: logging.Logger | None = None,
    question: str | None = None,
    conversation: Callable[[Row], tuple[str, str]] = prompt_and_response,
    **generate: Any,
) -> PanelAnswers:
    """Every member of the judge's panel answers `rows`. A madef-format member is sent `render(row)` (with
    `generate`'s arguments: params, parse, output) and `read(result, i)` turns its answer to row i into a label
    (uncertain when it has none). A guard member is sent its card's prompt on `conversation(row)` and its
    reading's answer to `question` (guards.HARM / guards.REFUSAL) is its label; a result's `value` is then the
    GuardReading. A guard that cannot answer `question` (None: a question only madef's prompt asks) is a
    ConfigError naming its entry, raised before any member is asked."""
    members = judge.panel()
    for member, name in zip(members, member_names(judge)):
        require_answer(member.config.judge_format, question, name)
    batches, votes = [], []
    for member in members:
        if member.config.judge_format == MADEF_FORMAT:
            batch = member.generate([render(r) for r in rows], template_version, log=log, refusals=True, **generate)
            votes.append([read(result, row) for row, result in enumerate(batch.results)])
        else:
            batch = ask_guard(member, GUARDS[member.config.judge_format], [conversation(r) for r in rows], log)
            votes.append([r.value.answer(question) if r.status == "ok" else UNCERTAIN for r in batch.results])
        batches.append(batch)
    labels = [panel_label(row_votes) for row_votes in zip(*votes)] if len(members) > 1 else votes[0]
    return PanelAnswers(labels, votes, batches, [member.model for member in members])


def ask_guard(
    member: LLMResource, guard: Guard, conversations: Sequence[tuple[str, str]], log: logging.Logger | None = None
) -> LLMBatch:
    """A guard's reading of each (prompt, response), one result per conversation: `value` the GuardReading,
    `output` the guard's answer (ShieldGemma: its Yes/No log-probabilities per policy, as JSON), `status` ok
    when every request of the conversation succeeded. Generation at temperature 0 with the guard's token budget
    and no stop strings; ShieldGemma through `option_logprobs` over Yes and No, read with the member's
    guard_threshold."""
    requests = [guard.requests(prompt, response) for prompt, response in conversations]
    flat = [request for row in requests for request in row]
    if guard.scored:
        batch = member.option_logprobs(flat, SHIELDGEMMA_OPTIONS, guard.template_version, log=log)
    else:
        params = member.default_params.with_changes(max_new_tokens=guard.max_new_tokens, temperature=0.0, stop=())
        batch = member.generate(flat, guard.template_version, params=params, log=log, refusals=True)
    results, start = [], 0
    for row in requests:
        part = batch.results[start : start + len(row)]
        start += len(row)
        results.append(_guard_result(guard, part, member.config.guard_threshold))
    return LLMBatch(results, batch.backend_calls, batch.cache_hits, batch.seconds, batch.stats)


def _guard_result(guard: Guard, part: list[LLMResult], threshold: float) -> LLMResult:
    failed = next((r for r in part if r.status != "ok"), None)
    answers = [r.value if r.status == "ok" else None for r in part]
    if guard.scored:
        output = json.dumps(dict(zip(SHIELDGEMMA_POLICIES, answers)))
    else:
        output = part[0].output
    return LLMResult(
        key="+".join(r.key for r in part),
        output=output,
        status=failed.status if failed else "ok",
        error=failed.error if failed else None,
        cached=all(r.cached for r in part),
        value=guard.read(answers, threshold),
    )
