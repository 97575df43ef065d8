"""A judge panel (`models.judge` a list of models): every member answers the same requests with the same
prompt and parser, each through the ledger under its own identity; the panel's label is the one more
members gave than any other, and a tie is `uncertain` (which sends the row to review)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMBatch, LLMResource, LLMResult, batches_metadata


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


def ask_panel(
    judge: LLMResource,
    requests: Sequence[str],
    template_version: str,
    read: Callable[[LLMResult, int], str],
    log: logging.Logger | None = None,
    **generate: Any,
) -> PanelAnswers:
    """Every member of the judge's panel answers `requests`; `read(result, row)` turns a member's answer
    to row `row` into a label (uncertain when it has none)."""
    members = judge.panel()
    batches = [
        member.generate(list(requests), template_version, log=log, refusals=True, **generate) for member in members
    ]
    votes = [[read(result, row) for row, result in enumerate(batch.results)] for batch in batches]
    labels = [panel_label(row_votes) for row_votes in zip(*votes)] if len(members) > 1 else votes[0]
    return PanelAnswers(labels, votes, batches, [member.model for member in members])
