"""Sampling from a GPT with a key-value cache: greedy, temperature and top-k."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import Tensor

from .errors import InputError
from .model import GPT, GPTOutput, KVCache

if TYPE_CHECKING:
    import tiktoken


@torch.inference_mode()
def generate(
    model: GPT,
    ids: Tensor | Sequence[int] | str,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    tokenizer: tiktoken.Encoding | None = None,
) -> Tensor:
    """Continue a prompt by `max_new_tokens` tokens; return the prompt's ids followed by the new ones.

    The prompt is token ids ((T,) or (B, T), a tensor or a list), or a text with `tokenizer=`;
    the result is a tensor of ids either way ((T + n,) or (B, T + n)): `tokenizer.decode(out.tolist())`
    turns a 1-D one back into text. temperature=0 is greedy decoding. top_k keeps only the k likeliest tokens before sampling.
    `generator` seeds the sampling (on the model's device). The prompt is read once; each
    later step feeds the model one new token and reuses the cached keys and values.
    """
    ids = _prompt_ids(ids, tokenizer)
    squeeze = ids.dim() == 1
    idx = ids.unsqueeze(0) if squeeze else ids
    out = [idx.to(model.device)] + [step for _, step in sampling_steps(model, idx, max_new_tokens, temperature=temperature,
                                                                    top_k=top_k, generator=generator)]  # fmt: skip
    result = torch.cat(out, dim=1)  # (B, T + max_new_tokens)
    return result[0] if squeeze else result


def sampling_steps(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[GPTOutput, Tensor]]:
    """The sampling loop: for each new token, the model's output for the positions just fed (the prompt
    first, then one token at a time through the KV cache) and the token sampled from its last position.

    idx (B, T) -> max_new_tokens x (GPTOutput over the fed positions, sampled ids (B, 1)). The last token
    sampled is never fed. `generate` keeps the ids; `generate_lens` also reads each output's stream.
    """
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise InputError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= model.config.vocab_size:
        raise InputError(f"top_k must be between 1 and the vocabulary size {model.config.vocab_size}, got {top_k}")
    idx = idx.to(model.device)
    model.check_ids(idx)
    limit = model.config.n_positions
    if idx.shape[1] + max_new_tokens > limit:
        raise InputError(
            f"a prompt of {idx.shape[1]} tokens plus {max_new_tokens} new ones exceeds the context of {limit} "
            f"positions; shorten the prompt or ask for at most {limit - idx.shape[1]} new tokens"
        )
    cache = KVCache(model.config.n_layer)
    step = idx  # (B, T) the prompt first, then (B, 1) one new token at a time
    for _ in range(max_new_tokens):
        out = model(step, cache)
        logits = out.logits[:, -1, :].float()  # (B, V): the next-token logits
        if temperature == 0:
            step = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
                logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
            probs = torch.softmax(logits, dim=-1)  # (B, V)
            step = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        yield out, step


def _prompt_ids(prompt: Tensor | Sequence[int] | str, tokenizer: tiktoken.Encoding | None) -> Tensor:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InputError("a text prompt needs a tokenizer: generate(model, text, n, tokenizer=minigpt.load_tokenizer(...))")
        prompt = tokenizer.encode_ordinary(prompt)  # "<|endoftext|>" in the text stays ordinary text
    if isinstance(prompt, Tensor):
        return prompt
    if isinstance(prompt, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return torch.tensor(prompt, dtype=torch.int64)
    raise InputError(
        f"the prompt must be token ids (a tensor or a list of ints) or a text with tokenizer=, got {type(prompt).__name__}"
    )
