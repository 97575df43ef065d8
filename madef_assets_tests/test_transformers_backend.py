"""The transformers backend for real, on the bundled Gemma 3 270M (converted once from GGUF)."""

import math

import pytest

from madef_assets.llm.transformers_backend import length_sorted_batches, truncate_at_stop
from madef_assets.llm.types import GenerationParams


def test_length_sorted_batches():
    batches = length_sorted_batches([3, 10, 1, 7, 7], 2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_truncate_at_stop():
    assert truncate_at_stop("answer\nQuestion: next", ["\nQuestion:"]) == "answer"
    assert truncate_at_stop("no stop here", ["###"]) == "no stop here"


@pytest.fixture(scope="module")
def gemma(models_dir):
    from madef_assets.llm.resource import build_backend

    return build_backend("transformers", "bundled:gemma3-270m", {"batch_size": 4}, models_dir)


@pytest.mark.slow
def test_bundled_model_is_a_plain_hf_folder(gemma):
    assert (gemma.model_path / "config.json").exists()
    assert (gemma.model_path / "model.safetensors").exists()
    assert gemma.use_chat_template is False  # base model: plain completion prompts
    assert len(gemma.fingerprint()["hash"]) == 24


@pytest.mark.slow
def test_generate_batched_and_deterministic(gemma):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "中国的首都是", "Water boils at a temperature of"]
    params = GenerationParams(max_new_tokens=8)
    first = dict(gemma.generate(prompts, params))
    second = dict(gemma.generate(prompts, params))
    assert sorted(first) == [0, 1, 2, 3]
    for index in range(4):
        assert first[index].status == "ok"
        assert first[index].output.strip(), index
        assert 1 <= first[index].completion_tokens <= 8
        assert first[index].output == second[index].output
    # Left padding and the attention mask are right: a prompt answers the same alone as in a batch.
    alone = dict(gemma.generate([prompts[2]], params))
    assert alone[0].output == first[2].output


@pytest.mark.slow
def test_option_logprobs_prefer_the_right_answer(gemma):
    prompts = ["The capital of France is", "Question: What is 2 + 2?\nOptions:\n(A) 3\n(B) 4\nAnswer: ("]
    scores = dict(gemma.option_logprobs(prompts, [" Paris", " banana", "A", "B"]))
    capital, arithmetic = scores[0].output, scores[1].output
    assert all(v < 0 and math.isfinite(v) for v in capital.values())
    assert capital[" Paris"] > capital[" banana"]
    assert arithmetic["B"] > arithmetic["A"]


@pytest.mark.slow
def test_single_token_options_take_one_pass_with_the_same_scores(gemma):
    prompts = ["问题：1+1等于几？\n选项：\n(A) 2\n(B) 3\n答案：(", "Question: Is water wet?\n(A) yes\n(B) no\nAnswer: (", "x"]
    fast = dict(gemma.option_logprobs(prompts, ["A", "B", "C", "D"]))
    slow = gemma._continuation_logprobs([p for p in prompts for _ in "ABCD"], list("ABCD") * len(prompts))
    for i in range(len(prompts)):
        for j, letter in enumerate("ABCD"):
            assert fast[i].output[letter] == pytest.approx(slow[4 * i + j][0], abs=1e-3)


@pytest.mark.slow
def test_perplexity_fluent_lower_than_shuffled(gemma):
    fluent = "The quick brown fox jumps over the lazy dog because it wants to reach the river before sunset."
    shuffled = "river fox the sunset lazy before because jumps reach dog it brown the over wants quick the to."
    results = dict(gemma.perplexity([fluent, shuffled, "a"]))
    assert 1 < results[0].output < results[1].output
    assert results[2].status == "ok" and results[2].output > 1  # BOS + one token is still scoreable


@pytest.mark.slow
def test_resource_goes_through_the_ledger(gemma, models_dir, tmp_path):
    from madef_assets.llm.resource import LLMResource

    resource = LLMResource(role="scorer", backend="transformers", model="bundled:gemma3-270m",
                           options_json='{"batch_size": 4}', duckdb_path=str(tmp_path / "l.duckdb"), models_dir=str(models_dir))
    texts = ["A short fluent sentence about the weather.", "weather sentence the fluent about short A.", "A short fluent sentence about the weather."]
    first = resource.perplexity(texts)
    second = resource.perplexity(texts)
    assert first.backend_calls == 2 and first.cache_hits == 0  # the repeated text is sent once
    assert second.backend_calls == 0 and second.cache_hits == 2
    assert [r.value for r in first.results] == [r.value for r in second.results]
    assert first.results[0].value < first.results[1].value


@pytest.mark.slow
def test_roles_with_different_batch_sizes_share_one_copy_of_the_weights(gemma, models_dir):
    from madef_assets.llm.resource import build_backend

    other = build_backend("transformers", "bundled:gemma3-270m", {"batch_size": 16}, models_dir)
    assert other is not gemma and other.batch_size == 16
    assert other.model is gemma.model
