"""The model's parts: `GPT.stream`, `GPT.walk`, `Block.parts` and the per-head outputs `z`.

The lenses, attention patterns and attribution read inside the model only through these, so each
part is checked against an independent computation from the raw weights (written out here), and
the parts are checked to add up to the stream that `forward` returns.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig, KVCache
from minigpt.model import BlockParts
from minigpt.testing import random_state

ROOT = Path(__file__).resolve().parents[1]
# Odd, distinct sizes (C=15, H=3, D=5, M=23), so a mis-split head or a transposed matrix cannot pass.
CONFIG = GPTConfig(vocab_size=41, n_positions=20, n_embd=15, n_head=3, n_layer=3, n_inner=23)


@pytest.fixture(scope="module")
def model() -> GPT:
    model = GPT(CONFIG).eval()
    model.load_state_dict(random_state(CONFIG, seed=4, scale=0.3), strict=False)
    return model


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))


def by_hand(model: GPT, x: torch.Tensor, l: int) -> dict[str, torch.Tensor]:
    """Block l on x (B, T, C), from its weights alone, in float64: every site, and each head's write."""
    b, C, H = model.h[l], CONFIG.n_embd, CONFIG.n_head
    D = C // H
    w = {k: v.detach().double() for k, v in b.state_dict().items()}
    x = x.double()

    def ln(t, g, beta):
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + CONFIG.layer_norm_epsilon) * g + beta

    a = ln(x, w["ln_1.weight"], w["ln_1.bias"])
    qkv = a @ w["attn.c_attn.weight"] + w["attn.c_attn.bias"]  # (B, T, 3C)
    q, k, v = (qkv[..., i * C : (i + 1) * C].unflatten(-1, (H, D)).transpose(1, 2) for i in range(3))  # (B, H, T, D)
    T = x.shape[1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    z = scores.softmax(-1) @ v  # (B, H, T, D)
    W_O = w["attn.c_proj.weight"]  # [in, out]: head h owns rows h*D .. (h+1)*D - 1
    writes = torch.stack([z[:, h] @ W_O[h * D : (h + 1) * D] for h in range(H)])  # (H, B, T, C)
    attn = writes.sum(0) + w["attn.c_proj.bias"]
    mid = x + attn
    m = ln(mid, w["ln_2.weight"], w["ln_2.bias"])
    u = m @ w["mlp.c_fc.weight"] + w["mlp.c_fc.bias"]
    neurons = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))  # tanh GELU
    mlp = neurons @ w["mlp.c_proj.weight"] + w["mlp.c_proj.bias"]
    return dict(ln_1=a, z=z, writes=writes, attn=attn, resid_mid=mid, ln_2=m, neurons=neurons, mlp=mlp, out=mid + mlp)


def test_every_part_equals_the_weights_written_out(model: GPT, ids: torch.Tensor) -> None:
    with torch.no_grad():
        resid = model(ids).resid
        for l, parts in enumerate(model.walk(model.embed(ids))):
            assert isinstance(parts, BlockParts)
            ref = by_hand(model, resid[l], l)
            assert parts.z.shape == (2, CONFIG.n_head, 13, CONFIG.n_embd // CONFIG.n_head)
            assert parts.neurons.shape == (2, 13, CONFIG.mlp_width)
            assert torch.equal(parts.resid_pre, resid[l])
            for name in ("ln_1", "z", "attn", "resid_mid", "ln_2", "neurons", "mlp", "out"):
                err = (getattr(parts, name).double() - ref[name]).abs().max().item()
                assert err <= 1e-5, f"block {l} {name}: max error {err:.2e}"


def test_the_heads_writes_plus_the_bias_are_the_attention_output(model: GPT, ids: torch.Tensor) -> None:
    D = CONFIG.n_embd // CONFIG.n_head
    with torch.no_grad():
        for l, parts in enumerate(model.walk(model.embed(ids))):
            W_O, b_O = model.h[l].attn.c_proj.weight, model.h[l].attn.c_proj.bias
            writes = sum(parts.z[:, h] @ W_O[h * D : (h + 1) * D] for h in range(CONFIG.n_head))  # (B, T, C)
            assert (writes + b_O - parts.attn).abs().max() <= 1e-5, l
            # and the neurons' writes plus c_proj's bias are the MLP output
            mlp = parts.neurons @ model.h[l].mlp.c_proj.weight + model.h[l].mlp.c_proj.bias
            assert (mlp - parts.mlp).abs().max() <= 1e-5, l


def test_the_stream_is_forward_s_resid_bit_for_bit(model: GPT, ids: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(ids)
        stream = model.stream(ids)
        assert torch.equal(stream, out.resid)
        assert torch.equal(model.unembed(model.ln_f(stream[-1])), out.logits)
        assert torch.equal(model.embed(ids), stream[0])
        # a walk from any row goes on exactly as the full one did
        for start in range(CONFIG.n_layer):
            outs = [p.out for p in model.walk(stream[start], start=start)]
            assert len(outs) == CONFIG.n_layer - start
            for offset, o in enumerate(outs, start=start + 1):
                assert torch.equal(o, stream[offset]), (start, offset)
        # a block's second half alone finishes it
        for l, parts in enumerate(model.walk(stream[0])):
            assert torch.equal(model.h[l].finish(parts.resid_mid), parts.out)


def test_the_cached_walk_equals_the_full_one(model: GPT, ids: torch.Tensor) -> None:
    with torch.no_grad():
        full = model.stream(ids)
        cache = KVCache(CONFIG.n_layer)
        first = model.stream(ids[:, :6], cache)
        rest = model.stream(ids[:, 6:], cache)
        assert (torch.cat([first, rest], dim=2) - full).abs().max() <= 1e-5


def test_parts_carry_gradients_for_training(model: GPT, ids: torch.Tensor) -> None:
    parts = next(model.walk(model.embed(ids)))
    parts.z.sum().backward()
    assert model.h[0].attn.c_attn.weight.grad is not None
    model.zero_grad()


def test_only_model_py_calls_a_block_s_sub_modules() -> None:
    """The forward pass exists once: no other module runs a block's attention, MLP or LayerNorms itself."""
    call = re.compile(r"\.(attn|mlp|ln_1|ln_2)\s*\(")
    offenders = []
    for path in sorted((ROOT / "minigpt").rglob("*.py")):
        if path.name == "model.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if call.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "re-typed forward passes:\n" + "\n".join(offenders)


def test_the_grep_check_sees_a_re_typed_block() -> None:
    """The check above would catch the old `residual_parts` loop (so it is not vacuous)."""
    call = re.compile(r"\.(attn|mlp|ln_1|ln_2)\s*\(")
    assert call.search("        attn_out = block.attn(block.ln_1(x))  # (B, T, C)")
    assert not call.search("        p = model.h[l].attn.pattern(parts.ln_1)")


def test_model_py_reads_in_one_sitting() -> None:
    """At most 380 lines, the forward pass only: no file I/O, no sampling, no lens."""
    source = (ROOT / "minigpt" / "model.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 380
    for banned in ("open(", "import safetensors", "from safetensors", "huggingface_hub", "multinomial", "from .lens", "from .generate"):
        assert banned not in source, banned
