"""What each source derives from, so that no profile trains on data its benchmarks are built from.

A source's lineage is the set of datasets it is made of: its reader's (below), the names it lists under
`derived_from` in the profile, and the lineage of any configured source it names there. A training source and
an evaluation source are related when their lineages meet or when they read the same file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

# The datasets each bundled reader reads, with what they were built from (per their papers / cards).
READER_LINEAGE: dict[str, tuple[str, ...]] = {
    "safety_prompts": ("Safety-Prompts",),
    "xsafety": ("XSafety", "Safety-Prompts"),  # XSafety translates Safety-Prompts' scenarios into 10 languages
    "s_eval": ("S-Eval",),  # its attack prompts are rewrites of its base prompts, its English set translations
    "safetybench": ("SafetyBench",),
    "cvalues_comparison": ("CValues-Comparison",),
    "cvalues_responsibility": ("CValues responsibility prompts",),
    "cvalues_responsibility_mc": ("CValues responsibility prompts",),
    "beavertails_eval": ("BeaverTails", "Anthropic HH red-team prompts"),
    "pku_saferlhf": ("PKU-SafeRLHF", "Anthropic HH red-team prompts"),  # BeaverTails' prompts, re-answered
    "xstest": ("XSTest",),
    "alpaca": (),
}


@dataclass(frozen=True)
class SourceLineage:
    """One configured source as the lineage check needs it."""

    reader: str
    derived_from: tuple[str, ...]
    files: tuple[Path, ...]
    split: str | None = None  # the published split it holds (train, test) of its reader's dataset


def _whole(dataset: str) -> str:
    return dataset.split(" [", 1)[0]


def shared_datasets(first: set[str], second: set[str]) -> list[str]:
    """The datasets two lineages share: a name in both, or one split of a dataset (`CValues-Comparison [test]`)
    beside the whole dataset; two different splits of one dataset are not shared (they are published apart)."""
    shared = first & second
    for a in first:
        for b in second:
            if a != b and _whole(a) == _whole(b) and _whole(b) in (a, b):
                shared.add(_whole(a))
    return sorted(shared)


def lineage(name: str, sources: Mapping[str, SourceLineage], seen: frozenset[str] = frozenset()) -> set[str]:
    """The datasets source `name` is made of: its reader's, its derived_from names, and, for a name that is
    itself a configured source, that source's lineage. A source holding one split names its reader's dataset with
    the split (`CValues-Comparison [train]`)."""
    source = sources[name]
    own = READER_LINEAGE.get(source.reader, ())
    if source.split and own:
        own = (f"{own[0]} [{source.split}]", *own[1:])
    found = {name, *own, *source.derived_from}
    for parent in source.derived_from:
        if parent in sources and parent not in seen:
            found |= lineage(parent, sources, seen | {name})
    return found


def files_of(names: set[str], sources: Mapping[str, SourceLineage]) -> set[Path]:
    """The files read by the configured sources among `names` (a source and the sources it derives from)."""
    return {file for name in names if name in sources for file in sources[name].files}


def related_pairs(
    trained: Mapping[str, Iterable[str]], evaluated: Mapping[str, Iterable[str]], sources: Mapping[str, SourceLineage]
) -> list[str]:
    """Every (profile key, training source) related to a (profile key, evaluation source), as one message each
    naming both and what they share."""
    problems = []
    for train_key, train_names in trained.items():
        for train in train_names:
            for eval_key, eval_names in evaluated.items():
                for evaluated_name in eval_names:
                    train_lineage, eval_lineage = lineage(train, sources), lineage(evaluated_name, sources)
                    shared = shared_datasets(train_lineage, eval_lineage)
                    files = sorted(files_of(train_lineage, sources) & files_of(eval_lineage, sources))
                    if shared or files:
                        why = f"both derive from {', '.join(shared)}" if shared else f"both read {files[0]}"
                        problems.append(
                            f"{train_key} trains on `{train}` and {eval_key} evaluates on `{evaluated_name}`: {why}"
                        )
    return problems


# The meta fields in which a reader's records name one item across its translations (and rewrites, where a data set
# records them), with the dataset
# the ids belong to: S-Eval's English prompts carry their Chinese original's id as `from_traceid`.
SHARED_ID_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {"s_eval": ("S-Eval", ("traceid", "from_traceid"))}


def shared_ids(prompts: pl.DataFrame, readers: Mapping[str, str]) -> pl.DataFrame:
    """(prompt_id, shared_id) for every id a prompt's record shares with its translations and rewrites,
    `<dataset>:<id>` from the meta fields its source's reader names (SHARED_ID_FIELDS); none for other readers."""
    rows = []
    for source, group in prompts.group_by("source") if prompts.height else ():
        dataset, fields = SHARED_ID_FIELDS.get(readers.get(source[0], ""), ("", ()))
        for prompt_id, meta in group.select("prompt_id", "meta").iter_rows():
            values = json.loads(meta or "{}")
            rows += [(prompt_id, f"{dataset}:{values[f]}") for f in fields if values.get(f)]
    return pl.DataFrame(rows, schema={"prompt_id": pl.Utf8, "shared_id": pl.Utf8}, orient="row").unique()
