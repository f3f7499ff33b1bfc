"""The logit lens against references written here, independently of minigpt/lens.py.

The references materialise every row's logits at once (R, T, V) and take log-softmax,
top-k and ranks (via sort + searchsorted) in float64; the lens streams one row and one
chunk of positions at a time in float32. They must agree, whatever the chunk size.
Decoders, constructed weights with known answers, and the result object are tested
here; parity with `transformers` lives in test_lens_decoders.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, InputError, LensError, LensResult, logit_lens
from minigpt.testing import random_state

from conftest import TINY

# ----------------------------------------------------------------------------
# Independent reference computations

INT_FIELDS = ("token_ids", "next_ids", "final_ids", "top_ids", "rank_final", "rank_next", "rank_input")
FLOAT_FIELDS = (
    "top_logits", "top_probs",
    "logit_final", "prob_final", "logit_next", "prob_next", "logit_input", "prob_input",
    "kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy",
)  # fmt: skip
ALL_ARRAYS = INT_FIELDS + FLOAT_FIELDS


def sharp_model(config: GPTConfig = TINY, seed: int = 3, scale: float = 0.5) -> GPT:
    """A random model whose distributions are far from uniform (the default 0.02 scale gives
    near-uniform rows, where KLs are ~1e-3 and a 1e-5 tolerance would hide real mistakes)."""
    model = GPT(config)
    model.load_state_dict(random_state(config, seed=seed, scale=scale))
    return model.eval()


def random_ids(T: int, V: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(seed))


def layer_norm(h: torch.Tensor, gamma=None, beta=None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm written out (not F.layer_norm): (h - mean) / sqrt(var + eps) * γ + β."""
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    x = (h - mu) / torch.sqrt(var + eps)
    if gamma is not None:
        x = x * gamma
    if beta is not None:
        x = x + beta
    return x


@torch.no_grad()
def full_decode(model: GPT, h: torch.Tensor) -> torch.Tensor:
    """The model's own decoder, ln_f (γ and β) then the tied unembedding: (..., C) -> (..., V)."""
    return layer_norm(h, model.ln_f.weight, model.ln_f.bias, model.ln_f.eps) @ model.wte.weight.T


@torch.no_grad()
def stream(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream (L + 1, T, C) for one sequence."""
    return model(ids[None]).resid[:, 0]


def reference_stats(
    z_rows: torch.Tensor, z_final: torch.Tensor, z_input: torch.Tensor, ids: torch.Tensor, k: int
) -> dict:
    """Every statistic of the lens from materialised logits.

    z_rows (R, T, V): every row's logits; z_final, z_input (T, V): the two reference
    distributions' logits; ids (T,): the input tokens.
    """
    R, T, V = z_rows.shape
    z_rows, z_final, z_input = z_rows.detach().float(), z_final.detach().float(), z_input.detach().float()
    logp = torch.log_softmax(z_rows.double(), dim=-1)  # (R, T, V)
    p = logp.exp()
    logq_f = torch.log_softmax(z_final.double(), dim=-1)  # (T, V)
    logq_i = torch.log_softmax(z_input.double(), dim=-1)
    top = torch.topk(z_rows, k, dim=-1)
    final_ids = z_final.argmax(dim=-1)  # (T,)
    next_ids = torch.cat([ids[1:], torch.tensor([-1])])
    ascending = z_rows.sort(dim=-1).values.contiguous()  # (R, T, V)
    out = {
        "token_ids": ids, "next_ids": next_ids, "final_ids": final_ids,
        "top_ids": top.indices, "top_logits": top.values, "top_probs": logp.gather(-1, top.indices).exp(),
        # KL(a ‖ b) = Σ a (log a − log b)
        "kl_final": (logq_f.exp() * (logq_f - logp)).sum(-1),
        "kl_final_rev": (p * (logp - logq_f)).sum(-1),
        "kl_input": (logq_i.exp() * (logq_i - logp)).sum(-1),
        "kl_input_rev": (p * (logp - logq_i)).sum(-1),
        "entropy": -(p * logp).sum(-1),
    }  # fmt: skip
    for name, target in (("final", final_ids), ("next", next_ids), ("input", ids)):
        idx = target.clamp(min=0).expand(R, T)[..., None]  # (R, T, 1)
        zt = z_rows.gather(-1, idx)  # (R, T, 1)
        # 1 + #strictly greater = 1 + V - #(less or equal), and #(≤ zt) is a right-searchsorted
        rank = 1 + V - torch.searchsorted(ascending, zt.contiguous(), right=True)[..., 0]
        logit, logprob = zt[..., 0].double(), logp.gather(-1, idx)[..., 0]
        if name == "next":
            logit[:, -1], logprob[:, -1], rank[:, -1] = math.nan, math.nan, -1
            out["cross_entropy"] = -logprob
        out[f"logit_{name}"], out[f"prob_{name}"], out[f"rank_{name}"] = logit, logprob.exp(), rank
    return {name: v.numpy() for name, v in out.items()}


def naive_lens(model: GPT, ids: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, dict]:
    """The default lens, materialised: every row's logits at once, then the statistics."""
    z = full_decode(model, stream(model, ids))  # (L + 1, T, V)
    return z, reference_stats(z, z[-1], z[0], ids, k)


def max_diffs(result: LensResult, ref: dict) -> dict[str, float]:
    return {
        n: float(np.nanmax(np.abs(getattr(result, n).astype(np.float64) - ref[n]))) for n in FLOAT_FIELDS
    }


def assert_matches(result: LensResult, ref: dict, atol: float = 1e-5, ints=INT_FIELDS) -> None:
    for name in ints:
        got = getattr(result, name)
        assert got.dtype == np.int64, name
        np.testing.assert_array_equal(got, ref[name], err_msg=name)
    for name in FLOAT_FIELDS:
        got = getattr(result, name)
        assert got.dtype == np.float32, name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref[name]), err_msg=f"{name}: NaN pattern")
        np.testing.assert_allclose(got, ref[name], atol=atol, rtol=0, err_msg=name)


def assert_same_result(a: LensResult, b: LensResult, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert a.labels == b.labels and a.decoder == b.decoder and a.start == b.start
    for name in INT_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in FLOAT_FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=rtol, err_msg=name)


# ----------------------------------------------------------------------------
# Exactness: the last row is the model, the lens is the naive computation


@pytest.fixture(scope="module")
def model() -> GPT:
    return sharp_model()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return random_ids(12, TINY.vocab_size)


def test_last_row_is_the_models_output(tiny_checkpoint):
    model = GPT.from_pretrained(tiny_checkpoint)
    ids = random_ids(13, TINY.vocab_size, seed=1)
    with torch.no_grad():
        logits = model(ids[None]).logits[0]  # (T, V)
    result = logit_lens(model, ids, keep_logits=True)
    assert result.labels == ["embed", "h.0", "h.1"]
    np.testing.assert_array_equal(result.logits[-1], logits.numpy())
    np.testing.assert_array_equal(result.top_ids[-1, :, 0], logits.argmax(-1).numpy())
    np.testing.assert_array_equal(result.final_ids, logits.argmax(-1).numpy())
    assert np.abs(result.kl_final[-1]).max() <= 1e-6
    assert np.abs(result.kl_final_rev[-1]).max() <= 1e-6
    assert np.abs(result.kl_input[0]).max() <= 1e-6
    assert np.abs(result.kl_input_rev[0]).max() <= 1e-6
    assert (result.rank_final[-1] == 1).all()
    assert (result.logit_final[-1] == result.top_logits[-1, :, 0]).all()
    # The embed row is h_0 = wte + wpe, decoded with ln_f.
    with torch.no_grad():
        h0 = model.wte.weight[ids] + model.wpe.weight[: len(ids)]
    np.testing.assert_allclose(result.logits[0], full_decode(model, h0).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 12, 1000])
def test_streaming_equals_the_naive_computation(model, ids, chunk_size):
    z, ref = naive_lens(model, ids)
    result = logit_lens(model, ids, chunk_size=chunk_size, keep_logits=True)
    assert_matches(result, ref)
    np.testing.assert_allclose(result.logits, z.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 2, TINY.vocab_size])
def test_top_k_is_the_sorted_distribution(model, ids, k):
    _, ref = naive_lens(model, ids, k=k)
    result = logit_lens(model, ids, k=k)
    assert result.top_ids.shape == result.top_logits.shape == result.top_probs.shape == (3, len(ids), k)
    assert_matches(result, ref)
    assert (np.diff(result.top_logits, axis=-1) <= 0).all()  # best first
    if k == TINY.vocab_size:  # the whole vocabulary: a permutation, probabilities summing to one
        assert (np.sort(result.top_ids, axis=-1) == np.arange(k)).all()
        np.testing.assert_allclose(result.top_probs.sum(-1), 1.0, atol=1e-5)


def test_chunk_sizes_give_the_same_result(model, ids):
    results = [logit_lens(model, ids, chunk_size=c, prior=True, sub_blocks=True) for c in (1, 3, 7, 12, 1000)]
    for other in results[1:]:
        assert_same_result(results[0], other, atol=1e-5)


def test_targets_next_and_input(model, ids):
    result = logit_lens(model, ids)
    T = len(ids)
    np.testing.assert_array_equal(result.token_ids, ids.numpy())
    np.testing.assert_array_equal(result.next_ids[:-1], ids[1:].numpy())
    assert result.next_ids[-1] == -1 and result.next_tokens[-1] is None
    # No next token at the last position: NaN and -1 there, finite everywhere else.
    for name in ("logit_next", "prob_next", "cross_entropy"):
        assert np.isnan(getattr(result, name)[:, -1]).all(), name
        assert np.isfinite(getattr(result, name)[:, :-1]).all(), name
    assert (result.rank_next[:, -1] == -1).all() and (result.rank_next[:, :-1] >= 1).all()
    # cross-entropy is -log p(next); the input target is the token itself
    np.testing.assert_allclose(np.exp(-result.cross_entropy[:, :-1]), result.prob_next[:, :-1], rtol=1e-5)
    for name in ("logit", "prob", "rank"):
        assert getattr(result, f"{name}_input").shape == (3, T)


def test_ranks_with_ties_count_strictly_greater_logits():
    """Tokens 5, 6, 7 have a zero embedding row, so their logits are exactly 0.0 everywhere: a
    three-way tie. A rank that counted ≥ instead of > (or broke ties by index) would differ."""
    model = sharp_model(seed=4)
    tied = [5, 6, 7]
    with torch.no_grad():
        model.wte.weight[tied] = 0.0
    ids = torch.tensor([5, 6, 1, 7, 5, 2, 6, 9, 7, 5])  # the tied tokens as inputs and as next tokens
    result = logit_lens(model, ids, keep_logits=True, chunk_size=4)
    z = result.logits  # (R, T, V)
    assert (z[..., tied] == 0).all()  # the tie is real
    for name, target in (("input", result.token_ids), ("next", result.next_ids)):
        ranks = getattr(result, f"rank_{name}")
        for t, j in enumerate(target):
            if j < 0:
                continue
            strictly_greater = (z[:, t, :] > z[:, t, j : j + 1]).sum(-1)
            np.testing.assert_array_equal(ranks[:, t], 1 + strictly_greater, err_msg=f"{name} t={t}")
    # The tied tokens share a rank, and it is not 1 + (number of ≥ logits) - 1.
    zr = torch.from_numpy(z)
    ref = reference_stats(zr, zr[-1], zr[0], ids, k=5)
    np.testing.assert_array_equal(result.rank_input, ref["rank_input"])
    np.testing.assert_array_equal(result.rank_next, ref["rank_next"])
    at_least = (z >= 0).sum(-1)  # ≥ counts the three tied tokens too
    rank_of_5 = result.rank_input[:, result.token_ids == 5]
    assert (rank_of_5 == (at_least[:, result.token_ids == 5] - 2)).all()
    # And an independent naive run (logits computed here) agrees on every rank.
    _, naive = naive_lens(model, ids)
    for name in ("rank_final", "rank_next", "rank_input"):
        np.testing.assert_array_equal(getattr(result, name), naive[name], err_msg=name)
    np.testing.assert_allclose(result.top_logits, naive["top_logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("offset", [0.0, 100.0, -300.0])
def test_statistics_stay_exact_when_logits_share_a_large_offset(offset):
    """Real GPT-2 logits sit around -100, and softmax ignores a common offset. Statistics must
    be computed from log-softmax (differences of logits), not as differences of two large
    numbers such as E_p[z] - logsumexp(z), which lose ~|z| * 1e-7 in float32.

    Every wte row shares a component u, and β has a component along u, so every logit gets the
    same large constant. The reference is computed in float64 from the lens' own float32 logits,
    so only the statistics' arithmetic is under test.
    """
    model = sharp_model(seed=8)
    C = model.config.n_embd
    with torch.no_grad():
        u = torch.zeros(C)
        u[0], u[1] = 1.0, -1.0  # zero-mean, so ln_f's normalisation leaves β's part intact
        u /= u.norm()
        model.wte.weight.add_(10.0 * u)
        model.ln_f.bias.add_(offset / 10.0 * u)
    ids = random_ids(12, TINY.vocab_size, seed=5)
    result = logit_lens(model, ids, keep_logits=True, chunk_size=5)
    z = torch.from_numpy(result.logits)
    assert abs(float(z.mean()) - offset) < 0.2 * abs(offset) + 10  # the offset is really there
    ref = reference_stats(z, z[-1], z[0], ids, k=5)
    for name in ("kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy"):
        np.testing.assert_allclose(getattr(result, name), ref[name], atol=1e-5, rtol=1e-6, err_msg=name)
    for name in ("top_probs", "prob_final", "prob_next", "prob_input"):
        np.testing.assert_allclose(getattr(result, name), ref[name], atol=1e-6, rtol=1e-5, err_msg=name)
    assert (result.kl_final >= -1e-6).all() and (result.kl_input_rev >= -1e-6).all()


# ----------------------------------------------------------------------------
# Constructed weights with known answers


def silence_blocks(model: GPT) -> None:
    """Make every block write nothing: the output projections of attention and MLP are zero."""
    with torch.no_grad():
        for block in model.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()


def test_silent_blocks_leave_every_row_equal_to_the_embed_row():
    config = GPTConfig(vocab_size=41, n_positions=16, n_embd=20, n_head=4, n_layer=3)
    model = sharp_model(config, seed=5)
    silence_blocks(model)
    ids = random_ids(11, config.vocab_size, seed=2)
    result = logit_lens(model, ids, keep_logits=True, sub_blocks=True)
    assert len(result.labels) == 1 + 2 * config.n_layer
    for name in ALL_ARRAYS + ("logits",):
        a = getattr(result, name)
        if a.ndim >= 2 and a.shape[0] == len(result.labels):
            for r in range(1, a.shape[0]):
                np.testing.assert_allclose(a[r], a[0], atol=1e-6, rtol=1e-5, err_msg=f"{name} row {result.labels[r]}")
    # The final row is the embed row, so both KLs vanish everywhere.
    assert np.abs(result.kl_final).max() <= 1e-6 and np.abs(result.kl_input).max() <= 1e-6
    assert (result.rank_final == 1).all()
    # A silent model's output is the embedding, decoded.
    with torch.no_grad():
        h0 = model.wte.weight[ids] + model.wpe.weight[: len(ids)]
    np.testing.assert_allclose(result.logits[-1], full_decode(model, h0).numpy(), atol=1e-5, rtol=0)


def test_a_block_writing_a_token_direction_makes_it_the_top_token():
    """Block 1's MLP adds α·w_j at every position; all other blocks are silent.

    With γ = 1, β = 0 and w_j zero-mean and longer than every other row of wte, the decoded
    direction ln_f(w_j) = w_j / std(w_j) has logit w_i·w_j / std(w_j), which Cauchy-Schwarz
    makes largest for i = j. For large α that is the top token from row h.1 up, at every
    position; rows before it do not see the write.
    """
    config = GPTConfig(vocab_size=41, n_positions=16, n_embd=20, n_head=4, n_layer=3)
    model = sharp_model(config, seed=6)
    silence_blocks(model)
    j, alpha = 17, 50.0
    with torch.no_grad():
        model.ln_f.weight.fill_(1.0)
        model.ln_f.bias.zero_()
        w = torch.randn(config.n_embd, generator=torch.Generator().manual_seed(0))
        w -= w.mean()
        longest = model.wte.weight.norm(dim=-1).max()
        model.wte.weight[j] = w / w.norm() * 3 * longest
    ids = random_ids(10, config.vocab_size, seed=3)
    before = logit_lens(model, ids, keep_logits=True)
    with torch.no_grad():
        model.h[1].mlp.c_proj.bias.copy_(alpha * model.wte.weight[j])
    after = logit_lens(model, ids, keep_logits=True)

    # Rows before the write (embed, h.0) are unchanged, and before the write nothing picks j.
    for name in ALL_ARRAYS:
        if name in ("final_ids", "token_ids", "next_ids", "logit_final", "prob_final", "rank_final",
                    "kl_final", "kl_final_rev"):  # fmt: skip
            continue  # these compare with the final row, which the write changes
        np.testing.assert_array_equal(getattr(after, name)[:2], getattr(before, name)[:2], err_msg=name)
    np.testing.assert_array_equal(after.logits[:2], before.logits[:2])
    # From h.1 up, j is the top token everywhere; it is the model's prediction.
    assert (after.top_ids[2:, :, 0] == j).all()
    assert (after.final_ids == j).all()
    # Below the write, the rank of j (now the final token) is what the unchanged logits give it.
    below = before.logits[:2]
    np.testing.assert_array_equal(after.rank_final[:2], 1 + (below > below[..., j : j + 1]).sum(-1))
    # The algebra: row h.1 is h_0 + α w_j, decoded.
    with torch.no_grad():
        h0 = model.wte.weight[ids] + model.wpe.weight[: len(ids)]
        expected = layer_norm(h0 + alpha * model.wte.weight[j]) @ model.wte.weight.T
    np.testing.assert_allclose(after.logits[2], expected.numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(after.logits[3], after.logits[2], atol=0, rtol=0)
    # The final distribution moved, so the lower rows are now far from it (where they did not already pick j).
    elsewhere = before.top_ids[0, :, 0] != j
    assert elsewhere.sum() >= 5 and (after.kl_final[:2, elsewhere] > 1.0).all()
    assert (after.rank_final[2:] == 1).all()


# ----------------------------------------------------------------------------
# Each decoder follows its definition


def decoded_rows(model: GPT, ids: torch.Tensor, decoder: str, last_blocks: int = 1) -> torch.Tensor:
    """Every row decoded by its definition, written here: (L + 1, T, V)."""
    resid = stream(model, ids)  # (L + 1, T, C)
    g, b, eps, W = model.ln_f.weight, model.ln_f.bias, model.ln_f.eps, model.wte.weight
    with torch.no_grad():
        if decoder == "ln_f":
            return layer_norm(resid, g, b, eps) @ W.T
        if decoder == "ln_f_no_bias":
            return layer_norm(resid, g, None, eps) @ W.T
        if decoder == "norm_only":
            return layer_norm(resid, None, None, eps) @ W.T
        assert decoder == "last_blocks"
        rows = []
        L = len(model.h)
        for i, h in enumerate(resid):  # resid[i] has been through blocks 0 .. i-1
            x = h[None]
            # the last k blocks over the whole sequence, but never a block the row has been through
            for block in model.h[max(L - last_blocks, i) :]:
                x = x + block.attn(block.ln_1(x))
                x = x + block.mlp(block.ln_2(x))
            rows.append(layer_norm(x[0], g, b, eps) @ W.T)
        return torch.stack(rows)


DECODER_CASES = [("ln_f", 1), ("ln_f_no_bias", 1), ("norm_only", 1), ("last_blocks", 1), ("last_blocks", 2)]


@pytest.mark.parametrize(("decoder", "last_blocks"), DECODER_CASES)
def test_decoder_follows_its_definition(model, ids, decoder, last_blocks):
    z = decoded_rows(model, ids, decoder, last_blocks)
    k = dict(last_blocks=last_blocks) if decoder == "last_blocks" else {}
    result = logit_lens(model, ids, decoder=decoder, **k, keep_logits=True, chunk_size=5)
    assert result.decoder.name == ("logit" if decoder == "ln_f" else decoder)
    assert result.decoder.params == ({"k": last_blocks} if decoder == "last_blocks" else {})
    np.testing.assert_allclose(result.logits, z.numpy(), atol=1e-5, rtol=0)
    # Whatever the decoder, the two references are decoded with the full ln_f.
    z_ref = decoded_rows(model, ids, "ln_f")
    assert_matches(result, reference_stats(z, z_ref[-1], z_ref[0], ids, k=5))
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
    if decoder in ("ln_f", "last_blocks"):
        # The top row is the model's output: last_blocks runs no block above the last one.
        np.testing.assert_array_equal(result.logits[-1], logits.numpy())
        assert (result.kl_final[-1] == 0).all() and (result.rank_final[-1] == 1).all()
    else:
        # ... so the last row is not the model's output, and kl_final does not vanish there.
        assert np.abs(result.logits[-1] - logits.numpy()).max() > 1e-2
        assert result.kl_final[-1].max() > 1e-3


def test_decoders_differ(model, ids):
    """A lens that ignored `decoder` would pass the test above only if the definitions coincided."""
    logits = {d: logit_lens(model, ids, decoder=d, keep_logits=True).logits for d in minigpt.DECODERS}
    names = list(logits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(logits[a] - logits[b]).max() > 1e-2, (a, b)


def test_decoder_ln_f_no_bias_drops_exactly_the_prior(model, ids):
    """ln_f(h) @ W^T = (ln_f without β)(h) @ W^T + β @ W^T: the two decoders differ by the prior row."""
    full = logit_lens(model, ids, keep_logits=True, prior=True)
    no_bias = logit_lens(model, ids, decoder="ln_f_no_bias", keep_logits=True, prior=True)
    prior = full.logits[0]
    np.testing.assert_allclose(full.logits[1:], no_bias.logits[1:] + prior, atol=1e-5, rtol=0)


@pytest.mark.parametrize("decoder", ["ln_f", "norm_only"])
def test_prior_row_is_beta_times_the_unembedding(model, ids, decoder):
    result = logit_lens(model, ids, decoder=decoder, prior=True, keep_logits=True)
    plain = logit_lens(model, ids, decoder=decoder, keep_logits=True)
    assert result.labels == ["prior"] + plain.labels
    with torch.no_grad():
        prior = (model.ln_f.bias @ model.wte.weight.T).numpy()  # (V,)
    for t in range(len(ids)):
        np.testing.assert_allclose(result.logits[0, t], prior, atol=1e-6, rtol=1e-5)  # another matmul kernel
    assert (result.top_ids[0] == result.top_ids[0, :1]).all()  # the same at every position
    assert (result.top_ids[0, 0] == np.argsort(-prior)[:5]).all()
    # The other rows are those of a lens without the prior row.
    np.testing.assert_array_equal(result.logits[1:], plain.logits)
    for name in ALL_ARRAYS:
        a, b = getattr(result, name), getattr(plain, name)
        np.testing.assert_allclose(a if a.ndim == 1 else a[1:], b, atol=1e-6, rtol=1e-5, err_msg=name)


def test_sub_block_rows_decode_resid_mid(model, ids):
    result = logit_lens(model, ids, sub_blocks=True, keep_logits=True)
    plain = logit_lens(model, ids, keep_logits=True)
    L = model.config.n_layer
    assert result.labels == ["embed"] + [x for l in range(L) for x in (f"h.{l}.resid_mid", f"h.{l}")]
    resid = stream(model, ids)
    for l, block in enumerate(model.h):
        with torch.no_grad():
            pre = resid[l][None]
            mid = pre + block.attn(block.ln_1(pre))  # resid_pre + attn_out
        r = result.row(f"h.{l}.resid_mid")
        np.testing.assert_allclose(result.logits[r], full_decode(model, mid[0]).numpy(), atol=1e-5, rtol=0)
        # more rows, so other chunk shapes in the unembedding matmul: relative (AVX-512 rounds differently)
        np.testing.assert_allclose(result.logits[result.row(f"h.{l}")], plain.logits[plain.row(f"h.{l}")], atol=1e-6, rtol=1e-5)
    # The statistics of the sub-block rows follow the naive computation too.
    z = torch.from_numpy(result.logits)
    assert_matches(result, reference_stats(z, z[-1], z[0], ids, k=5))


def test_residual_parts_add_up_to_the_stream(model):
    ids = torch.stack([random_ids(9, TINY.vocab_size, seed=s) for s in (7, 8)])  # B = 2
    parts = minigpt.residual_parts(model, ids)
    L, (B, T), C = model.config.n_layer, ids.shape, model.config.n_embd
    for field in parts._fields:
        assert getattr(parts, field).shape == (L, B, T, C), field
    with torch.no_grad():
        resid = model(ids).resid  # (L + 1, B, T, C)
    torch.testing.assert_close(parts.resid_pre + parts.attn_out + parts.mlp_out, parts.resid_post, atol=1e-6, rtol=0)
    torch.testing.assert_close(parts.resid_pre + parts.attn_out, parts.resid_mid, atol=0, rtol=0)
    torch.testing.assert_close(parts.resid_post, resid[1:], atol=1e-6, rtol=0)
    torch.testing.assert_close(parts.resid_pre, resid[:-1], atol=1e-6, rtol=0)
    assert parts.attn_out.abs().max() > 1e-3 and parts.mlp_out.abs().max() > 1e-3  # the parts are not trivial


# ----------------------------------------------------------------------------
# The result object


def assert_results_equal(a: LensResult, b: LensResult) -> None:
    assert a.labels == b.labels and a.decoder == b.decoder and a.start == b.start and a.id_text == b.id_text
    assert a.tokens == b.tokens
    assert set(a.arrays()) == set(b.arrays())
    for name, value in a.arrays().items():
        other = getattr(b, name)
        assert other.dtype == value.dtype, name
        np.testing.assert_array_equal(other, value, err_msg=name)
    assert (a.logits is None) == (b.logits is None)


@pytest.mark.parametrize("keep_logits", [False, True])
def test_save_and_load_round_trip(model, ids, tmp_path, keep_logits):
    result = logit_lens(model, ids, keep_logits=keep_logits, prior=True, decoder="last_blocks", last_blocks=2)
    result = result[3:10]  # a slice, so that start is not 0
    result.save(tmp_path / "lens.npz")
    loaded = LensResult.load(tmp_path / "lens.npz")
    assert loaded.start == 3 and loaded.decoder.name == "last_blocks" and loaded.decoder.params == {"k": 2}
    assert loaded.decoder.title == "the last 2 blocks, then ln_f"
    assert_results_equal(result, loaded)


def test_save_and_load_round_trip_with_token_texts(vocab_checkpoint, tmp_path):
    """Token texts survive the round trip, including control characters: GPT-2's token 188
    is the single byte 0x00, and numpy's fixed-width str arrays drop trailing NULs."""
    model = GPT.from_pretrained(vocab_checkpoint)
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    result = logit_lens(model, "a\x00b\ttab\n🤗 done", tokenizer=tok, k=3)
    assert 188 in result.token_ids and result.text(188) == "\x00"
    result.save(tmp_path / "lens.npz")
    loaded = LensResult.load(tmp_path / "lens.npz")
    assert loaded.tokens == result.tokens
    assert_results_equal(result, loaded)


def test_load_rejects_a_file_that_is_not_a_result(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(LensError, match="cannot read a lens result"):
        LensResult.load(bad)


def test_to_json(model, ids, tmp_path):
    result = logit_lens(model, ids, keep_logits=True)
    text = result.to_json(tmp_path / "lens.json")
    assert (tmp_path / "lens.json").read_text(encoding="utf-8") == text
    data = json.loads(text)  # strict JSON: no NaN literals
    assert "NaN" not in text and "Infinity" not in text
    assert data["labels"] == result.labels and data["start"] == 0
    assert data["decoder"] == {"name": "logit", "params": {}, "title": "ln_f (the model's own decoder)"}
    assert data["blocks"] == [-1, 0, 1] and data["sites"] == ["embed", "resid_post", "resid_post"]
    assert data["depth"] == result.depth.tolist() and data["first_hit"] == result.first_hit.tolist()
    assert data["tokens"] == result.tokens and data["next_tokens"][-1] is None
    for name, value in result.arrays().items():
        got = data[name]
        if value.dtype.kind == "f":
            restored = np.array(got, dtype=object)
            nan = np.isnan(value)
            assert all(x is None for x in restored[nan]), name  # NaN -> null
            assert not any(x is None for x in restored[~nan]), name
            restored[nan] = np.nan
            np.testing.assert_array_equal(restored.astype(value.dtype), value, err_msg=name)  # exactly the numbers
        else:
            np.testing.assert_array_equal(np.array(got, dtype=value.dtype), value, err_msg=name)
    assert data["cross_entropy"][0][-1] is None and data["rank_next"][0][-1] == -1


def test_slicing_positions(model, ids):
    full = logit_lens(model, ids, keep_logits=True)
    T = len(ids)
    a, b = full[2:5], full.positions(2, 5)
    assert_results_equal(a, b)
    assert len(a) == 3 and a.start == 2
    for name, value in full.arrays().items():
        if name in ("blocks", "sites"):  # per row: not cut
            expected = value
        else:
            expected = value[2:5] if name in ("token_ids", "next_ids", "final_ids") else value[:, 2:5]
        np.testing.assert_array_equal(getattr(a, name), expected, err_msg=name)
    np.testing.assert_array_equal(a.depth, full.depth[2:5])
    np.testing.assert_array_equal(a.first_hit, full.first_hit[2:5])
    # Slicing a slice: start counts from the whole sequence.
    inner = full[1:9][2:4]
    assert inner.start == 3
    assert_results_equal(inner, full[3:5])
    # Negative and open ends.
    assert full[-3:].start == T - 3 and len(full[-3:]) == 3
    assert_results_equal(full[:], full)
    assert full[:4].start == 0 and len(full[:4]) == 4
    assert full.positions(-4, -1).start == T - 4


@pytest.mark.parametrize(("lo", "hi"), [(0, 12), (2, 5), (7, 12), (11, 12), (0, 1), (-4, None), (None, 3)])
def test_positions_argument_equals_the_full_result_sliced(model, ids, lo, hi):
    full = logit_lens(model, ids, keep_logits=True, sub_blocks=True, prior=True)
    part = logit_lens(model, ids, keep_logits=True, sub_blocks=True, prior=True, positions=slice(lo, hi), chunk_size=2)
    expected = full[lo:hi]
    assert part.start == expected.start and len(part) == len(expected)
    assert_same_result(part, expected, atol=1e-5)
    np.testing.assert_allclose(part.logits, expected.logits, atol=1e-6, rtol=1e-5)  # other chunk shapes
    # The last position of a slice that stops early still has its true next token.
    if hi is not None and 0 < hi < len(ids):
        assert part.next_ids[-1] == ids[hi] and not np.isnan(part.cross_entropy[:, -1]).any()


@pytest.mark.parametrize(("given", "clamped"), [((5, 100), (5, 12)), ((-30, 3), (0, 3)), ((10, 20), (10, 12)), ((None, 99), (0, 12))])
def test_positions_clamp_like_a_python_slice(model, ids, given, clamped):
    """Out-of-range ends clamp as in `list[a:b]`, in the lens and in the result alike."""
    full = logit_lens(model, ids)
    part = logit_lens(model, ids, positions=slice(*given))
    assert (part.start, part.start + len(part)) == clamped
    assert list(range(12))[slice(*given)] == list(range(*clamped))  # what Python does
    # Relative: a shorter span can pick another chunk shape, whose rounding differs by an ulp or two (AVX-512).
    assert_same_result(part, full[clamped[0] : clamped[1]], atol=1e-6, rtol=1e-5)
    assert_same_result(full[given[0] : given[1]], full[clamped[0] : clamped[1]])
    assert_same_result(full.positions(slice(*given)), full.positions(*given))


def test_token_strings(vocab_checkpoint):
    model = GPT.from_pretrained(vocab_checkpoint)
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    text = "Hello world<|endoftext|>The 🤗 café"
    result = logit_lens(model, text, tokenizer=tok, k=3)
    # "<|endoftext|>" inside a text is ordinary text, not the special token.
    assert 50256 not in result.token_ids.tolist()
    np.testing.assert_array_equal(result.token_ids, tok.encode_ordinary(text))
    assert "".join(result.tokens) == "Hello world<|endoftext|>The " + r"\xf0\x9f\xa4\x97" + " café"
    # 🤗 (F0 9F A4 97) is split over three tokens: each shows its bytes, never mojibake or U+FFFD.
    assert [t for t in result.tokens if "\\x" in t] == [r" \xf0\x9f", r"\xa4", r"\x97"]
    assert not any("\ufffd" in t or "ð" in t for t in result.tokens)
    # Every id the result mentions has its text.
    mentioned = set(result.token_ids) | set(result.next_ids[:-1]) | set(result.final_ids) | set(result.top_ids.ravel())
    assert mentioned <= set(result.id_text)
    for i in mentioned:
        assert result.text(i) == tok.decode_single_token_bytes(int(i)).decode("utf-8", errors="backslashreplace")
    assert result.next_tokens[:-1] == result.tokens[1:]


def test_end_of_text_token_as_ids(vocab_checkpoint):
    model = GPT.from_pretrained(vocab_checkpoint)
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    ids = tok.encode("Hi<|endoftext|>there", allowed_special={"<|endoftext|>"})
    assert 50256 in ids
    result = logit_lens(model, ids, tokenizer=tok)
    assert result.tokens[ids.index(50256)] == "<|endoftext|>"
    json.loads(result.to_json())


def test_without_tokenizer_token_texts_are_ids(model, ids):
    result = logit_lens(model, ids)
    assert result.id_text == {}
    assert result.tokens == [f"<{int(i)}>" for i in ids]


def test_token_ids_forms(model, ids):
    a = logit_lens(model, ids)
    for form in (ids[None], ids.tolist(), tuple(ids.tolist()), ids.numpy()):
        assert_same_result(a, logit_lens(model, form))


# ----------------------------------------------------------------------------
# dtype and memory


def test_bfloat16_model(tiny_checkpoint):
    fp32 = GPT.from_pretrained(tiny_checkpoint)
    bf16 = GPT.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    ids = random_ids(14, TINY.vocab_size, seed=9)
    result = logit_lens(bf16, ids, keep_logits=True, sub_blocks=True, prior=True)
    reference = logit_lens(fp32, ids)
    R, T = len(result.labels), len(ids)
    for name in FLOAT_FIELDS:
        a = getattr(result, name)
        assert a.dtype == np.float32, name
        assert a.shape[:2] == (R, T), name
        finite = np.isfinite(a)
        if name in ("logit_next", "prob_next", "cross_entropy"):
            assert finite[:, :-1].all() and not finite[:, -1].any(), name
        else:
            assert finite.all(), name
    for name in ("top_ids", "rank_final", "rank_next", "rank_input"):
        assert getattr(result, name).dtype == np.int64
    assert result.logits.dtype == np.float32 and result.logits.shape == (R, T, TINY.vocab_size)
    with torch.no_grad():
        logits = bf16(ids[None]).logits[0].float().numpy()
    np.testing.assert_array_equal(result.logits[-1], logits)
    assert np.abs(result.kl_final[-1]).max() <= 1e-6
    # bf16 keeps ~3 significant digits: the predictions mostly agree with fp32's.
    assert (result.final_ids == reference.final_ids).mean() >= 0.7
    same_rows = [result.row(label) for label in reference.labels]
    assert np.abs(result.entropy[same_rows] - reference.entropy).max() < 0.05
    assert np.abs(result.kl_final[same_rows] - reference.kl_final).max() < 0.05


def test_logits_are_kept_only_when_asked(model, ids):
    assert logit_lens(model, ids).logits is None
    result = logit_lens(model, ids, keep_logits=True, sub_blocks=True, prior=True)
    R = 2 + 2 * model.config.n_layer
    assert result.logits.shape == (R, len(ids), model.config.vocab_size) and result.logits.dtype == np.float32


def test_shapes_and_dtypes(model, ids):
    result = logit_lens(model, ids, k=4)
    R, T = 3, len(ids)
    assert result.top_ids.shape == result.top_logits.shape == result.top_probs.shape == (R, T, 4)
    for name in FLOAT_FIELDS[2:]:
        assert getattr(result, name).shape == (R, T) and getattr(result, name).dtype == np.float32, name
    for name in ("rank_final", "rank_next", "rank_input"):
        assert getattr(result, name).shape == (R, T), name
    for name in ("token_ids", "next_ids", "final_ids"):
        assert getattr(result, name).shape == (T,) and getattr(result, name).dtype == np.int64, name


# ----------------------------------------------------------------------------
# Bad input


def test_empty_sequence(model):
    with pytest.raises(InputError, match="empty"):
        logit_lens(model, torch.tensor([], dtype=torch.long))
    with pytest.raises(InputError, match="empty"):
        logit_lens(model, [])  # a plain empty list is also "empty", not "must be an integer tensor"


def test_empty_text(model, tokenizer_dir):
    tok = minigpt.load_tokenizer(tokenizer_dir)
    with pytest.raises(InputError, match="text is empty"):
        logit_lens(model, "", tokenizer=tok)


def test_text_without_tokenizer(model):
    with pytest.raises(LensError, match=r"needs a tokenizer.*tokenizer="):
        logit_lens(model, "The dog")


BAD_ARGUMENTS = [
    (dict(tokens=list(range(17))), InputError, r"17 tokens exceed the context of 16"),
    (dict(tokens=[1, 2, 37]), InputError, r"token id 37 is outside the vocabulary \[0, 37\)"),
    (dict(tokens=[[1, 2], [3, 4]]), InputError, r"one sequence"),
    (dict(k=38), LensError, r"k must be between 1 and the vocabulary size 37, got 38"),
    (dict(k=0), LensError, r"k must be between 1 and the vocabulary size 37, got 0"),
    (dict(positions=slice(20, 30)), LensError, r"positions 20:30 select nothing out of 12 positions; use a non-empty slice of 0:12"),
    (dict(positions=slice(-30, -20)), LensError, r"select nothing out of 12 positions"),
    (dict(positions=slice(3, 3)), LensError, r"select nothing"),
    (dict(positions=slice(5, 2)), LensError, r"select nothing"),
    (dict(positions=slice(1.5, 3)), LensError, r"slice of integers"),
    (dict(positions=slice(0, 12, 2)), LensError, r"contiguous slice"),
    (dict(positions=3), LensError, r"contiguous slice such as slice\(10, 20\)"),
    (dict(positions=slice(0, 12, 2)), LensError, r"positions"),
    (dict(decoder="lnf"), LensError, r"unknown decoder 'lnf'; choose one of"),
    (dict(decoder="tuned"), LensError, r"the 'tuned' decoder has weights: .*pass the object as decoder="),
    (dict(decoder="norm_only", last_blocks=2), LensError, r"last_blocks= goes with decoder='last_blocks'"),
    (dict(decoder=object()), LensError, r"a decoder is a name .* got object"),
    (dict(matmul="fp16"), LensError, r"unknown matmul 'fp16'; choose one of exact, onednn, bf16"),
    (dict(decoder="last_blocks", last_blocks=0), LensError, r"last_blocks must be between 1 and .* \(2\), got 0"),
    (dict(decoder="last_blocks", last_blocks=3), LensError, r"last_blocks must be between 1 and .* \(2\), got 3"),
    (dict(chunk_size=0), LensError, r"chunk_size must be a positive integer, got 0"),
    (dict(chunk_size=-5), LensError, r"chunk_size must be a positive integer"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS, ids=lambda x: repr(x)[:40])
def test_bad_arguments(model, ids, kwargs, error, message):
    kwargs = dict(kwargs)
    tokens = kwargs.pop("tokens", ids)
    with pytest.raises(error, match=message):
        logit_lens(model, tokens, **kwargs)


def test_unknown_decoder_lists_the_valid_ones(model, ids):
    with pytest.raises(LensError) as info:
        logit_lens(model, ids, decoder="tuned_lens")
    for name in ("logit", "ln_f", "ln_f_no_bias", "norm_only", "last_blocks"):
        assert name in str(info.value), name


def test_errors_are_minigpt_errors_and_value_errors(model, ids):
    for call in (lambda: logit_lens(model, ids, k=0), lambda: logit_lens(model, [99])):
        with pytest.raises(minigpt.MinigptError):
            call()
        with pytest.raises(ValueError):
            call()


def test_bad_result_indexing(model, ids):
    result = logit_lens(model, ids)
    with pytest.raises(LensError, match="positions 20:30 select nothing out of 12 positions"):
        result.positions(20, 30)
    with pytest.raises(LensError, match="select nothing"):
        result.positions(6, 6)
    with pytest.raises(LensError, match="select nothing"):
        result[10:20][5:]
    with pytest.raises(LensError, match=r"result\[10:20\]"):
        result[::2]
    with pytest.raises(LensError, match=r"result\[10:20\]"):
        result[3]
    with pytest.raises(LensError, match=r"no row 'h\.7'; the rows are embed, h\.0, h\.1"):
        result.row("h.7")
