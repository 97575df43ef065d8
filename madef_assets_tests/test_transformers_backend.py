"""The transformers backend for real, on the bundled Gemma 3 270M (converted once from GGUF)."""

import math

import pytest
import torch

from madef_assets.llm.transformers_backend import OutputHead, length_sorted_batches, output_head, truncate_at_stop
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
    from madef_assets.llm.backends import build_backend

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
    prompts = [
        "问题：1+1等于几？\n选项：\n(A) 2\n(B) 3\n答案：(",
        "Question: Is water wet?\n(A) yes\n(B) no\nAnswer: (",
        "x",
    ]
    fast = dict(gemma.option_logprobs(prompts, ["A", "B", "C", "D"]))
    slow = gemma._continuation_logprobs([p for p in prompts for _ in "ABCD"], list("ABCD") * len(prompts))
    for i in range(len(prompts)):
        for j, letter in enumerate("ABCD"):
            assert fast[i].output[letter] == pytest.approx(slow[4 * i + j][0], abs=1e-3)


@pytest.mark.slow
def test_multi_token_options_share_the_prompts_pass_with_the_same_scores(gemma):
    """Options of several tokens continue from the prompt's cache, repeated per option; the scores equal
    scoring each prompt + option whole, also past Gemma 3's 512-token sliding window."""
    long_prompt = "类别：" + "，".join(f"第{i}类" for i in range(200)) + "\n答案："
    prompts = [long_prompt, "Question: which category?\nAnswer:", "x"]
    options = ["PMH", "OFF", "回复1", "uncertain"]
    assert len(gemma.tokenizer(long_prompt)["input_ids"]) > 600
    shared = dict(gemma.option_logprobs(prompts, options))
    whole = gemma._continuation_logprobs([p for p in prompts for _ in options], options * len(prompts))
    for i in range(len(prompts)):
        for j, option in enumerate(options):
            assert shared[i].output[option] == pytest.approx(whole[len(options) * i + j][0], abs=2e-3)


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
    from madef_assets.settings import model_from_parts

    resource = LLMResource(
        role="scorer",
        config=model_from_parts("transformers", "bundled:gemma3-270m", {"batch_size": 4}, {}),
        duckdb_path=str(tmp_path / "l.duckdb"),
        models_dir=str(models_dir),
    )
    texts = [
        "A short fluent sentence about the weather.",
        "weather sentence the fluent about short A.",
        "A short fluent sentence about the weather.",
    ]
    first = resource.perplexity(texts)
    second = resource.perplexity(texts)
    assert first.backend_calls == 2 and first.cache_hits == 0  # the repeated text is sent once
    assert second.backend_calls == 0 and second.cache_hits == 2
    assert [r.value for r in first.results] == [r.value for r in second.results]
    assert first.results[0].value < first.results[1].value


@pytest.mark.slow
def test_roles_with_different_batch_sizes_share_one_copy_of_the_weights(gemma, models_dir):
    from madef_assets.llm.backends import build_backend

    other = build_backend("transformers", "bundled:gemma3-270m", {"batch_size": 16}, models_dir)
    assert other is not gemma and other.batch_size == 16
    assert other.model is gemma.model


def test_chunked_token_nll_equals_cross_entropy_over_full_logits():
    generator = torch.Generator().manual_seed(0)
    states, weight, bias = (torch.randn(shape, generator=generator) for shape in ((37, 16), (1000, 16), (1000,)))
    targets = torch.randint(0, 1000, (37,), generator=generator)
    for head in (OutputHead(weight * 4), OutputHead(weight, bias), OutputHead(weight * 4, bias, softcap=3.0)):
        full = head.logits(states)
        expected = torch.nn.functional.cross_entropy(full, targets, reduction="none")
        for chunk in (1000, 300, 7):  # one chunk, a ragged last chunk, many chunks
            assert torch.allclose(head.token_nll(states, targets, chunk=chunk), expected, atol=1e-4)
    # Logits far beyond exp's range stay finite: the running maximum is subtracted before exp.
    huge = OutputHead(weight * 1e4).token_nll(states, targets, chunk=300)
    assert torch.isfinite(huge).all() and (huge >= 0).all()
    assert OutputHead(weight).token_nll(states[:0], targets[:0]).shape == (0,)


def tiny_causal_lm(family: str, **head_settings):
    from transformers import CohereConfig, CohereForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    sizes = dict(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    if family == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**sizes, head_dim=16, **head_settings)).eval()
    return CohereForCausalLM(CohereConfig(**sizes, **head_settings)).eval()


@torch.inference_mode()
def test_output_head_taken_only_when_it_reproduces_the_model_logits():
    capped = tiny_causal_lm("gemma3", final_logit_softcapping=0.05)
    head = output_head(capped)
    assert head is not None and head.softcap == 0.05
    ids = torch.tensor([[2, 17, 45, 210, 9, 33]])
    states = capped.get_decoder()(input_ids=ids).last_hidden_state[0, :-1]
    expected = capped(input_ids=ids, labels=ids).loss
    assert float(head.token_nll(states, ids[0, 1:]).mean()) == pytest.approx(float(expected), rel=1e-5)
    # Cohere multiplies its logits by logit_scale after the projection: not a plain head, so no shortcut.
    assert output_head(tiny_causal_lm("cohere", logit_scale=0.5)) is None


@pytest.mark.slow
def test_perplexity_equals_the_models_own_loss_on_either_path(gemma):
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "如何在家里安全地处理过期药品？请给出步骤。",
        "Hi",
        "a b c d e f g h i j k",
    ]
    assert gemma.head is not None  # Gemma 3's tied embedding is a plain projection: the chunked path
    with torch.inference_mode():
        expected = []
        for text in texts:
            ids = torch.tensor([gemma.tokenizer(text)["input_ids"]])
            expected.append(math.exp(float(gemma.model(input_ids=ids, labels=ids).loss)))
    chunked = dict(gemma.perplexity(texts))
    gemma.weights.head = None  # as for a model whose head is not a plain projection: full logits
    try:
        full = dict(gemma.perplexity(texts))
    finally:
        del gemma.weights.head  # looked at again on next use
    for i, value in enumerate(expected):
        # Batched with padding vs alone differs in float rounding only; the two paths agree more closely.
        assert chunked[i].output == pytest.approx(value, rel=1e-3)
        assert chunked[i].output == pytest.approx(full[i].output, rel=1e-4)


def test_a_wrongly_converted_gguf_tokenizer_is_refused(models_dir):
    """transformers 5.17 converted the bundled GGUF's tokenizer to single characters without BOS (seen on
    the first GPU check): the converted folder must tokenize as the GGUF says, or nothing is written."""
    from tokenizers import Tokenizer, models, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from madef_assets.llm.model_files import (
        TOKENIZER_PROBE,
        bundled_gguf,
        converted_tokenizer_problem,
        gguf_flag,
        resolve_model_path,
    )

    gguf = bundled_gguf(models_dir)
    assert gguf_flag(gguf, "tokenizer.ggml.add_bos_token") is True and gguf_flag(gguf, "no.such.key") is None
    good = AutoTokenizer.from_pretrained(str(resolve_model_path("bundled:gemma3-270m", models_dir)))
    assert converted_tokenizer_problem(good, add_bos=True) is None
    good.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    assert "do not start with BOS" in converted_tokenizer_problem(good, add_bos=True)
    characters = sorted(set(TOKENIZER_PROBE))
    per_character = Tokenizer(models.BPE({c: i for i, c in enumerate(characters)}, merges=[]))
    problem = converted_tokenizer_problem(PreTrainedTokenizerFast(tokenizer_object=per_character), add_bos=False)
    assert problem and f"into {len(TOKENIZER_PROBE)} tokens" in problem
