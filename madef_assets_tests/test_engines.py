"""Loaded models: one engine per weights, none for a cached re-run, closed when the GPU policy says so,
prompts tokenized once with exactly one BOS, results streamed so a killed run resumes (CPU, bundled model)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from dagster import asset, materialize

from madef_assets.defs.engine_release import with_engine_release
from madef_assets.llm import backends
from madef_assets.llm.engines import ENGINES, EngineRegistry, free_gpu_problem
from madef_assets.llm.local_model import folder_has_chat_template
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import model_from_parts

BUNDLED = "bundled:gemma3-270m"
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
)


def test_registry_loads_once_per_key_and_refuses_other_options_for_the_same_weights():
    registry, closed = EngineRegistry(), []
    first = registry.get(("vllm", "/m"), {"gpu_memory_utilization": 0.5}, object, closed.append, on_gpu=True)
    assert registry.get(("vllm", "/m"), {"gpu_memory_utilization": 0.5}, object, closed.append, on_gpu=True) is first
    with pytest.raises(ValueError, match="already loaded with options"):
        registry.get(("vllm", "/m"), {"gpu_memory_utilization": 0.9}, object, closed.append, on_gpu=True)
    registry.get(("transformers", "/m", "cpu"), {}, object, closed.append, on_gpu=False)
    assert registry.release(gpu_only=True) == 1 and closed == [first]
    assert registry.loaded_keys() == [("transformers", "/m", "cpu")]
    assert registry.release() == 1 and registry.loads == {"vllm": 1, "transformers": 1} and not registry.loaded_keys()


def test_training_needs_a_free_gpu():
    gib = 1 << 30
    assert free_gpu_problem(None, 0.9) is None  # no CUDA: training runs on the CPU
    assert free_gpu_problem((130 * gib, 140 * gib), 0.9) is None
    problem = free_gpu_problem((20 * gib, 140 * gib), 0.9)
    assert "20.0 GiB free of 140.0 GiB" in problem and "training_min_free_fraction" in problem


@pytest.fixture
def chat_model_folder(models_dir, tmp_path):
    """The bundled model's config and tokenizer (no weights) with a Gemma-style chat template added."""
    from madef_assets.llm.model_files import resolve_model_path

    source = resolve_model_path(BUNDLED, models_dir)
    folder = tmp_path / "chat-model"
    folder.mkdir()
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(".safetensors"):
            shutil.copy(file, folder / file.name)
    (folder / "chat_template.jinja").write_text(GEMMA_CHAT_TEMPLATE, encoding="utf-8")
    return folder


def test_chat_template_found_from_the_files_as_the_tokenizer_finds_it(models_dir, chat_model_folder, tmp_path):
    from transformers import AutoTokenizer

    from madef_assets.llm.model_files import resolve_model_path

    in_config = tmp_path / "in-config"
    shutil.copytree(chat_model_folder, in_config)
    (in_config / "chat_template.jinja").unlink()
    config = json.loads((in_config / "tokenizer_config.json").read_text(encoding="utf-8"))
    (in_config / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": GEMMA_CHAT_TEMPLATE}), encoding="utf-8"
    )
    processor_file = tmp_path / "processor-file"  # chat_template.json belongs to processors: the tokenizer ignores it
    shutil.copytree(in_config, processor_file)
    (processor_file / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (processor_file / "chat_template.json").write_text(
        json.dumps({"chat_template": GEMMA_CHAT_TEMPLATE}), encoding="utf-8"
    )
    for folder in (resolve_model_path(BUNDLED, models_dir), chat_model_folder, in_config, processor_file):
        assert folder_has_chat_template(folder) == bool(AutoTokenizer.from_pretrained(str(folder)).chat_template), (
            folder
        )


def test_files_and_tokenizer_disagreeing_on_the_template_is_an_error(chat_model_folder):
    """The ledger key says whether prompts were wrapped; a tokenizer that would wrap them when the files say
    it does not (a named template only) must not run under that key."""
    from madef_assets.llm.transformers_backend import TransformersBackend

    (chat_model_folder / "chat_template.jinja").unlink()
    (chat_model_folder / "additional_chat_templates").mkdir()
    (chat_model_folder / "additional_chat_templates" / "tool_use.jinja").write_text(
        GEMMA_CHAT_TEMPLATE, encoding="utf-8"
    )
    with pytest.raises(ValueError, match="disagree on whether there is a chat template"):
        TransformersBackend(chat_model_folder, "chat-model")


def test_the_ledger_identity_is_what_the_backend_reports(chat_model_folder, models_dir, openai_server):
    """backend_identity keys the ledger before any backend exists; it must equal the built backend's own."""
    from madef_assets.llm.backends import backend_identity, build_backend

    cases = [
        ("transformers", str(chat_model_folder), {}),
        ("transformers", str(chat_model_folder), {"chat_template": "never"}),
        (
            "vllm",
            str(chat_model_folder),
            {"gpu_memory_utilization": 0.3},
        ),  # the vLLM engine loads lazily: no GPU needed here
        (
            "openai",
            "served",
            {"base_url": openai_server.base_url, "api": "completions", "model_revision": "abc", "api_key_env": None},
        ),
        ("openai", "served", {"base_url": [openai_server.base_url, openai_server.base_url], "api_key_env": None}),
    ]
    for backend, model, options in cases:
        assert (
            backend_identity(backend, model, options, models_dir)
            == build_backend(backend, model, options, models_dir).fingerprint()
        )
    assert backend_identity("vllm", str(chat_model_folder), {}, models_dir)["prompts"] == "token_ids"


def test_chat_prompts_are_token_ids_with_exactly_one_bos(chat_model_folder):
    from madef_assets.llm.transformers_backend import TransformersBackend

    chat = TransformersBackend(chat_model_folder, "chat-model")
    raw = TransformersBackend(chat_model_folder, "chat-model", chat_template="never")
    bos = chat.tokenizer.bos_token_id
    for backend in (chat, raw):
        ids = backend.prompt_ids("如何安全地处理过期药品？")
        assert ids[0] == bos and ids.count(bos) == 1
    assert chat.use_chat_template and chat.tokenizer.decode(chat.prompt_ids("hi")).endswith("<start_of_turn>model")
    # Plain tokenization of the rendered text would add a second BOS before the template's own.
    assert chat.tokenizer.encode(chat.render("hi")).count(bos) == 2
    assert not ENGINES.is_loaded(chat.engine_key)  # rendering never loads weights


def scorer(models_dir, tmp_path, **options) -> LLMResource:
    return LLMResource(
        role="scorer",
        config=model_from_parts("transformers", BUNDLED, {"batch_size": 4, **options}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(models_dir),
    )


@pytest.mark.slow
def test_a_cached_rerun_builds_no_backend_and_loads_no_model(models_dir, tmp_path):
    ENGINES.release()
    texts = ["A short fluent sentence.", "sentence fluent short A."]
    built, loads = backends.constructed["transformers"], ENGINES.loads["transformers"]
    first = scorer(models_dir, tmp_path).perplexity(texts)
    assert first.backend_calls == 2
    assert backends.constructed["transformers"] == built + 1 and ENGINES.loads["transformers"] == loads + 1
    ENGINES.release()
    rerun = scorer(models_dir, tmp_path).perplexity(texts)  # a new run: a new resource over the same ledger
    assert rerun.backend_calls == 0 and rerun.cache_hits == 2
    assert backends.constructed["transformers"] == built + 1 and ENGINES.loads["transformers"] == loads + 1
    assert [r.value for r in rerun.results] == [r.value for r in first.results]


def two_assets_over_one_model(models_dir, tmp_path) -> list:
    @asset
    def judged(scorer: LLMResource, judge: LLMResource) -> None:
        scorer.perplexity(["one sentence to score."])
        judge.option_logprobs(["Is water wet? Answer: ("], ["A", "B"], template_version="t")
        assert scorer.get_backend().weights is judge.get_backend().weights  # two roles, one copy of the weights

    @asset(deps=[judged])
    def scored_again(scorer: LLMResource) -> None:
        scorer.perplexity(["another sentence to score."])

    return [judged, scored_again]


@pytest.mark.slow
@pytest.mark.parametrize("policy, loads, left_loaded", [("per_asset", 2, 0), ("per_run", 1, 1)])
def test_release_policy_closes_engines_at_the_end_of_each_asset(models_dir, tmp_path, policy, loads, left_loaded):
    ENGINES.release()
    before = ENGINES.loads["transformers"], ENGINES.releases["transformers"]
    resources = {
        "scorer": scorer(models_dir, tmp_path),
        "judge": scorer(models_dir, tmp_path, batch_size=16, chat_template="never"),
    }
    result = materialize(
        with_engine_release(two_assets_over_one_model(models_dir, tmp_path), policy), resources=resources
    )
    assert result.success
    assert ENGINES.loads["transformers"] - before[0] == loads
    assert ENGINES.releases["transformers"] - before[1] == loads - left_loaded
    assert len(ENGINES.loaded_keys()) == left_loaded
    ENGINES.release()


def ledger_rows(path) -> int:
    """Rows in the ledger, read between the writer's flushes (it holds the file only while writing)."""
    for _ in range(100):
        try:
            with duckdb.connect(str(path), read_only=True) as connection:
                return connection.execute("select count(*) from llm_ledger").fetchone()[0]
        except (duckdb.IOException, duckdb.CatalogException):
            time.sleep(0.05)
    raise TimeoutError(f"could not read {path}")


@pytest.mark.slow
def test_a_killed_option_logprobs_run_resumes_with_only_the_missing_rows(models_dir, tmp_path, monkeypatch):
    total = 160
    env = {
        **os.environ,
        "MADEF_DUCKDB_PATH": str(tmp_path / "ledger.duckdb"),
        "MADEF_MODELS_DIR": str(models_dir),
        "MADEF_TEST_PROMPTS": str(total),
        "DAGSTER_HOME": str(tmp_path),
    }
    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        "asset",
        "materialize",
        "-m",
        "madef_assets_tests.streaming_defs",
        "--select",
        "option_scores",
    ]
    log = tmp_path / "killed.log"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 300
    kept = 0
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if (tmp_path / "ledger.duckdb").exists():
            kept = ledger_rows(tmp_path / "ledger.duckdb")
            if kept >= 64:
                break
    assert process.poll() is None, log.read_text()[-3000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = ledger_rows(tmp_path / "ledger.duckdb")
    assert 64 <= kept < total  # the first batches were in the ledger long before the run would have ended

    for key in ("MADEF_DUCKDB_PATH", "MADEF_MODELS_DIR", "MADEF_TEST_PROMPTS"):
        monkeypatch.setenv(key, env[key])
    import importlib

    import madef_assets_tests.streaming_defs as streaming_defs

    resumed = materialize(
        [importlib.reload(streaming_defs).option_scores], resources=streaming_defs.resources_from_env()
    )
    metadata = resumed.asset_materializations_for_node("option_scores")[0].metadata
    assert metadata["llm_backend_calls"].value == total - kept
    assert metadata["llm_ledger_hits"].value == kept
    assert ledger_rows(tmp_path / "ledger.duckdb") == total


def test_a_checkpoint_fingerprint_follows_the_model_not_the_training_records(tmp_path):
    """A second run that retrains to the same weights must not invalidate the tuned candidate's answers
    (the rehearsal's second run re-sent all of them while trainer_state.json carried new timings)."""
    from madef_assets.llm.model_files import folder_fingerprint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "trainer_state.json").write_text('{"train_runtime": 1.0}')
    before = folder_fingerprint(tmp_path)
    (tmp_path / "trainer_state.json").write_text('{"train_runtime": 2.5}')
    (tmp_path / "all_results.json").write_text("{}")
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert folder_fingerprint(tmp_path) != before
