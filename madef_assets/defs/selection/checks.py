"""The contamination gate on the SFT set (blocking)."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from madef_assets.defs.selection.contamination import contaminated
from madef_assets.settings import MethodConfig

SFT_DATASET = AssetKey("sft_dataset")
CONTAMINATION_CHECK = "no_overlap_with_evaluation_prompts"


def contamination_spec() -> AssetCheckSpec:
    return AssetCheckSpec(CONTAMINATION_CHECK, asset=SFT_DATASET, blocking=True,
                          description="No SFT prompt shares a long n-gram (method.contamination_zh_chars characters / "
                          "contamination_en_words words) with any evaluation prompt.")


def contamination_result(sft: pl.DataFrame, evaluation_prompts: pl.Series, method: MethodConfig) -> AssetCheckResult:
    texts = [f"{i}\n{q}" if q else i for i, q in zip(sft["instruction"], sft["input"])]
    leaks = contaminated(zip(sft["prompt_id"], texts), evaluation_prompts.to_list(), method.contamination_zh_chars, method.contamination_en_words)
    return AssetCheckResult(
        asset_key=SFT_DATASET, check_name=CONTAMINATION_CHECK, passed=not leaks, severity=AssetCheckSeverity.ERROR,
        metadata={"leaked_prompts": len(leaks), "evaluation_prompts": evaluation_prompts.len(),
                  "examples": [f"{key}: …{gram}…" for key, gram in leaks[:5]]},
    )
