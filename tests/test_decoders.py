"""Decoders as values: each built-in one against its definition, written here in float64; the
decoder objects against their string shorthands; rows as data; decoders of one's own."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, LensError, logit_lens
from minigpt.lens import (
    DecoderSpec, LastBlocks, LnF, LnFNoBias, NormOnly, Row, as_decoder, evaluate_lens, lens_rows, residual_parts,
)  # fmt: skip
from minigpt.testing import random_model

from test_lens import ALL_ARRAYS, layer_norm, random_ids, sharp_model

# gpt2's width, heads and vocabulary; two blocks (and a short context) keep the test quick.
GPT2_SHAPED = GPTConfig(vocab_size=50257, n_positions=32, n_embd=768, n_head=12, n_layer=2)


@pytest.fixture(scope="module")
def gpt2_shaped() -> GPT:
    return random_model(GPT2_SHAPED, seed=21, scale=0.1)


@pytest.fixture(scope="module")
def tiny() -> GPT:
    return sharp_model(GPTConfig(vocab_size=37, n_positions=16, n_embd=12, n_head=3, n_layer=3), seed=5)


def definition(model64: GPT, decoder: str, h: torch.Tensor, row: Row, k: int = 1) -> torch.Tensor:
    """Each decoder as the docs define it, in float64: h (T, C) at `row` -> logits (T, V)."""
    ln, W = model64.ln_f, model64.wte.weight
    if decoder == "logit":
        return layer_norm(h, ln.weight, ln.bias) @ W.T
    if decoder == "ln_f_no_bias":
        return layer_norm(h, ln.weight) @ W.T
    if decoder == "norm_only":
        return layer_norm(h) @ W.T
    assert decoder == "last_blocks"
    L = len(model64.h)
    x = h[None]
    first = L - k  # the last k blocks, but never a block the row has already been through
    if row.site == "resid_mid" and row.block >= first:
        block = model64.h[row.block]
        x = x + block.mlp(block.ln_2(x))  # the rest of the row's own block
        first = row.block + 1
    elif row.site == "resid_post":
        first = max(first, row.block + 1)
    for block in model64.h[first:]:
        x = x + block.attn(block.ln_1(x))
        x = x + block.mlp(block.ln_2(x))
    return layer_norm(x[0], ln.weight, ln.bias) @ W.T


CASES = [(LnF(), "logit", 1), (LnFNoBias(), "ln_f_no_bias", 1), (NormOnly(), "norm_only", 1),
         (LastBlocks(1), "last_blocks", 1), (LastBlocks(2), "last_blocks", 2)]  # fmt: skip


@pytest.mark.parametrize(("decoder", "name", "k"), CASES, ids=lambda x: repr(x))
def test_each_decoder_alone_equals_its_definition(gpt2_shaped, decoder, name, k):
    model = gpt2_shaped
    model64 = copy.deepcopy(model).double()
    ids = random_ids(20, GPT2_SHAPED.vocab_size, seed=22)
    parts = residual_parts(model, ids[None])
    streams = {Row.embed(): parts.resid_pre[0, 0]}
    for l in range(GPT2_SHAPED.n_layer):
        streams[Row.mid(l)] = parts.resid_mid[l, 0]
        streams[Row.post(l)] = parts.resid_post[l, 0]
    worst = 0.0
    for row, h in streams.items():  # (T, C) each
        with torch.no_grad():
            got = decoder.logits(model, h, row)  # (T, V)
            want = definition(model64, name, h.double(), row, k)
        assert got.shape == (20, GPT2_SHAPED.vocab_size) and got.dtype == torch.float32
        worst = max(worst, float((got.double() - want).abs().max()))
        assert want.abs().max() > 1.0  # the logits are not trivially small
    assert worst <= 1e-4, worst
    # An int row is an index into model(ids).resid.
    with torch.no_grad():
        resid = model(ids[None]).resid[:, 0]
        torch.testing.assert_close(decoder.logits(model, resid[1], 1), decoder.logits(model, resid[1], Row.post(0)), rtol=0, atol=0)


def test_decoders_decode_any_vector_but_last_blocks_needs_a_sequence(tiny):
    C = tiny.config.n_embd
    v = torch.randn(C)  # a lone direction, not a stream
    with torch.no_grad():
        for decoder in (LnF(), LnFNoBias(), NormOnly()):
            z = decoder.logits(tiny, v, Row.embed())
            assert z.shape == (tiny.config.vocab_size,)
            batch = decoder.logits(tiny, torch.stack([v, 2 * v, -v]), Row.embed())
            torch.testing.assert_close(batch[0], z)
        with pytest.raises(LensError, match="cannot decode a lone vector: its attention needs the sequence"):
            LastBlocks(1).logits(tiny, v, Row.post(0))
        with pytest.raises(LensError, match=r"width n_embd = 12, got \(7,\)"):
            LnF().logits(tiny, torch.randn(7), Row.embed())
        with pytest.raises(LensError, match=r"resid index 9 is out of range: the stream has rows 0..3"):
            LnF().logits(tiny, v, 9)


def test_norm_only_is_scale_free_and_no_bias_drops_the_prior(tiny):
    h = torch.randn(5, tiny.config.n_embd)
    with torch.no_grad():
        # (up to eps = 1e-5 under the square root, next to a variance of about 1)
        torch.testing.assert_close(NormOnly().logits(tiny, 3.7 * h, 0), NormOnly().logits(tiny, h, 0), atol=1e-4, rtol=1e-4)
        prior = tiny.ln_f.bias @ tiny.wte.weight.T
        torch.testing.assert_close(LnF().logits(tiny, h, 0), LnFNoBias().logits(tiny, h, 0) + prior, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("obj", "shorthand"), [
    (LnF(), dict(decoder="logit")), (LnF(), dict(decoder="ln_f")), (LnFNoBias(), dict(decoder="ln_f_no_bias")),
    (NormOnly(), dict(decoder="norm_only")), (LastBlocks(1), dict(decoder="last_blocks")),
    (LastBlocks(2), dict(decoder="last_blocks", last_blocks=2)), (LastBlocks(3), dict(decoder={"name": "last_blocks", "params": {"k": 3}})),
])  # fmt: skip
def test_decoder_object_equals_its_string_bit_for_bit(tiny, obj, shorthand):
    ids = random_ids(14, tiny.config.vocab_size, seed=3)
    a = logit_lens(tiny, ids, decoder=obj, keep_logits=True, sub_blocks=True, prior=True, chunk_size=4)
    b = logit_lens(tiny, ids, **shorthand, keep_logits=True, sub_blocks=True, prior=True, chunk_size=4)
    assert a.decoder == b.decoder == DecoderSpec.of(obj)
    for name in ALL_ARRAYS + ("logits", "blocks", "sites"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_last_blocks_top_row_is_the_models_output(tiny):
    """Rows at or above block L - k run only the blocks above them: the top row (and, with
    sub-blocks, the last block's resid_mid, which only lacks its own MLP) is the model's output.

    (13 positions: below 12 rows, MKL multiplies these tiny matrices with another kernel, whose
    rounding differs from the one the lens's larger matmul uses; at gpt2's width only 1 row does.)"""
    ids = random_ids(13, tiny.config.vocab_size, seed=4)
    with torch.no_grad():
        logits = tiny(ids[None]).logits[0].numpy()
    for k in (1, 2, 3):
        result = logit_lens(tiny, ids, decoder=LastBlocks(k), keep_logits=True, sub_blocks=True)
        np.testing.assert_array_equal(result.logits[-1], logits)
        assert (result.kl_final[-1] == 0).all() and (result.rank_final[-1] == 1).all()
        np.testing.assert_allclose(result.logits[result.row("h.2.resid_mid")], logits, atol=1e-5, rtol=0)
        assert result.decoder.title == ("the last block, then ln_f" if k == 1 else f"the last {k} blocks, then ln_f")
    # With k = L every row runs what is left of the model: all rows predict the output.
    full = logit_lens(tiny, ids, decoder=LastBlocks(3), keep_logits=True)
    for r in range(len(full.labels)):
        np.testing.assert_allclose(full.logits[r], logits, atol=1e-5, rtol=0, err_msg=full.labels[r])


def test_last_blocks_with_positions_still_runs_the_blocks_from_position_0(tiny):
    ids = random_ids(13, tiny.config.vocab_size, seed=6)
    full = logit_lens(tiny, ids, decoder=LastBlocks(2), keep_logits=True)
    part = logit_lens(tiny, ids, decoder=LastBlocks(2), keep_logits=True, positions=slice(6, 10))
    np.testing.assert_allclose(part.logits, full.logits[:, 6:10], atol=1e-5, rtol=0)
    # ... whereas the same stream decoded from position 6 on (attention blind to 0..5) differs.
    with torch.no_grad():
        embed = tiny(ids[None]).resid[0, 0]  # (T, C)
        cut = LastBlocks(2).logits(tiny, embed[6:10], 0)  # (4, V)
        whole = LastBlocks(2).logits(tiny, embed, 0)  # (T, V)
    np.testing.assert_allclose(whole[6:10].numpy(), full.logits[0, 6:10], atol=1e-5)
    assert np.abs(cut.numpy() - full.logits[0, 6:10]).max() > 1e-2


def test_rows_are_data():
    rows = lens_rows(2, sub_blocks=True, prior=True)
    assert [r.label for r in rows] == ["prior", "embed", "h.0.resid_mid", "h.0", "h.1.resid_mid", "h.1"]
    assert [r.site for r in rows] == ["prior", "embed", "resid_mid", "resid_post", "resid_mid", "resid_post"]
    assert [r.block for r in rows] == [-1, -1, 0, 0, 1, 1]
    assert [r.resid_index for r in rows] == [None, 0, None, 1, None, 2]
    assert Row.of_resid(0, 2) == Row.embed() and Row.of_resid(2, 2) == Row.post(1) and Row.of_resid(-1, 2) == Row.post(1)


def test_lens_result_carries_rows_and_decoder_as_data(tiny):
    result = logit_lens(tiny, [1, 2, 3, 4], decoder=LastBlocks(2), sub_blocks=True, prior=True)
    assert result.rows == lens_rows(3, sub_blocks=True, prior=True)
    # blocks and sites are stored; rows are built from them, so check them against the layout itself.
    assert result.blocks.dtype == np.int64 and result.blocks.tolist() == [-1, -1, 0, 0, 1, 1, 2, 2]
    assert result.sites.tolist() == ["prior", "embed"] + ["resid_mid", "resid_post"] * 3
    assert result.decoder.name == "last_blocks" and result.decoder.params == {"k": 2}
    assert result.decoder.build() == LastBlocks(2)
    assert as_decoder(DecoderSpec.of(LastBlocks(2)).to_dict()) == LastBlocks(2)


def test_short_repr(tiny):
    result = logit_lens(tiny, list(range(16)))
    text = repr(result)
    assert len(text) < 160 and "\n" not in text
    assert "4 rows" in text and "embed … h.2" in text and "positions 0:16" in text and "'logit'" in text


# ----------------------------------------------------------------------------
# Decoders of one's own: the protocol is all the lens needs


@dataclass(frozen=True)
class Scaled:
    """A decoder written outside minigpt: ln_f, then a temperature."""

    t: float = 2.0
    name: ClassVar[str] = "scaled"

    @property
    def params(self) -> dict:
        return {"t": self.t}

    def check(self, config: GPTConfig) -> None:
        pass

    def decode(self, model: GPT, h: torch.Tensor, row: Row) -> torch.Tensor:
        return LnF().decode(model, h, row) / self.t


class Fitted:
    """A learned decoder with a (d, d) translator, fitted for a model of width d."""

    name = "fitted"
    params: dict = {}

    def __init__(self, d: int) -> None:
        self.weight = torch.eye(d)

    def check(self, config: GPTConfig) -> None:
        if self.weight.shape[0] != config.n_embd:
            raise LensError(f"this decoder was fitted for n_embd = {self.weight.shape[0]}, the model has {config.n_embd}")

    def decode(self, model, h, row):
        return LnF().decode(model, h @ self.weight, row)


class Unchecked(Fitted):
    """A buggy decoder: it forgets to check, and returns vectors of its own width."""

    name = "unchecked"

    def check(self, config: GPTConfig) -> None:
        pass

    def decode(self, model, h, row):
        return torch.zeros(*h.shape[:-1], self.weight.shape[0])


def test_a_decoder_of_ones_own(tiny):
    ids = random_ids(10, tiny.config.vocab_size, seed=8)
    result = logit_lens(tiny, ids, decoder=Scaled(2.0), keep_logits=True)
    plain = logit_lens(tiny, ids, keep_logits=True)
    np.testing.assert_allclose(result.logits, plain.logits / 2.0, atol=1e-6, rtol=1e-5)  # another matmul kernel
    assert result.decoder == DecoderSpec("scaled", {"t": 2.0}, "scaled")
    corpus = evaluate_lens(tiny, random_ids(40, tiny.config.vocab_size, seed=9), decoders=[Scaled(2.0), "logit"], window=16)
    assert set(corpus.metrics) == {"scaled", "logit"}
    # An identity translator is the logit lens, exactly.
    same = logit_lens(tiny, ids, decoder=Fitted(tiny.config.n_embd), keep_logits=True)
    np.testing.assert_array_equal(same.logits, plain.logits)


def test_a_decoder_built_for_another_width_is_refused(tiny):
    ids = random_ids(10, tiny.config.vocab_size, seed=8)
    with pytest.raises(LensError, match="fitted for n_embd = 768, the model has 12"):
        logit_lens(tiny, ids, decoder=Fitted(768))
    with pytest.raises(LensError, match="fitted for n_embd = 768, the model has 12"):
        evaluate_lens(tiny, ids, decoders=["logit", Fitted(768)])
    with pytest.raises(LensError, match=r"the 'unchecked' decoder returned"):
        logit_lens(tiny, ids, decoder=Unchecked(768))
    with pytest.raises(LensError, match="last_blocks must be between 1 and the number of blocks \\(3\\), got 4"):
        LastBlocks(4).logits(tiny, torch.randn(3, 12), 0)
    with pytest.raises(LensError, match="whole number of blocks"):
        LastBlocks(1.5)  # type: ignore[arg-type]


def test_package_names():
    """The public names this issue adds exist where the docs say."""
    assert isinstance(LnF(), minigpt.Decoder) and isinstance(LastBlocks(2), minigpt.Decoder)
    assert [as_decoder(n).name for n in ("ln_f", "logit", "ln_f_no_bias", "norm_only", "last_blocks")] == [
        "logit", "logit", "ln_f_no_bias", "norm_only", "last_blocks"]  # fmt: skip
