"""GPT-2, written out so that it reads top to bottom.

This file holds only the forward pass: the configuration, the attention maths, the four
modules (attention, MLP, block, GPT), and at the end the key-value cache that generation uses.
Loading lives in `load.py`, sampling in `generate.py`, the lenses in `lens/`. Everything that
reads inside the model walks its blocks through `GPT.walk` and `Block.parts`, never re-typing a block.

Module paths equal the keys of the official checkpoints, so a checkpoint key
such as `h.3.attn.c_attn.weight` is also the Python path `model.h[3].attn.c_attn.weight`.

Shape legend, used on every tensor line below:
    B batch, T new tokens, S tokens attended to (cached + new), C n_embd,
    H n_head, D head dim (C // H), M MLP width (4C), V vocab, L n_layer
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError, InputError

# ----------------------------------------------------------------------------
# Configuration: the field names are the keys of the checkpoints' config.json


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT-2 model. Field names are those of `config.json`."""

    vocab_size: int = 50257
    n_positions: int = 1024  # context length; also the size of the (skipped) mask buffers
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd, as in every official size
    activation_function: str = "gelu_new"  # the tanh approximation of GELU
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); fix config.json")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner < 1):
            raise ConfigError(f"config field 'n_inner' must be a positive integer or null, got {self.n_inner!r}")
        if self.activation_function != "gelu_new":
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not supported: minigpt implements "
                "GPT-2's tanh GELU ('gelu_new') only"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> GPTConfig:
        """Build a config from a parsed `config.json`, ignoring the keys minigpt does not use (dropout
        rates, `dtype`, ...); a file without `n_positions` uses the older `n_ctx` instead."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in fields.items() if k in known}
        if "n_positions" not in kwargs and "n_ctx" in fields:
            kwargs["n_positions"] = fields["n_ctx"]
        return cls(**kwargs)


# (n_layer, n_head, n_embd) of the five official checkpoints; everything else is shared.
PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
    "distilgpt2": GPTConfig(n_layer=6, n_head=12, n_embd=768),
}


# ----------------------------------------------------------------------------
# The modules, in the order the data meets them


class Conv1D(nn.Module):
    """An affine map `x @ weight + bias` whose weight is stored `[in, out]`.

    The checkpoints store all four projections this way (a TensorFlow legacy), the
    transpose of `nn.Linear`'s `[out, in]`. Keeping their layout means the loader
    transposes nothing, and the matrices read left to right along the residual stream.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))  # [in, out], as stored in the checkpoint
        self.bias = nn.Parameter(torch.zeros(n_out))  # [out]
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # addmm is `bias + flat @ weight` in one kernel: the bias is added while the product is
        # written, rather than in a second pass over it. It is also the call transformers' Conv1D
        # makes, so the two implementations round alike.
        flat = x.reshape(-1, x.shape[-1])  # (..., in) -> (N, in)
        out = torch.addmm(self.bias, flat, self.weight)  # (N, in) @ (in, out) + (out,) -> (N, out)
        return out.view(*x.shape[:-1], out.shape[-1])  # (N, out) -> (..., out)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention, written out: returns the output and the pattern.

    q (B, H, T, D), k and v (B, H, S, D), mask (T, S) bool, True where query t may read key s.
    `CausalSelfAttention.forward` runs the fused kernel `F.scaled_dot_product_attention`, which
    computes the same output (tests check the two agree); `pattern` returns this function's pattern.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))  # (B, H, T, S): a position cannot see ahead
    pattern = scores.softmax(dim=-1)  # (B, H, T, S): each row sums to 1
    return pattern @ v, pattern  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)


def causal_mask(T: int, S: int, device: torch.device | None = None) -> Tensor:
    """(T, S) bool: the T newest of S positions each see themselves and every earlier position."""
    return torch.arange(S, device=device) <= torch.arange(S - T, S, device=device)[:, None]


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)  # output is q | k | v
        self.c_proj = Conv1D(config.n_embd, config.n_embd)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split the input into per-head queries, keys and values, each (B, H, T, D)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # noqa: E731
        return heads(q), heads(k), heads(v)  # (B, T, C) -> (B, H, T, D)

    def heads(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        """Each head's output before `c_proj` mixes them, z (B, H, T, D). Head h writes `z[:, h] @ W_O[h]`,
        W_O[h] = c_proj.weight[h*D:(h+1)*D]; attention's output is the H writes summed, plus c_proj.bias."""
        T = x.shape[1]
        q, k, v = self.qkv(x)  # 3 x (B, H, T, D)
        if kv is not None:
            k, v = kv.append(k, v)  # (B, H, S, D): the cached positions, then the new ones
        S = k.shape[2]
        # The same maths as `attention(q, k, v, causal_mask(T, S))[0]`, fused: faster, and it never
        # holds the (B, H, T, S) pattern. Without a cache (S == T) the mask is the plain causal one,
        # which `is_causal` selects without building it.
        if S == T:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, x.device))  # (B, H, T, D)

    def project(self, z: Tensor) -> Tensor:
        """Mix the heads back into the stream: z (B, H, T, D) -> (B, T, C), the sum of the heads' writes + c_proj.bias."""
        B, H, T, D = z.shape
        return self.c_proj(z.transpose(1, 2).reshape(B, T, H * D))  # (B, T, H, D) -> (B, T, C): heads side by side

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        return self.project(self.heads(x, kv))  # (B, T, C) -> (B, H, T, D) -> (B, T, C)

    def pattern(self, x: Tensor) -> Tensor:
        """The attention pattern: how much each position reads from each earlier one.

        Takes the block's normalised input (B, T, C); returns (B, H, T, T), rows summing to 1.
        """
        T = x.shape[1]
        q, k, v = self.qkv(x)  # (B, H, T, D)
        return attention(q, k, v, causal_mask(T, T, x.device))[1]  # (B, H, T, T)


class MLP(nn.Module):
    """Two affine maps with GPT-2's tanh GELU between them."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, config.mlp_width)
        self.c_proj = Conv1D(config.mlp_width, config.n_embd)

    def neurons(self, x: Tensor) -> Tensor:
        """The M neurons' activations: (B, T, C) -> (B, T, M). Neuron n writes `act[..., n] * c_proj.weight[n]`."""
        return F.gelu(self.c_fc(x), approximate="tanh")  # (B, T, C) -> (B, T, M); 'gelu_new' in config.json

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.neurons(x))  # (B, T, M) -> (B, T, C)


class Block(nn.Module):
    """A pre-LayerNorm transformer block: each sub-block reads a normalised copy of
    the residual stream and adds its output back to it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        return self.parts(x, kv).out  # (B, T, C)

    def parts(self, x: Tensor, kv: LayerKV | None = None) -> BlockParts:
        """The block's forward pass with every intermediate kept: what each site reads and writes."""
        ln_1 = self.ln_1(x)  # (B, T, C)
        z = self.attn.heads(ln_1, kv)  # (B, H, T, D): each head's output, before c_proj
        attn = self.attn.project(z)  # (B, T, C): attn_out
        resid_mid = x + attn  # (B, T, C): resid_mid = resid_pre + attn_out
        ln_2 = self.ln_2(resid_mid)  # (B, T, C)
        neurons = self.mlp.neurons(ln_2)  # (B, T, M)
        mlp = self.mlp.c_proj(neurons)  # (B, T, C): mlp_out
        return BlockParts(x, ln_1, z, attn, resid_mid, ln_2, neurons, mlp, resid_mid + mlp)

    def finish(self, resid_mid: Tensor) -> Tensor:
        """The block's second half alone, resid_mid -> resid_post (B, T, C): for a row inside the block."""
        return resid_mid + self.mlp(self.ln_2(resid_mid))


class BlockParts(NamedTuple):
    """One block's sites, in the order the data meets them (returned by `Block.parts`)."""

    resid_pre: Tensor  # (B, T, C) the block's input
    ln_1: Tensor  # (B, T, C) what attention reads
    z: Tensor  # (B, H, T, D) each head's output; head h writes z[:, h] @ c_proj.weight[h*D:(h+1)*D]
    attn: Tensor  # (B, T, C) attn_out: the heads' writes summed, plus c_proj.bias
    resid_mid: Tensor  # (B, T, C) resid_pre + attn
    ln_2: Tensor  # (B, T, C) what the MLP reads
    neurons: Tensor  # (B, T, M) the MLP's activations after GELU
    mlp: Tensor  # (B, T, C) mlp_out
    out: Tensor  # (B, T, C) resid_post = resid_mid + mlp: the next block's input


class GPTOutput(NamedTuple):
    """What `GPT.forward` returns, whatever its arguments."""

    logits: Tensor  # (B, T, V)
    resid: Tensor  # (L + 1, B, T, C): resid[0] = wte + wpe, resid[l] = output of block l; all before ln_f


class GPT(nn.Module):
    """GPT-2. `forward` returns the logits and the residual stream after every block.

    >>> model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=11, n_positions=16))
    >>> out = model(torch.tensor([[1, 2, 3]]))
    >>> out.logits.shape, out.resid.shape
    (torch.Size([1, 3, 11]), torch.Size([3, 1, 3, 8]))
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings; also the unembedding (no lm_head)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # position embeddings
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=0.02)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, config: GPTConfig | None = None) -> GPT:
        """Load a checkpoint: a preset ("gpt2", ..., "distilgpt2"), a hub id, a directory or a .safetensors file.

        dtype defaults to float32, device to the CPU; `config` overrides the checkpoint's config.json
        (needed only for a bare .safetensors file whose head size is not 64).
        """
        from .load import load_model  # the loader does the I/O; this file stays pure

        return load_model(name_or_path, device=device, dtype=dtype, config=config)

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.wte.weight.dtype

    def check_ids(self, idx: Tensor, past: int = 0, *, values: bool = True) -> None:
        """Raise `InputError` unless `idx` is a (B, T) integer tensor the model can read after `past` cached tokens.

        values=False skips the vocabulary-range check, the one part that reads the ids (and so
        waits for the device): generation skips it for the tokens it sampled itself.
        """
        if isinstance(idx, Tensor) and idx.dim() == 2 and idx.numel() == 0:
            raise InputError("the sequence is empty: give the model at least one token")
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, Tensor) else type(idx).__name__
            raise InputError(f"token ids must be an integer tensor of shape (B, T), got {got}; try torch.tensor([ids])")
        T, limit = idx.shape[1], self.config.n_positions
        if past + T > limit:
            raise InputError(f"{past + T} tokens exceed the context of {limit} positions; keep the last "
                             f"{limit} tokens (e.g. idx[:, -{limit}:]) or split the text")
        if not values:
            return
        lo, hi, V = int(idx.min()), int(idx.max()), self.config.vocab_size
        if lo < 0 or hi >= V:
            raise InputError(f"token id {hi if hi >= V else lo} is outside the vocabulary [0, {V}); "
                             "was the text encoded with this model's tokenizer?")

    def embed(self, idx: Tensor, past: int = 0) -> Tensor:
        """resid[0], token plus position embeddings (B, T) -> (B, T, C), for tokens after `past` cached ones."""
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)  # (T,): absolute positions
        return self.wte(idx) + self.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)

    def walk(self, x: Tensor, *, start: int = 0, cache: KVCache | None = None) -> Iterator[BlockParts]:
        """Run blocks start .. L-1 on the stream x (B, T, C), yielding each block's parts as it goes.

        Everything that reads inside the model (the lens rows, attention patterns, attribution) walks
        the blocks through here; `stream` is the walk that keeps only each block's output.
        """
        kvs = cache.layers if cache is not None else [None] * len(self.h)
        for block, kv in zip(self.h[start:], kvs[start:]):
            parts = block.parts(x, kv)
            yield parts
            x = parts.out  # (B, T, C)

    def stream(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """The stream (L + 1, B, T, C) for ids (B, T), every row before ln_f. With a cache, idx holds only the
        new tokens and the cache grows in place; ids are range-checked on a prompt only (it waits for the device)."""
        past = 0 if cache is None else len(cache)
        self.check_ids(idx, past, values=past == 0)
        resid = []
        for parts in self.walk(self.embed(idx, past), cache=cache):
            resid.append(parts.resid_pre)  # resid[l]: the input of block l (resid[0] = wte + wpe)
        resid.append(parts.out)  # resid[L]: the output of the last block
        return torch.stack(resid)  # (L + 1, B, T, C)

    def unembed(self, x: Tensor) -> Tensor:
        """The tied unembedding: (..., C) @ (C, V) -> (..., V). GPT-2 has no unembedding bias."""
        return x @ self.wte.weight.T

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> GPTOutput:
        """Token ids (B, T) -> logits and the stream, for every position (with a cache: the new ones)."""
        resid = self.stream(idx, cache)  # (L + 1, B, T, C)
        logits = self.unembed(self.ln_f(resid[-1]))  # (B, T, C) @ (C, V) -> (B, T, V)
        return GPTOutput(logits=logits, resid=resid)


# ----------------------------------------------------------------------------
# Key-value cache: lets generation feed one new token at a time (see generate.py)


class LayerKV:
    """The keys and values one attention layer has seen so far."""

    def __init__(self) -> None:
        self.k: Tensor | None = None  # (B, H, S, D)
        self.v: Tensor | None = None  # (B, H, S, D)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new positions' keys and values; return all of them."""
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)  # (B, H, S - T, D) + (B, H, T, D) -> (B, H, S, D)
            v = torch.cat([self.v, v], dim=2)  # (B, H, S, D)
        self.k, self.v = k, v
        return k, v


class KVCache:
    """One `LayerKV` per block. `GPT.forward` updates it in place."""

    def __init__(self, n_layer: int) -> None:
        self.layers = [LayerKV() for _ in range(n_layer)]

    def __len__(self) -> int:
        """The number of positions cached so far."""
        k = self.layers[0].k
        return 0 if k is None else k.shape[2]
