"""The forward pass: parity with `transformers`' GPT-2, per layer, plus the invariants a reader relies on
(shapes, causality, the KV cache, the readable attention path, dtypes, input checks).

The reference is `transformers.GPT2LMHeadModel` with eager attention and random weights (no download).
Every parameter is perturbed first: HF's init sets LayerNorm gamma to 1 and biases to 0, so without it a
model that ignored a bias or a gamma would still match.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import minigpt
from minigpt import GPT, GPTConfig, InputError, KVCache
from minigpt.model import attention, causal_mask
from minigpt.testing import random_state

from conftest import SHARED, TINY, require

if TYPE_CHECKING:
    import transformers  # the parity tests import it through their fixture, so the rest run without it

GPT2_CONFIG_JSON = SHARED / "data" / "gpt2-hf-config" / "openai-community-gpt2.config.json"

# The two reference shapes: gpt2 small itself, and a tiny one whose sizes are odd and distinct
# (C=12, H=3, D=4, F=29 instead of 4C, V=37), so a transposed or mis-split tensor cannot pass.
SHAPES = {
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    "tiny-odd": dict(n_layer=2, n_head=3, n_embd=12, vocab_size=37, n_positions=16, n_inner=29),
}
SEQ_LEN = {"gpt2-small": 64, "tiny-odd": 16}  # tiny: the whole context
GREEDY = {"gpt2-small": (1, 8, 10), "tiny-odd": (2, 4, 12)}  # (batch, prompt length, new tokens)
LAYOUTS = ("official", "save_pretrained")
TOL = 1e-4


# ----------------------------------------------------------------------------
# The reference model and its two on-disk layouts


def hf_reference(shape: str, seed: int) -> transformers.GPT2LMHeadModel:
    """A random HF GPT-2 in eval mode, with every parameter perturbed away from its init."""
    transformers = pytest.importorskip("transformers")
    fields = SHAPES[shape]
    config = transformers.GPT2Config(
        **fields, attn_implementation="eager", bos_token_id=None, eos_token_id=None, pad_token_id=None
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    assert model.config._attn_implementation == "eager"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():  # lm_head is tied to wte, so this also moves it
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_official_layout(hf: transformers.GPT2LMHeadModel, directory: Path, config_json: Path | None) -> Path:
    """The layout of openai-community/gpt2: keys without `transformer.`, no lm_head, and one causal-mask
    buffer `h.{i}.attn.bias` [1, 1, n_positions, n_positions] F32 per layer."""
    directory.mkdir(parents=True)
    tensors = {
        k.removeprefix("transformer."): v.detach().clone().contiguous()
        for k, v in hf.state_dict().items()
        if k != "lm_head.weight"
    }
    assert not any(k.startswith("transformer.") for k in tensors)
    n = hf.config.n_positions
    for i in range(hf.config.n_layer):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    if config_json is not None:  # the hub's own config.json, with all its extra keys
        shutil.copyfile(config_json, directory / "config.json")
    else:
        hf.config.to_json_file(directory / "config.json")
    return directory


def write_save_pretrained_layout(hf: transformers.GPT2LMHeadModel, directory: Path) -> Path:
    """What transformers itself writes: checked here, so a change in transformers shows up as a failure."""
    hf.save_pretrained(directory, safe_serialization=True)
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("transformer.") for k in keys), keys
    masks = [k for k in keys if re.fullmatch(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)", k)]
    assert not masks, f"save_pretrained wrote mask buffers: {masks}"
    assert "lm_head.weight" not in keys
    return directory


class Reference:
    """One HF model, the same weights loaded by minigpt from each layout, and a shared input."""

    def __init__(self, shape: str, root: Path) -> None:
        self.shape = shape
        self.hf = hf_reference(shape, seed=len(shape))
        config_json = require(GPT2_CONFIG_JSON) if shape == "gpt2-small" else None
        dirs = {
            "official": write_official_layout(self.hf, root / "official", config_json),
            "save_pretrained": write_save_pretrained_layout(self.hf, root / "save_pretrained"),
        }
        self.models = {layout: GPT.from_pretrained(str(d)) for layout, d in dirs.items()}
        g = torch.Generator().manual_seed(7)
        self.ids = torch.randint(0, SHAPES[shape]["vocab_size"], (2, SEQ_LEN[shape]), generator=g)  # (B, T)
        with torch.no_grad():
            self.hf_out = self.hf(self.ids, output_hidden_states=True, output_attentions=True)


@pytest.fixture(scope="module", params=list(SHAPES))
def reference(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    ref = Reference(request.param, tmp_path_factory.mktemp(request.param))
    yield ref
    ref.models.clear()


def layer_report(mine: list[torch.Tensor], theirs: list[torch.Tensor]) -> tuple[float, str]:
    diffs = [(a - b).abs().max().item() for a, b in zip(mine, theirs, strict=True)]
    return max(diffs), ", ".join(f"{i}: {d:.2e}" for i, d in enumerate(diffs))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_logits_and_every_layer(reference: Reference, layout: str) -> None:
    model, hf_out = reference.models[layout], reference.hf_out
    L = model.config.n_layer
    with torch.no_grad():
        out = model(reference.ids)
    assert out.logits.dtype == torch.float32
    assert len(hf_out.hidden_states) == L + 1
    # resid[l] == hidden_states[l] for l < L; HF's last entry has ln_f applied, minigpt's resid[L] does not.
    mine = [out.resid[l] for l in range(L)] + [model.ln_f(out.resid[L])]
    worst, per_layer = layer_report(mine, list(hf_out.hidden_states))
    logits_diff = (out.logits - hf_out.logits).abs().max().item()
    report = f"{reference.shape}/{layout}: max |dlogits| {logits_diff:.2e}; per-layer max |dresid| {per_layer}"
    print(report)
    assert logits_diff <= TOL, report
    assert worst <= TOL, report
    # resid[L] itself is before ln_f, so it must NOT equal HF's last hidden state.
    assert (out.resid[L] - hf_out.hidden_states[L]).abs().max().item() > 1e-2, report


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_greedy_continuation(reference: Reference, layout: str) -> None:
    model, hf = reference.models[layout], reference.hf
    B, prompt_len, new = GREEDY[reference.shape]
    prompt = reference.ids[:B, :prompt_len]
    mine = minigpt.generate(model, prompt, new, temperature=0)
    with torch.no_grad():
        theirs = hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new,
            min_new_tokens=new, pad_token_id=0, eos_token_id=None,
        )  # fmt: skip
    assert theirs.shape == mine.shape == (B, prompt_len + new)
    # How close each greedy choice came to a tie: ids can only legitimately differ below ~1e-5.
    with torch.no_grad():
        top2 = hf(theirs[:, :-1]).logits[:, prompt_len - 1 :].topk(2).values  # (B, new, 2)
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    print(f"{reference.shape}/{layout}: greedy {new} tokens x {B}, smallest top-1/top-2 logit margin {margin:.2e}")
    assert torch.equal(mine, theirs), f"{reference.shape}/{layout}:\nminigpt {mine.tolist()}\nHF      {theirs.tolist()}"


def test_layouts_load_identical_weights(reference: Reference) -> None:
    a, b = (reference.models[layout].state_dict() for layout in LAYOUTS)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hf_state = {k.removeprefix("transformer."): v for k, v in reference.hf.state_dict().items()}
    for k, v in a.items():  # same [in, out] layout as the checkpoint: nothing transposed
        assert torch.equal(v, hf_state[k]), k


def test_config_read_from_checkpoint(reference: Reference) -> None:
    fields = SHAPES[reference.shape]
    for model in reference.models.values():
        for name, value in fields.items():
            assert getattr(model.config, name) == value, name
        assert model.config.mlp_width == fields.get("n_inner", 4 * fields["n_embd"])


def test_causality_on_reference(reference: Reference) -> None:
    """Changing token t+1 leaves every position <= t unchanged (a few t on the big model)."""
    model = reference.models["official"]
    ids = reference.ids[:1]
    T = ids.shape[1]
    with torch.no_grad():
        base = model(ids)
        for t in (0, T - 2):
            changed = ids.clone()
            changed[0, t + 1] = (changed[0, t + 1] + 1) % model.config.vocab_size
            out = model(changed)
            assert (out.logits[:, : t + 1] - base.logits[:, : t + 1]).abs().max() <= 1e-6
            assert (out.resid[:, :, : t + 1] - base.resid[:, :, : t + 1]).abs().max() <= 1e-6
            assert (out.logits[:, t + 1] - base.logits[:, t + 1]).abs().max() > 1e-4  # the change is seen


# ----------------------------------------------------------------------------
# Invariants on the tiny checkpoint


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Path) -> GPT:
    return GPT.from_pretrained(str(tiny_checkpoint))


def random_ids(model: GPT, B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (B, T), generator=g)


def test_forward_shapes(tiny: GPT) -> None:
    c = tiny.config
    for B, T in ((1, 1), (3, 5), (2, c.n_positions)):
        out = tiny(random_ids(tiny, B, T))
        assert isinstance(out, minigpt.GPTOutput)
        assert out.logits.shape == (B, T, c.vocab_size)
        assert out.resid.shape == (c.n_layer + 1, B, T, c.n_embd)


def test_resid_zero_is_embeddings_and_last_gives_logits(tiny: GPT) -> None:
    ids = random_ids(tiny, 2, 9)
    with torch.no_grad():
        out = tiny(ids)
        embed = tiny.wte.weight[ids] + tiny.wpe.weight[:9]
        assert (out.resid[0] - embed).abs().max() <= 1e-7
        logits = tiny.ln_f(out.resid[-1]) @ tiny.wte.weight.T  # (B, T, C) @ (C, V)
        assert (logits - out.logits).abs().max() <= 1e-6
        # resid[l] is the output of block l applied to resid[l - 1]
        for l, block in enumerate(tiny.h, start=1):
            assert (block(out.resid[l - 1]) - out.resid[l]).abs().max() <= 1e-6, l


def test_batch_rows_equal_single_runs(tiny: GPT) -> None:
    ids = random_ids(tiny, 4, 11, seed=3)
    with torch.no_grad():
        batch = tiny(ids)
        for b in range(4):
            alone = tiny(ids[b : b + 1])
            assert (batch.logits[b] - alone.logits[0]).abs().max() <= 1e-6, b
            assert (batch.resid[:, b] - alone.resid[:, 0]).abs().max() <= 1e-6, b


def test_causality_every_position(tiny: GPT) -> None:
    ids = random_ids(tiny, 1, tiny.config.n_positions, seed=4)
    T, V = ids.shape[1], tiny.config.vocab_size
    with torch.no_grad():
        base = tiny(ids)
        for t in range(T - 1):
            changed = ids.clone()
            changed[0, t + 1] = (changed[0, t + 1] + 1 + t) % V
            out = tiny(changed)
            d_logits = (out.logits[:, : t + 1] - base.logits[:, : t + 1]).abs().max().item()
            d_resid = (out.resid[:, :, : t + 1] - base.resid[:, :, : t + 1]).abs().max().item()
            assert d_logits <= 1e-6 and d_resid <= 1e-6, (t, d_logits, d_resid)
            assert (out.logits[0, t + 1] - base.logits[0, t + 1]).abs().max() > 1e-4, t


@pytest.mark.parametrize("split", [1, 5, 15])
def test_kv_cache_prefix_then_rest_equals_full(tiny: GPT, split: int) -> None:
    ids = random_ids(tiny, 2, tiny.config.n_positions, seed=5)
    with torch.no_grad():
        full = tiny(ids)
        cache = KVCache(tiny.config.n_layer)
        assert len(cache) == 0
        first = tiny(ids[:, :split], cache)
        assert len(cache) == split
        rest = tiny(ids[:, split:], cache)
        assert len(cache) == ids.shape[1]
    assert rest.logits.shape == (2, ids.shape[1] - split, tiny.config.vocab_size)
    assert rest.resid.shape[2] == ids.shape[1] - split
    assert (first.logits - full.logits[:, :split]).abs().max() <= 1e-5
    assert (rest.logits - full.logits[:, split:]).abs().max() <= 1e-5
    assert (rest.resid - full.resid[:, :, split:]).abs().max() <= 1e-5


def test_kv_cache_one_token_at_a_time(tiny: GPT) -> None:
    ids = random_ids(tiny, 3, 10, seed=6)
    with torch.no_grad():
        full = tiny(ids)
        cache = KVCache(tiny.config.n_layer)
        steps = [tiny(ids[:, t : t + 1], cache) for t in range(10)]
    assert len(cache) == 10
    logits = torch.cat([s.logits for s in steps], dim=1)
    resid = torch.cat([s.resid for s in steps], dim=2)
    assert (logits - full.logits).abs().max() <= 1e-5
    assert (resid - full.resid).abs().max() <= 1e-5


def test_kv_cache_full_context_then_more_is_refused(tiny: GPT) -> None:
    n = tiny.config.n_positions
    cache = KVCache(tiny.config.n_layer)
    with torch.no_grad():
        tiny(random_ids(tiny, 1, n - 2), cache)
        with pytest.raises(InputError, match=r"exceed the context of 16"):
            tiny(random_ids(tiny, 1, 3), cache)


def test_attention_pattern_matches_fused_forward(tiny: GPT) -> None:
    ids = random_ids(tiny, 2, 13, seed=8)
    with torch.no_grad():
        resid = tiny(ids).resid
        for l, block in enumerate(tiny.h):
            attn = block.attn
            x = block.ln_1(resid[l])  # (B, T, C): the block's normalised input
            pattern = attn.pattern(x)  # (B, H, T, T)
            B, T, C = x.shape
            H = tiny.config.n_head
            assert pattern.shape == (B, H, T, T)
            rows = pattern.sum(-1)
            assert (rows - 1).abs().max() <= 1e-6, l
            future = torch.ones(T, T, dtype=torch.bool).triu(1)
            assert pattern[..., future].abs().max() == 0, l  # causal: nothing above the diagonal
            assert (pattern[..., ~future] > 0).all(), l  # softmax: everything visible gets some weight
            # pattern @ v, heads merged, then c_proj == the fused forward
            _, _, v = attn.qkv(x)
            y = (pattern @ v).transpose(1, 2).reshape(B, T, C)
            readable = y @ attn.c_proj.weight + attn.c_proj.bias
            assert (readable - attn(x)).abs().max() <= 1e-6, l


@pytest.mark.parametrize("T, S", [(7, 7), (1, 9), (3, 11)])
def test_readable_attention_equals_the_fused_kernel(T: int, S: int) -> None:
    """`attention(q, k, v, mask)`, the maths a reader sees, gives what the fused kernel returns, with
    and without cached positions (T new queries at the end of S keys)."""
    g = torch.Generator().manual_seed(T * 100 + S)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (T, S, S))
    mask = causal_mask(T, S)
    y, pattern = attention(q, k, v, mask)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (y - fused).abs().max() <= 1e-6
    assert pattern.shape == (2, 3, T, S)
    assert pattern.masked_fill(mask, 0).abs().max() == 0  # query t sees keys 0 .. S - T + t only
    assert ((pattern.sum(-1) - 1).abs() <= 1e-6).all()
    assert mask.sum().item() == sum(S - T + t + 1 for t in range(T))


def test_model_with_the_readable_attention_equals_the_fused_one(tiny: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap the fused kernel for `attention` in the whole model: the same logits, with and without a cache."""
    ids = random_ids(tiny, 2, 12, seed=9)
    with torch.no_grad():
        fused, cached = tiny(ids).logits, tiny(ids[:, 5:], _filled_cache(tiny, ids[:, :5])).logits

    def readable(q, k, v, attn_mask=None, is_causal=False):
        mask = causal_mask(q.shape[2], k.shape[2]) if is_causal else attn_mask
        return attention(q, k, v, mask)[0]

    monkeypatch.setattr(minigpt.model.F, "scaled_dot_product_attention", readable)
    with torch.no_grad():
        assert (tiny(ids).logits - fused).abs().max() <= 1e-5
        assert (tiny(ids[:, 5:], _filled_cache(tiny, ids[:, :5])).logits - cached).abs().max() <= 1e-5


def _filled_cache(model: GPT, prefix: torch.Tensor) -> KVCache:
    cache = KVCache(model.config.n_layer)
    model(prefix, cache)
    return cache


def test_cached_tokens_skip_the_range_check_that_syncs(tiny: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vocabulary-range check reads the ids (a device sync): a prompt gets it, each later token doesn't."""
    calls: list[bool] = []
    original = GPT.check_ids

    def spy(self: GPT, idx: torch.Tensor, past: int = 0, *, values: bool = True) -> None:
        calls.append(values)
        original(self, idx, past, values=values)

    monkeypatch.setattr(GPT, "check_ids", spy)
    minigpt.generate(tiny, random_ids(tiny, 1, 4, seed=10)[0], 5, temperature=0)
    assert calls == [True, True] + [False] * 4  # generate checks the prompt, then the prompt's forward; 4 cached steps
    with pytest.raises(InputError, match="outside the vocabulary"):
        tiny(torch.tensor([[tiny.config.vocab_size]]), KVCache(tiny.config.n_layer))  # a prompt: checked


def test_attention_pattern_against_hf(reference: Reference) -> None:
    """The readable pattern equals HF's eager attention weights (output_attentions)."""
    model = reference.models["official"]
    theirs = reference.hf_out.attentions
    with torch.no_grad():
        resid = model(reference.ids).resid
        for l, block in enumerate(model.h):
            mine = block.attn.pattern(block.ln_1(resid[l]))
            assert (mine - theirs[l]).abs().max() <= 1e-5, l


# ----------------------------------------------------------------------------
# dtypes


def test_default_dtype_is_float32(tiny_checkpoint: Path) -> None:
    model = GPT.from_pretrained(str(tiny_checkpoint))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = model(torch.tensor([[1, 2, 3]]))
    assert out.logits.dtype == torch.float32 and out.resid.dtype == torch.float32


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-5), (torch.bfloat16, 0.1)])
def test_other_dtypes(tiny_checkpoint: Path, dtype: torch.dtype, tol: float) -> None:
    ref = GPT.from_pretrained(str(tiny_checkpoint))
    model = GPT.from_pretrained(str(tiny_checkpoint), dtype=dtype)
    assert model.dtype == dtype
    assert all(p.dtype == dtype for p in model.parameters())
    ids = torch.tensor([[1, 5, 7, 2, 36]])
    with torch.no_grad():
        out, base = model(ids), ref(ids)
    assert out.logits.dtype == dtype and out.resid.dtype == dtype
    assert (out.logits.double() - base.logits.double()).abs().max() <= tol


def test_generic_config_errors() -> None:
    with pytest.raises(minigpt.ConfigError, match=r"divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(minigpt.ConfigError, match=r"gelu_new"):
        GPTConfig(activation_function="relu")
    with pytest.raises(minigpt.ConfigError, match=r"n_layer"):
        GPTConfig(n_layer=0)


# ----------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "make_ids, hint",
    [
        (lambda c: torch.zeros(1, 0, dtype=torch.long), r"empty.*at least one token"),
        (lambda c: torch.zeros(0, 3, dtype=torch.long), r"empty.*at least one token"),
        (lambda c: torch.zeros(1, c.n_positions + 1, dtype=torch.long),
         r"17 tokens exceed the context of 16.*idx\[:, -16:\]"),
        (lambda c: torch.tensor([[1, c.vocab_size]]), r"token id 37 is outside the vocabulary \[0, 37\).*tokenizer"),
        (lambda c: torch.tensor([[1, -1]]), r"token id -1 is outside the vocabulary.*tokenizer"),
        (lambda c: torch.tensor([[1.0, 2.0]]), r"integer tensor of shape \(B, T\).*torch.tensor\(\[ids\]\)"),
        (lambda c: torch.tensor([[True, False]]), r"integer tensor"),
        (lambda c: torch.tensor([1, 2]), r"shape \(B, T\).*torch.tensor\(\[ids\]\)"),
        (lambda c: [[1, 2]], r"integer tensor.*got list"),
    ],
    ids=["empty-T", "empty-B", "too-long", "id-too-big", "negative", "float", "bool", "1-d", "list"],
)
def test_bad_input(tiny: GPT, make_ids, hint: str) -> None:
    with pytest.raises(InputError, match=hint):
        tiny(make_ids(tiny.config))


def test_config_json_of_the_hub_is_parsed() -> None:
    fields = json.loads(require(GPT2_CONFIG_JSON).read_text())
    assert GPTConfig.from_dict(fields) == GPTConfig()  # the defaults are gpt2 small


def test_perturbation_reaches_every_parameter() -> None:
    """Guard for the parity tests: no parameter is left at HF's init value (gamma 1, bias 0)."""
    hf = hf_reference("tiny-odd", seed=3)
    for name, p in hf.named_parameters():
        assert not torch.all(p == 1) and not torch.all(p == 0), name


def test_random_state_has_no_trivial_parameter() -> None:
    for name, value in random_state(TINY, seed=0).items():
        assert not torch.all(value == 0) and not torch.all(value == 1), name
