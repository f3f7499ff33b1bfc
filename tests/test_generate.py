"""Generation: the KV cache changes nothing but the speed, each cached step reads one token, and the
sampling (temperature, top-k, generator) does what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import minigpt
from minigpt import GPT, InputError

from minigpt.testing import random_state

from conftest import TINY


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Path) -> GPT:
    return GPT.from_pretrained(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def vocab_model(vocab_checkpoint: Path) -> GPT:
    return GPT.from_pretrained(str(vocab_checkpoint))


def greedy_without_cache(model: GPT, ids: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: re-run the full forward on the whole sequence for every new token."""
    with torch.no_grad():
        for _ in range(n):
            next_id = model(ids).logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def prompt(model: GPT, B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (B, T), generator=g)


# ----------------------------------------------------------------------------
# The cache


@pytest.mark.parametrize("B, T", [(1, 1), (2, 3), (3, 8)])
def test_greedy_with_cache_equals_without(tiny: GPT, B: int, T: int) -> None:
    ids = prompt(tiny, B, T, seed=B * 10 + T)
    n = tiny.config.n_positions - T  # up to the full context
    got = minigpt.generate(tiny, ids, n, temperature=0)
    assert torch.equal(got, greedy_without_cache(tiny, ids, n)), got


def test_greedy_with_cache_equals_without_real_vocab(vocab_model: GPT) -> None:
    ids = prompt(vocab_model, 2, 5, seed=1)
    got = minigpt.generate(vocab_model, ids, 24, temperature=0)
    assert torch.equal(got, greedy_without_cache(vocab_model, ids, 24))


def record_calls(model: GPT) -> tuple[list[tuple[tuple[int, ...], int]], torch.utils.hooks.RemovableHandle]:
    """(idx shape, cached positions before the call) for every call of the model; remove the handle after."""
    calls: list[tuple[tuple[int, ...], int]] = []

    def hook(module, args, kwargs):
        idx = args[0] if args else kwargs["idx"]
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        calls.append((tuple(idx.shape), -1 if cache is None else len(cache)))

    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_cached_step_feeds_one_token(tiny: GPT, temperature: float) -> None:
    B, T, n = 2, 5, 7
    calls, handle = record_calls(tiny)
    try:
        g = torch.Generator().manual_seed(0)
        minigpt.generate(tiny, prompt(tiny, B, T), n, temperature=temperature, generator=g)
    finally:
        handle.remove()
    # The prompt once, then one token per step; the last sampled token is never fed back.
    assert calls == [((B, T), 0)] + [((B, 1), T + i) for i in range(n - 1)], calls


def test_zero_new_tokens_does_not_run_the_model(tiny: GPT) -> None:
    calls, handle = record_calls(tiny)
    try:
        ids = prompt(tiny, 1, 4)
        assert torch.equal(minigpt.generate(tiny, ids, 0), ids)
    finally:
        handle.remove()
    assert calls == []


# ----------------------------------------------------------------------------
# What comes back


def test_returns_prompt_then_new_tokens(tiny: GPT) -> None:
    ids = prompt(tiny, 3, 4, seed=3)
    out = minigpt.generate(tiny, ids, 6, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 10) and out.dtype == torch.long
    assert torch.equal(out[:, :4], ids)
    assert ((out >= 0) & (out < TINY.vocab_size)).all()


def test_one_dimensional_prompt(tiny: GPT) -> None:
    ids = torch.tensor([3, 1, 4])
    out = minigpt.generate(tiny, ids, 5, temperature=0)
    assert out.shape == (8,)
    assert torch.equal(out[:3], ids)
    assert torch.equal(out, greedy_without_cache(tiny, ids[None], 5)[0])


def test_a_list_or_a_text_prompt_gives_ids(vocab_model: GPT, tokenizer_dir: Path) -> None:
    tok = minigpt.load_tokenizer(tokenizer_dir)
    ids = tok.encode_ordinary("The dog ran")
    expected = minigpt.generate(vocab_model, torch.tensor(ids), 4, temperature=0)
    assert torch.equal(minigpt.generate(vocab_model, ids, 4, temperature=0), expected)
    assert torch.equal(minigpt.generate(vocab_model, tuple(ids), 4, temperature=0), expected)
    assert torch.equal(minigpt.generate(vocab_model, "The dog ran", 4, temperature=0, tokenizer=tok), expected)
    assert expected.shape == (len(ids) + 4,) and expected.dtype == torch.long


@pytest.mark.parametrize(
    "prompt, hint",
    [("The dog", "needs a tokenizer"), ([1, "2"], "list of ints"), ([1.5], "list of ints"), (3, "got int"), ([], "empty")],
)
def test_bad_prompt_types(tiny: GPT, prompt: object, hint: str) -> None:
    with pytest.raises(InputError, match=hint):
        minigpt.generate(tiny, prompt, 1)  # type: ignore[arg-type]


def test_fills_the_context_exactly(tiny: GPT) -> None:
    ids = prompt(tiny, 1, 15)
    assert minigpt.generate(tiny, ids, 1, temperature=0).shape == (1, 16)
    assert torch.equal(minigpt.generate(tiny, prompt(tiny, 1, 16), 0), prompt(tiny, 1, 16))


def test_lower_precision_model_generates(tiny_checkpoint: Path) -> None:
    model = GPT.from_pretrained(str(tiny_checkpoint), dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    out = minigpt.generate(model, torch.tensor([[1, 2, 3]]), 5, temperature=0.7, generator=g)
    assert out.shape == (1, 8) and out.dtype == torch.long


# ----------------------------------------------------------------------------
# Sampling: on a model with larger embeddings, so its next-token distributions are far from flat


@pytest.fixture(scope="module")
def spread() -> GPT:
    model = GPT(TINY)
    model.load_state_dict(random_state(TINY, seed=3, scale=0.5))
    return model.eval()


def sample(model: GPT, ids: torch.Tensor, n: int, seed: int, **kwargs) -> torch.Tensor:
    return minigpt.generate(model, ids, n, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_generator_makes_sampling_reproducible(spread: GPT) -> None:
    ids = prompt(spread, 2, 3)
    torch.manual_seed(123)
    a = sample(spread, ids, 12, seed=7, temperature=1.0)
    torch.manual_seed(456)  # the global RNG does not matter when a generator is given
    b = sample(spread, ids, 12, seed=7, temperature=1.0)
    torch.manual_seed(123)
    c = sample(spread, ids, 12, seed=8, temperature=1.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "different seeds gave the same 24 sampled tokens"


@pytest.mark.parametrize("temperature", [0.5, 1.0, 5.0])
def test_top_k_one_is_greedy(spread: GPT, temperature: float) -> None:
    ids = prompt(spread, 2, 4, seed=9)
    greedy = minigpt.generate(spread, ids, 10, temperature=0)
    assert torch.equal(sample(spread, ids, 10, seed=0, temperature=temperature, top_k=1), greedy)
    assert not torch.equal(sample(spread, ids, 10, seed=0, temperature=temperature), greedy)


def test_top_k_samples_only_the_k_likeliest(spread: GPT) -> None:
    ids = prompt(spread, 64, 2, seed=4)
    k, n = 3, 8
    out = sample(spread, ids, n, seed=2, temperature=3.0, top_k=k)
    unrestricted = sample(spread, ids, n, seed=2, temperature=3.0)
    with torch.no_grad():
        logits = spread(out[:, :-1]).logits[:, ids.shape[1] - 1 :]  # (B, n, V): the logits each token was drawn from
        full = spread(unrestricted[:, :-1]).logits[:, ids.shape[1] - 1 :]
    rank = lambda lg, tokens: (lg > lg.gather(-1, tokens[..., None])).sum(-1)  # noqa: E731 (0 = the likeliest)
    assert rank(logits, out[:, ids.shape[1] :]).max() < k
    assert rank(full, unrestricted[:, ids.shape[1] :]).max() >= k  # without top_k, the tail is sampled


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 5)])
def test_sampling_follows_the_softmax(spread: GPT, temperature: float, top_k: int | None) -> None:
    """One step for 4000 copies of a prompt: the empirical frequencies match softmax(logits / T), top-k renormalised."""
    ids = torch.tensor([[5, 17, 2]]).repeat(4000, 1)
    drawn = sample(spread, ids, 1, seed=11, temperature=temperature, top_k=top_k)[:, -1]
    with torch.no_grad():
        raw = spread(ids[:1]).logits[0, -1].double()  # (V,)
    logits = raw / temperature
    if top_k is not None:
        logits[logits < logits.topk(top_k).values[-1]] = float("-inf")
    expected = logits.softmax(-1)
    freq = torch.bincount(drawn, minlength=TINY.vocab_size).double() / len(drawn)
    error = (freq - expected).abs().max().item()
    assert error <= 0.03, error  # ~4 standard errors at 4000 draws
    if (temperature, top_k) != (1.0, None):  # the test can tell: plain softmax(raw) is far from what was drawn
        assert (freq - raw.softmax(-1)).abs().max() > 0.06
    if top_k is not None:
        assert (freq[expected == 0] == 0).all()


# ----------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "kwargs, hint",
    [
        (dict(max_new_tokens=3, temperature=-0.1), r"temperature must be >= 0 \(0 means greedy\)"),
        (dict(max_new_tokens=3, temperature=float("nan")), r"temperature must be >= 0"),
        (dict(max_new_tokens=13), r"4 tokens plus 13 new ones exceeds the context of 16.*at most 12 new tokens"),
        (dict(max_new_tokens=-1), r"max_new_tokens must be a non-negative integer"),
        (dict(max_new_tokens=2.0), r"max_new_tokens must be a non-negative integer"),
        (dict(max_new_tokens=3, top_k=0), r"top_k must be between 1 and the vocabulary size 37"),
        (dict(max_new_tokens=3, top_k=38), r"top_k must be between 1 and the vocabulary size 37"),
    ],
    ids=["negative-temperature", "nan-temperature", "too-long", "negative-n", "float-n", "top_k-0", "top_k-big"],
)
def test_bad_arguments(tiny: GPT, kwargs: dict, hint: str) -> None:
    with pytest.raises(InputError, match=hint):
        minigpt.generate(tiny, torch.tensor([[1, 2, 3, 4]]), **kwargs)


@pytest.mark.parametrize(
    "ids, hint",
    [
        (torch.zeros(1, 0, dtype=torch.long), r"empty"),
        (torch.tensor([[1, 37]]), r"token id 37 is outside the vocabulary"),
        (torch.tensor([1.0, 2.0]), r"integer tensor"),
        (torch.zeros(1, 17, dtype=torch.long), r"17 tokens exceed the context of 16"),
    ],
    ids=["empty", "out-of-vocab", "float", "prompt-too-long"],
)
def test_bad_prompt(tiny: GPT, ids: torch.Tensor, hint: str) -> None:
    with pytest.raises(InputError, match=hint):
        minigpt.generate(tiny, ids, 1)
