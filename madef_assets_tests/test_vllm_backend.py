"""The vllm backend for real: runs only where vllm is installed and a CUDA device is present."""

import math

import pytest

vllm = pytest.importorskip("vllm", reason="vllm is an optional extra for GPU machines (pip install 'madef[vllm]')")
torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="the vllm backend needs a CUDA device"),
]


@pytest.fixture(scope="module")
def engine(models_dir):
    from madef_assets.llm.resource import build_backend

    return build_backend("vllm", "bundled:gemma3-270m", {"gpu_memory_utilization": 0.3, "max_model_len": 1024}, models_dir)


def test_generate(engine):
    from madef_assets.llm.types import GenerationParams

    results = dict(engine.generate(["The capital of France is", "1, 2, 3, 4,"], GenerationParams(max_new_tokens=8)))
    assert sorted(results) == [0, 1]
    assert all(r.status == "ok" and r.output.strip() and 1 <= r.completion_tokens <= 8 for r in results.values())


def test_option_logprobs(engine):
    scores = dict(engine.option_logprobs(["The capital of France is"], [" Paris", " banana"]))[0].output
    assert all(math.isfinite(v) and v < 0 for v in scores.values())
    assert scores[" Paris"] > scores[" banana"]


def test_perplexity_fluent_lower_than_shuffled(engine):
    fluent = "The quick brown fox jumps over the lazy dog because it wants to reach the river before sunset."
    shuffled = "river fox the sunset lazy before because jumps reach dog it brown the over wants quick the to."
    results = dict(engine.perplexity([fluent, shuffled]))
    assert 1 < results[0].output < results[1].output
