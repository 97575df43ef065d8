"""The LLaMA-Factory folder is published only after the contamination gate passed; a blocked set is never
trainable. Runs the real sft_dataset / sft_dataset_folder assets on hand-made upstream tables (no model)."""

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import MAIN_JOB, build_definitions
from madef_assets.defs.selection.contamination import general_eval_questions
from madef_assets.defs.selection.export import (
    DATASET_INFO,
    MANIFEST,
    publish_staged,
    read_manifest,
    stage_llamafactory_dataset,
    staging_dir,
    withdraw_dataset,
)
from madef_assets_tests.run_failures import failure_messages
from madef_assets_tests.sft_tables import EVALUATION, GENERAL, gsm8k_question, sft_settings, write_upstream

PUBLISH = [AssetKey("sft_dataset"), AssetKey("sft_dataset_folder"), AssetKey("finetuned_checkpoint")]


def run(settings, instance, selection=PUBLISH):
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    return job.execute_in_process(instance=instance, asset_selection=selection, raise_on_error=False)


def gate(result):
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_overlap_with_evaluation_prompts")


def started(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


@pytest.mark.parametrize(
    "leak, reference",
    [
        (gsm8k_question(3), "general:gsm8k"),  # a general-capability question
        (EVALUATION["beavertails_eval"][0], "source:beavertails_eval"),  # an evaluation-source prompt
    ],
)
def test_a_blocked_set_is_never_published_and_withdraws_the_earlier_folder(tmp_path, leak, reference):
    settings = sft_settings(tmp_path)
    folder = settings.method.sft_export_dir
    write_upstream(settings)
    with DagsterInstance.ephemeral() as instance:
        clean = run(settings, instance, PUBLISH[:2])
        assert clean.success, failure_messages(clean)
        assert gate(clean).passed and gate(clean).metadata["reference_prompts"].value["general:mmlu"] > 0
        manifest = read_manifest(folder)
        assert manifest and manifest["rows"] == 12 and (folder / DATASET_INFO).exists()
        # the card, the licenses and the Parquet rows are published with the JSON, in the manifest's hashes
        assert {"README.md", "licenses.csv", "data/train-00000-of-00001.parquet"} <= set(manifest["files"])
        assert manifest["license"]["terms"] == "CC-BY-NC-SA-4.0"  # s_eval (NC-SA) and general_sft (NC) rows
        card = (folder / "README.md").read_text(encoding="utf-8")
        assert "| CIA | zh | s_eval | original | 1 |" in card and "fit for training" in card
        shared = pl.read_parquet(folder / "data/train-00000-of-00001.parquet")
        assert shared.height == 12 and shared.filter(pl.col("route") == "general")["perplexity"].null_count() == 6
        assert shared.filter(pl.col("source") == "s_eval")["response_safety"].to_list() == [0.9] * 6
        assert not staging_dir(folder).exists()  # moved into place

        write_upstream(settings, general=[*GENERAL, ("leak", "general_sft", "en", leak, "An answer.")])
        blocked = run(settings, instance)
    assert not blocked.success
    assert not gate(blocked).passed and gate(blocked).metadata["leaks_by_reference"].value == {reference: 1}
    assert "sft_dataset_folder" not in started(blocked) and "finetuned_checkpoint" not in started(blocked)
    # nothing that looks ready: no staged folder, and the earlier set (now outdated) is withdrawn
    assert not staging_dir(folder).exists()
    assert not (folder / DATASET_INFO).exists() and not (folder / MANIFEST).exists() and read_manifest(folder) is None
    assert not folder.exists()  # card, licenses and data/ withdrawn too


def test_publishing_refuses_what_it_should_not_publish(tmp_path):
    folder = tmp_path / "sft"
    rows = [{"instruction": "Say hi", "input": "", "output": "Hi!"}]
    with pytest.raises(FileNotFoundError, match="did not pass its contamination gate"):
        publish_staged(folder, "v1")  # nothing staged
    stage_llamafactory_dataset(rows, folder, ("alpaca",), "v1")
    with pytest.raises(ValueError, match="materialize sft_dataset again"):
        publish_staged(folder, "v2")  # staged content is not the current table
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="files madef did not write"):
        publish_staged(folder, "v1")
    (folder / "notes.txt").unlink()
    manifest = publish_staged(folder, "v1")
    assert read_manifest(folder) == manifest and publish_staged(folder, "v1") == manifest  # a re-run is a no-op
    (folder / "madef_sft.json").write_text("[]")  # changed by hand: no longer the published set
    assert read_manifest(folder) is None
    (folder / "notes.txt").write_text("mine")
    assert withdraw_dataset(folder)[0] == DATASET_INFO  # first, so the folder stops being loadable at once
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # files madef did not write are left alone


def test_general_capability_questions_join_the_reference(tmp_path):
    settings = sft_settings(tmp_path)
    questions = general_eval_questions(settings.evaluation.general)
    assert set(questions) == {"gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"} and all(questions.values())
    assert gsm8k_question(3) in questions["gsm8k"]
    assert any(q.startswith("from typing import") or "def " in q for q in questions["humaneval"])
    missing = settings.evaluation.general.model_copy(update={"data_dir": tmp_path / "nowhere"})
    with pytest.raises(FileNotFoundError):
        general_eval_questions(missing)  # a configured benchmark that is missing fails the gate, never passes it
