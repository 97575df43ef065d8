"""The contamination gate on the SFT set (blocking)."""

from collections.abc import Mapping, Sequence

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
        "or any question of the general-capability benchmarks (gsm8k, MMLU, CMMLU, C-Eval, HumanEval). "
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


def leaked_rows(
    sft: pl.DataFrame, references: Mapping[str, Sequence[str]], method: MethodConfig
) -> list[tuple[str, str, str]]:
    """(prompt_id, reference name, shared n-gram) of every SFT row that overlaps the reference."""
    texts = [f"{i}\n{q}" if q else i for i, q in zip(sft["instruction"], sft["input"])]
    return contaminated_by_reference(
        zip(sft["prompt_id"], texts), references, method.contamination_zh_chars, method.contamination_en_words
    )


def decontaminate(
    sft: pl.DataFrame, references: Mapping[str, Sequence[str]], method: MethodConfig
) -> tuple[pl.DataFrame, dict]:
    """The SFT rows without those that overlap the reference (decontamination, as evaluation suites do for
    n-gram overlap), and what was removed: count, per reference, examples. Rows in = kept + removed."""
    leaks = leaked_rows(sft, references, method)
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
    sft: pl.DataFrame, references: Mapping[str, Sequence[str]], method: MethodConfig
) -> AssetCheckResult:
    leaks = leaked_rows(sft, references, method)
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
            "examples": [f"{key} ({name}): …{gram}…" for key, name, gram in leaks[:5]],
        },
    )
