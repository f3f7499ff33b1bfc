"""Prediction depth: on constructed weights where the answer is known, as a property of any
lens, and through saving and loading (0.1 files included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt import GPT, GPTConfig, LensResult, logit_lens
from minigpt.lens import LastBlocks, prediction_depth

from test_lens import random_ids, sharp_model, silence_blocks

CONFIG = GPTConfig(vocab_size=41, n_positions=16, n_embd=20, n_head=4, n_layer=4)
J = 17  # the token the constructed blocks write


def writer_model(writes: dict[int, float], site: str = "mlp", seed: int = 6) -> GPT:
    """Silent blocks, except that block l adds writes[l] * w_J at every position (through its MLP's
    or its attention's output bias). γ = 1, β = 0 and w_J zero-mean and longer than every other
    row of wte, so that ln_f(h + α w_J) has J as its top token for large α (Cauchy-Schwarz)."""
    model = sharp_model(CONFIG, seed=seed)
    silence_blocks(model)
    with torch.no_grad():
        model.ln_f.weight.fill_(1.0)
        model.ln_f.bias.zero_()
        w = torch.randn(CONFIG.n_embd, generator=torch.Generator().manual_seed(0))
        w -= w.mean()
        model.wte.weight[J] = w / w.norm() * 3 * model.wte.weight.norm(dim=-1).max()
        for block, alpha in writes.items():
            proj = model.h[block].mlp.c_proj if site == "mlp" else model.h[block].attn.c_proj
            proj.bias.copy_(alpha * model.wte.weight[J])
    return model


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return random_ids(12, CONFIG.vocab_size, seed=3)


def elsewhere(ids: torch.Tensor) -> np.ndarray:
    """Positions whose embed row does not already pick J (there the answer is known)."""
    plain = logit_lens(writer_model({}), ids)
    keep = plain.top_ids[0, :, 0] != J
    assert keep.sum() >= 8
    return keep


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_a_block_that_writes_the_answer_sets_the_depth(ids, layer):
    model = writer_model({layer: 50.0})
    result = logit_lens(model, ids)
    keep = elsewhere(ids)
    assert (result.final_ids == J).all()
    row = result.row(f"h.{layer}")  # = layer + 1
    assert (result.depth[keep] == row).all() and (result.first_hit[keep] == row).all()
    assert (result.depth[~keep] == 0).all()  # where embed already says J, every row does


def test_with_sub_blocks_indices_count_the_resid_mid_rows(ids):
    mlp = logit_lens(writer_model({2: 50.0}, site="mlp"), ids, sub_blocks=True)
    attn = logit_lens(writer_model({2: 50.0}, site="attn"), ids, sub_blocks=True)
    keep = elsewhere(ids)
    assert mlp.labels[mlp.depth[keep][0]] == "h.2" and (mlp.depth[keep] == 6).all()  # embed, (mid, post) x 2, mid
    assert attn.labels[attn.depth[keep][0]] == "h.2.resid_mid" and (attn.depth[keep] == 5).all()


def test_first_hit_before_depth_when_a_block_takes_the_answer_back(ids):
    """Block 0 writes J, block 1 writes against it, block 2 writes it again."""
    result = logit_lens(writer_model({0: 50.0, 1: -100.0, 2: 100.0}), ids)
    keep = elsewhere(ids)
    assert (result.final_ids == J).all()
    assert (result.top_ids[result.row("h.1"), :, 0] != J).all()
    assert (result.first_hit[keep] == result.row("h.0")).all()
    assert (result.depth == result.row("h.2")).all()


def test_never_when_the_top_row_disagrees_and_the_prior_never_counts(ids):
    """β points at token 3: the model's output picks it, as does the prior row (β @ W_E^T), but a
    norm-only decoder never sees β, so its rows never agree: depth R ("never")."""
    model = writer_model({})
    with torch.no_grad():
        model.ln_f.bias.copy_(model.wte.weight[3] * 50.0)
    norm_only = logit_lens(model, ids, decoder="norm_only", prior=True)
    R = len(norm_only.labels)
    assert (norm_only.final_ids == 3).all() and (norm_only.top_ids[0, :, 0] == 3).all()  # the prior agrees
    not_3 = (norm_only.top_ids[1:, :, 0] != 3).all(axis=0)
    assert not_3.sum() >= 8
    assert (norm_only.depth[not_3] == R).all() and (norm_only.first_hit[not_3] == R).all()
    # With the full ln_f every stream row agrees; the prior row, below them, does not count.
    full = logit_lens(model, ids, prior=True)
    assert (full.depth == 1).all() and (full.first_hit == 1).all()


def test_depth_is_top1_equality_not_rank_one():
    """On a tie the final top-1 has rank 1 in a row whose top-1 is another token: that row disagrees."""
    result = logit_lens(sharp_model(seed=4), random_ids(9, 37, seed=2))
    R, t = len(result.labels), 4
    assert result.depth[t] < R
    top, rank = result.top_ids.copy(), result.rank_final.copy()
    top[-1, t, 0] = (result.final_ids[t] + 1) % 37  # the top row puts another, tied token first
    rank[-1, t] = 1
    fields = {f: getattr(result, f) for f in result.__dataclass_fields__}
    tied = LensResult(**{**fields, "top_ids": top, "rank_final": rank})
    assert tied.depth[t] == R
    np.testing.assert_array_equal(np.delete(tied.depth, t), np.delete(result.depth, t))


# ----------------------------------------------------------------------------
# Properties


def brute_force(agree: np.ndarray) -> tuple[list[int], list[int]]:
    R = agree.shape[0]
    depth = [min(r for r in range(R + 1) if agree[r:, t].all()) for t in range(agree.shape[1])]
    first = [next((r for r in range(R) if agree[r, t]), R) for t in range(agree.shape[1])]
    return depth, first


@given(st.integers(1, 7), st.integers(1, 9), st.randoms(use_true_random=False))
def test_depth_rule_against_its_definition(R, N, rnd):
    agree = np.array([[rnd.random() < 0.6 for _ in range(N)] for _ in range(R)])
    depth, first_hit = prediction_depth(torch.from_numpy(agree))
    assert (depth.tolist(), first_hit.tolist()) == brute_force(agree)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000), T=st.integers(1, 12), sub_blocks=st.booleans(), prior=st.booleans(),
    decoder=st.sampled_from(["logit", "norm_only", "ln_f_no_bias", "last_blocks"]), scale=st.sampled_from([0.3, 1.0]),
)  # fmt: skip
def test_depth_properties(seed, T, sub_blocks, prior, decoder, scale):
    model = sharp_model(GPTConfig(vocab_size=23, n_positions=12, n_embd=8, n_head=2, n_layer=3), seed=seed, scale=scale)
    result = logit_lens(model, random_ids(T, 23, seed=seed), decoder=decoder, sub_blocks=sub_blocks, prior=prior)
    R = len(result.labels)
    agree = result.top_ids[:, :, 0] == result.final_ids  # (R, T)
    counts = result.sites != "prior"
    for t in range(T):
        d, f = result.depth[t], result.first_hit[t]
        assert 0 <= f <= d <= R
        assert agree[d:, t].all()  # every row from depth up agrees with the final top-1
        if d < R:
            assert counts[d] and agree[f, t] and counts[f]
        if 0 < d < R:
            assert not agree[d - 1, t] or not counts[d - 1]  # the row below disagrees (or is the prior)
        assert not (agree[:f, t] & counts[:f]).any()  # no counted row below first_hit agrees
        assert (d == R) == (not agree[-1, t])
    if decoder in ("logit", "last_blocks"):  # the top row is the model's output
        assert (result.depth < R).all()


# ----------------------------------------------------------------------------
# Saving, loading, and results from 0.1


def test_depth_survives_save_and_load(tmp_path, ids):
    result = logit_lens(writer_model({1: 50.0}), ids, sub_blocks=True, decoder=LastBlocks(2))
    result.save(tmp_path / "r.npz")
    loaded = LensResult.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(loaded.depth, result.depth)
    assert loaded.rows == result.rows and loaded.decoder == result.decoder
    assert json.loads(result.to_json())["depth"] == result.depth.tolist()


def test_npz_files_from_0_1_still_load(tmp_path, ids):
    """0.1 saved the arrays, the labels, the decoder as a string ("last_blocks:2"), start and the
    token texts: no row structure, no decoder parameters."""
    result = logit_lens(sharp_model(CONFIG, seed=2), ids, sub_blocks=True, prior=True, decoder="last_blocks", last_blocks=2)
    old = {name: v for name, v in result.arrays().items() if name not in ("blocks", "sites")}
    np.savez_compressed(
        tmp_path / "old.npz", **old, labels=np.array(result.labels), decoder=np.array("last_blocks:2"),
        start=np.array(3), id_text_json=np.array("{}"),
    )  # fmt: skip
    loaded = LensResult.load(tmp_path / "old.npz")
    assert loaded.decoder.name == "last_blocks" and loaded.decoder.params == {"k": 2} and loaded.start == 3
    assert loaded.rows == result.rows
    np.testing.assert_array_equal(loaded.blocks, result.blocks)
    np.testing.assert_array_equal(loaded.depth, result.depth)
    for old_name, name in (("ln_f", "logit"), ("norm_only", "norm_only")):
        np.savez_compressed(tmp_path / "o.npz", **old, labels=np.array(result.labels), decoder=np.array(old_name),
                            start=np.array(0), id_text_json=np.array("{}"))  # fmt: skip
        assert LensResult.load(tmp_path / "o.npz").decoder.name == name
