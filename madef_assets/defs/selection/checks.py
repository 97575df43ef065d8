"""The contamination gate on the SFT set (blocking)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from madef_assets.defs.selection.contamination import contaminated_by_reference
from madef_assets.settings import MethodConfig

SFT_DATASET = AssetKey("sft_dataset")
CONTAMINATION_CHECK = "no_overlap_with_evaluation_prompts"


def contamination_spec() -> AssetCheckSpec:
    return AssetCheckSpec(
        CONTAMINATION_CHECK,
        asset=SFT_DATASET,
        blocking=True,
        description="No SFT prompt shares a long n-gram (method.contamination_zh_chars characters / "
        "contamination_en_words words), or its whole text, with any prompt of the evaluation sources "
        "or any question of the general-capability benchmarks (gsm8k, MMLU, CMMLU, C-Eval, HumanEval), and no "
        "SFT prompt's source record (or the record it was generated from) shares an id with an evaluation "
        "prompt's, as S-Eval's translations do (madef_assets/lineage.py, SHARED_ID_FIELDS). "
        "Only a set that passes is published as the LLaMA-Factory folder.",
    )


def contamination_references(
    evaluation_sources: pl.DataFrame, general_questions: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """The contamination reference by name: `source:<name>` for each evaluation source's prompts,
    `general:<benchmark>` for each general-capability benchmark's questions."""
    references = {
        f"source:{name}": group["prompt"].to_list() for (name,), group in evaluation_sources.group_by("source")
    }
    references.update({f"general:{name}": list(texts) for name, texts in general_questions.items()})
    return references


@dataclass(frozen=True)
class SharedIdLeaks:
    """SFT rows whose source record shares an id with an evaluation prompt's (a translation or a rewrite of it,
    which no n-gram finds), and how many ids were compared on each side."""

    leaks: tuple[tuple[str, str, str], ...] = ()  # (prompt_id, reference name, shared id)
    compared: dict[str, int] = field(default_factory=dict)


def shared_id_leaks(
    sft: pl.DataFrame, parents: pl.DataFrame, train_ids: pl.DataFrame, reference_ids: Mapping[str, pl.DataFrame]
) -> SharedIdLeaks:
    """An SFT row's ids are those of its source record, or of the record it was generated from (`parents`:
    prompt_id, parent_prompt_id, as attack_prompts has them); one leak per row, the first reference by name."""
    roots = sft.select("prompt_id").join(parents.select("prompt_id", "parent_prompt_id"), on="prompt_id", how="left")
    roots = roots.with_columns(root=pl.coalesce("parent_prompt_id", "prompt_id")).select("prompt_id", "root")
    sft_ids = roots.join(train_ids.rename({"prompt_id": "root"}), on="root").select("prompt_id", "shared_id")
    found: dict[str, tuple[str, str, str]] = {}
    for name, ids in sorted(reference_ids.items()):
        for prompt_id, shared in sft_ids.join(ids.select("shared_id"), on="shared_id").sort("prompt_id").iter_rows():
            found.setdefault(prompt_id, (prompt_id, name, shared))
    compared = {
        "sft_rows_with_ids": sft_ids["prompt_id"].n_unique(),
        "evaluation_ids": sum(ids.height for ids in reference_ids.values()),
    }
    return SharedIdLeaks(tuple(found[k] for k in sorted(found)), compared)


def leaked_rows(
    sft: pl.DataFrame,
    references: Mapping[str, Sequence[str]],
    method: MethodConfig,
    id_leaks: SharedIdLeaks = SharedIdLeaks(),
) -> list[tuple[str, str, str]]:
    """(prompt_id, reference name, what is shared) of every SFT row that overlaps the reference: a long n-gram,
    else an id its record shares with an evaluation prompt (`id <dataset>:<id>`)."""
    texts = [f"{i}\n{q}" if q else i for i, q in zip(sft["instruction"], sft["input"])]
    leaks = contaminated_by_reference(
        zip(sft["prompt_id"], texts), references, method.contamination_zh_chars, method.contamination_en_words
    )
    present, found = set(sft["prompt_id"].to_list()), {key for key, _, _ in leaks}
    return leaks + [(k, name, f"id {i}") for k, name, i in id_leaks.leaks if k in present and k not in found]


def compared(references: Mapping[str, Sequence[str]], method: MethodConfig, id_leaks: SharedIdLeaks) -> dict:
    """What the contamination check compared the SFT rows with, and how."""
    return {
        "ngrams": f"{method.contamination_zh_chars} Chinese characters / {method.contamination_en_words} words, "
        f"or the whole text, against {sum(len(texts) for texts in references.values())} prompts and questions",
        "shared_ids": id_leaks.compared or "no source record names ids shared across translations or rewrites",
    }


def decontaminate(
    sft: pl.DataFrame,
    references: Mapping[str, Sequence[str]],
    method: MethodConfig,
    id_leaks: SharedIdLeaks = SharedIdLeaks(),
) -> tuple[pl.DataFrame, dict]:
    """The SFT rows without those that overlap the reference (decontamination, as evaluation suites do for
    n-gram overlap, and by shared ids), and what was removed: count, per reference, examples. Rows in = kept +
    removed."""
    leaks = leaked_rows(sft, references, method, id_leaks)
    by_reference: dict[str, int] = {}
    for _, name, _ in leaks:
        by_reference[name] = by_reference.get(name, 0) + 1
    kept = sft.filter(~pl.col("prompt_id").is_in([key for key, _, _ in leaks]))
    removed = {
        "rows_in": sft.height,
        "rows_removed": sft.height - kept.height,
        "removed_by_reference": by_reference,
        "removed_examples": [f"{key} ({name}): …{gram}…" for key, name, gram in leaks[:10]],
    }
    return kept, removed


def contamination_result(
    sft: pl.DataFrame,
    references: Mapping[str, Sequence[str]],
    method: MethodConfig,
    id_leaks: SharedIdLeaks = SharedIdLeaks(),
) -> AssetCheckResult:
    leaks = leaked_rows(sft, references, method, id_leaks)
    by_reference: dict[str, int] = {}
    for _, name, _ in leaks:
        by_reference[name] = by_reference.get(name, 0) + 1
    return AssetCheckResult(
        asset_key=SFT_DATASET,
        check_name=CONTAMINATION_CHECK,
        passed=not leaks,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "leaked_prompts": len(leaks),
            "evaluation_prompts": sum(len(texts) for texts in references.values()),
            "reference_prompts": MetadataValue.json({name: len(texts) for name, texts in sorted(references.items())}),
            "leaks_by_reference": MetadataValue.json(by_reference),
            "leaks_by_shared_id": sum(1 for *_, what in leaks if what.startswith("id ")),
            "compared": MetadataValue.json(compared(references, method, id_leaks)),
            "examples": [f"{key} ({name}): …{gram}…" for key, name, gram in leaks[:5]],
        },
    )
