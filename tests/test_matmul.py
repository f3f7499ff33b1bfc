"""The precision knob, matmul=: bf16 rows against the exact default, with fp32 references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from minigpt import GPTConfig, logit_lens
from minigpt.lens import SlowMatmulWarning, cpu_capabilities
from minigpt.lens._matmul import bf16_is_fast

from test_lens import random_ids, sharp_model


@pytest.fixture(scope="module")
def offset_model():
    """Logits spread like GPT-2's (std ~3) around a shared offset of about -80, which softmax ignores
    and a bf16 matmul's output rounding does not (a logit of -80 rounds to the nearest 0.5)."""
    model = sharp_model(GPTConfig(vocab_size=501, n_positions=32, n_embd=64, n_head=4, n_layer=3), seed=8, scale=0.3)
    u = torch.zeros(64)
    u[0], u[1] = 1.0, -1.0  # zero-mean, so that ln_f's normalisation keeps β's part along it
    u /= u.norm()
    with torch.no_grad():
        model.wte.weight.add_(10.0 * u)
        model.ln_f.bias.add_(-10.0 * u)
    return model


def bf16_lens(model, ids, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowMatmulWarning)  # this project's CPUs have no bf16 units
        return logit_lens(model, ids, matmul="bf16", **kwargs)


def test_bf16_rows_are_close_and_the_references_exact(offset_model):
    ids = random_ids(30, 501, seed=5)
    exact = logit_lens(offset_model, ids, keep_logits=True)
    fast = bf16_lens(offset_model, ids, keep_logits=True)
    assert exact.logits.mean() < -50  # the offset is there
    # The top row is the fp32 final reference itself: KL exactly 0, the model's top-1 everywhere.
    assert (fast.kl_final[-1] == 0).all() and (fast.rank_final[-1] == 1).all()
    np.testing.assert_allclose(fast.logits[-1], exact.logits[-1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(fast.final_ids, exact.final_ids)
    # The other rows carry bf16's rounding, kept small by unembedding with W_E minus its mean row
    # (without it: KL off by 0.23 nats, 7% of top-1s flipped, logits off by 0.7).
    assert np.abs(fast.kl_final - exact.kl_final).max() < 0.06
    assert (fast.top_ids[..., 0] != exact.top_ids[..., 0]).mean() < 0.03
    assert np.abs(fast.logits - exact.logits).max() < 0.15
    assert np.abs(fast.logits[:-1] - exact.logits[:-1]).max() > 1e-4  # bf16 really ran


def test_bf16_with_sub_blocks_and_positions(offset_model):
    ids = random_ids(20, 501, seed=6)
    fast = bf16_lens(offset_model, ids, sub_blocks=True, prior=True, positions=slice(5, 15))
    exact = logit_lens(offset_model, ids, sub_blocks=True, prior=True, positions=slice(5, 15))
    assert np.abs(fast.kl_final - exact.kl_final).max() < 0.06
    assert (fast.kl_final[-1] == 0).all() and (fast.kl_input[exact.row("embed")] == exact.kl_input[exact.row("embed")]).all()


def test_capabilities_and_the_warning(offset_model, monkeypatch):
    caps = cpu_capabilities()
    assert set(caps) == {"model", "avx2", "avx512_bf16", "amx_bf16"} and caps["model"]
    if caps["avx512_bf16"] is not None:  # Linux: the flags were read
        assert bf16_is_fast(torch.device("cpu")) == bool(caps["avx512_bf16"] or caps["amx_bf16"])
    from minigpt.lens import _matmul

    monkeypatch.setattr(_matmul, "bf16_is_fast", lambda device: False)
    with pytest.warns(SlowMatmulWarning, match="many times slower than fp32; use matmul='exact'"):
        logit_lens(offset_model, [1, 2, 3], matmul="bf16")
