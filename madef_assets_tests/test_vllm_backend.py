"""The vllm backend for real: runs only where vllm is installed and a CUDA device is present (the lent GPU
machine, through bench/gpu_check.sh). Imports nothing of Dagster, so it runs on a bare machine.
Reference numbers come from the transformers backend on the same GPU, same weights, same dtype."""

import math
import os

import pytest

vllm = pytest.importorskip("vllm", reason="vllm is an optional extra for GPU machines (pip install 'madef[vllm]')")
torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="the vllm backend needs a CUDA device"),
]

BUNDLED = "bundled:gemma3-270m"
# bf16 on both sides; eager (no CUDA graphs) keeps the engine's start short in a test.
OPTIONS = {"gpu_memory_utilization": 0.3, "max_model_len": 1024, "dtype": "bfloat16", "enforce_eager": True}
if os.environ.get("MADEF_VLLM_ATTENTION_BACKEND"):
    OPTIONS["attention_backend"] = os.environ["MADEF_VLLM_ATTENTION_BACKEND"]
PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "中国的首都是", "Water boils at a temperature of"]


@pytest.fixture(scope="module")
def engine(models_dir):
    from madef_assets.llm.backends import build_backend

    backend = build_backend("vllm", BUNDLED, {**OPTIONS, "chunk_size": 3}, models_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(models_dir):
    from madef_assets.llm.backends import build_backend

    backend = build_backend(
        "transformers", BUNDLED, {"batch_size": 8, "device": "cuda", "dtype": "bfloat16"}, models_dir
    )
    yield backend
    backend.close()


def test_generate_streams_per_chunk_and_is_deterministic(engine, monkeypatch):
    from madef_assets.llm.types import GenerationParams

    calls = []
    real_generate = engine.engine.generate
    monkeypatch.setattr(
        engine.engine,
        "generate",
        lambda prompts, *a, **k: calls.append(len(prompts)) or real_generate(prompts, *a, **k),
    )
    params = GenerationParams(max_new_tokens=8)
    stream = engine.generate(PROMPTS, params)
    first_chunk = [
        next(stream) for _ in range(3)
    ]  # chunk_size 3: the first chunk arrives before the engine sees the rest
    assert calls == [3]
    results = dict(first_chunk + list(stream))
    assert calls == [3, 1] and sorted(i for i, _ in first_chunk) == [0, 1, 2] and sorted(results) == [0, 1, 2, 3]
    assert all(r.status == "ok" and r.output.strip() and 1 <= r.completion_tokens <= 8 for r in results.values())
    again = dict(engine.generate(PROMPTS, params))
    assert [again[i].output for i in range(4)] == [results[i].output for i in range(4)]


def test_prompts_reach_vllm_as_the_ids_madef_rendered(engine):
    from madef_assets.llm.types import GenerationParams

    results = dict(engine.generate(PROMPTS, GenerationParams(max_new_tokens=2)))
    for i, prompt in enumerate(PROMPTS):
        ids = engine.prompt_ids(prompt)
        assert ids.count(engine.tokenizer.bos_token_id) == 1
        assert results[i].prompt_tokens == len(ids)  # counted by vLLM from what it received


def test_option_logprobs_agree_with_transformers(engine, reference):
    prompts = ["The capital of France is", "Question: What is 2 + 2?\nOptions:\n(A) 3\n(B) 4\nAnswer: ("]
    options = [" Paris", " banana", "A", "B"]
    ours, theirs = dict(engine.option_logprobs(prompts, options)), dict(reference.option_logprobs(prompts, options))
    for i in range(len(prompts)):
        for option in options:
            assert math.isfinite(ours[i].output[option])
            assert ours[i].output[option] == pytest.approx(theirs[i].output[option], abs=0.15), (i, option)
    assert ours[0].output[" Paris"] > ours[0].output[" banana"]


def test_perplexity_agrees_with_transformers(engine, reference):
    texts = [
        "The quick brown fox jumps over the lazy dog because it wants to reach the river before sunset.",
        "river fox the sunset lazy before because jumps reach dog it brown the over wants quick the to.",
        "如何在家里安全地处理过期药品？请给出步骤。",
    ]
    ours, theirs = dict(engine.perplexity(texts)), dict(reference.perplexity(texts))
    for i in range(len(texts)):
        assert math.log(ours[i].output) == pytest.approx(math.log(theirs[i].output), abs=0.05), i
    assert 1 < ours[0].output < ours[1].output


def test_chat_and_raw_uses_of_one_model_share_one_engine(engine, models_dir):
    from madef_assets.llm.backends import build_backend
    from madef_assets.llm.engines import ENGINES

    loads = ENGINES.loads["vllm"]
    raw = build_backend("vllm", BUNDLED, {**OPTIONS, "chat_template": "never", "chunk_size": 64}, models_dir)
    assert raw.engine is engine.engine and ENGINES.loads["vllm"] == loads


def test_close_gives_the_gpu_memory_back(models_dir):
    from madef_assets.llm.backends import build_backend
    from madef_assets.llm.engines import ENGINES, gpu_memory
    from madef_assets.llm.types import GenerationParams

    ENGINES.release(gpu_only=True)
    free_before, _ = gpu_memory()
    backend = build_backend("vllm", BUNDLED, OPTIONS, models_dir)
    assert dict(backend.generate(PROMPTS[:1], GenerationParams(max_new_tokens=4)))[0].status == "ok"
    free_loaded, _ = gpu_memory()
    backend.close()
    free_after, _ = gpu_memory()
    assert free_before - free_loaded > 1 << 30  # the engine took its share (30 % of the card)
    assert free_before - free_after < 1 << 30, f"{(free_before - free_after) / 2**30:.2f} GiB still held after close"
    assert not ENGINES.is_loaded(backend.engine_key)


def test_structured_outputs_keep_every_answer_in_its_shape(engine):
    """vLLM's structured-output sampling parameters: a JSON schema, a closed choice and a regex (issue 28)."""
    from madef_assets.defs.intent.labels import LABELS_OUTPUT
    from madef_assets.llm.structured import OutputSpec, choice_spec
    from madef_assets.llm.types import GenerationParams

    params = GenerationParams(max_new_tokens=64)
    for spec in (
        LABELS_OUTPUT,
        choice_spec("verdict", ("safe", "unsafe")),
        OutputSpec("score", "regex", pattern=r"10|[1-9]"),
    ):
        answers = dict(engine.generate(PROMPTS, params, spec))
        assert all(answers[i].status == "ok" and spec.check(answers[i].output) for i in range(len(PROMPTS)))
