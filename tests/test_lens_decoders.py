"""The logit lens against a second implementation: `transformers`' GPT2LMHeadModel.

HF's `hidden_states` are decoded here by hand and compared with minigpt's lens on the
same weights. Mind the one asymmetry: HF's LAST hidden state already has ln_f applied
(the others do not), so it is decoded with the unembedding alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, logit_lens

from test_lens import FLOAT_FIELDS, layer_norm, random_ids, reference_stats

transformers = pytest.importorskip("transformers")

N_LAYER, VOCAB = 3, 101


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """An HF GPT-2 with every parameter perturbed away from its init, and minigpt's load of it."""
    config = transformers.GPT2Config(
        n_embd=24, n_head=3, n_layer=N_LAYER, vocab_size=VOCAB, n_positions=32,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(11)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            before = p.clone()
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # HF initialises γ = 1 ...
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))  # ... and every bias to 0
            else:
                p.copy_(0.4 * torch.randn_like(p))  # large enough for sharp, non-uniform rows
            assert not torch.equal(p, before), name
    directory = Path(tmp_path_factory.mktemp("hf"))
    hf.save_pretrained(directory)
    assert (directory / "model.safetensors").exists()
    return hf, GPT.from_pretrained(directory)


@torch.no_grad()
def hf_decoded_rows(hf, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """HF's hidden states decoded as the logit lens: (L + 1, T, V), plus HF's own logits."""
    out = hf(ids[None], output_hidden_states=True)
    hs = out.hidden_states  # L + 1 entries, each (1, T, C); the last one is AFTER ln_f
    assert len(hs) == N_LAYER + 1
    ln, W = hf.transformer.ln_f, hf.transformer.wte.weight
    rows = [layer_norm(h[0], ln.weight, ln.bias, ln.eps) @ W.T for h in hs[:-1]]
    rows.append(hs[-1][0] @ W.T)  # already normalised by HF: unembed only
    return torch.stack(rows), out.logits[0], hs


def margin(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The distance from the target's logit to the nearest other logit: (R, T)."""
    zt = z.gather(-1, target.expand(z.shape[:2])[..., None])  # (R, T, 1)
    gap = (z - zt).abs()
    gap.scatter_(-1, target.expand(z.shape[:2])[..., None], float("inf"))
    return gap.min(-1).values


def test_minigpt_loads_the_hf_model(hf_pair):
    hf, model = hf_pair
    ids = random_ids(20, VOCAB, seed=12)
    z_hf, logits_hf, hs = hf_decoded_rows(hf, ids)
    with torch.no_grad():
        out = model(ids[None])
    torch.testing.assert_close(out.logits[0], logits_hf, atol=1e-4, rtol=0)
    torch.testing.assert_close(z_hf[-1], logits_hf, atol=1e-5, rtol=0)  # decoding HF's last state by hand
    for l in range(N_LAYER):  # HF's hidden_states[l] (l < L) is minigpt's resid[l], before ln_f
        torch.testing.assert_close(out.resid[l], hs[l], atol=1e-4, rtol=0)
    # ... and HF's last entry is ln_f of minigpt's last resid, not the resid itself.
    torch.testing.assert_close(model.ln_f(out.resid[-1]), hs[-1], atol=1e-4, rtol=0)
    assert (out.resid[-1] - hs[-1]).abs().max() > 0.1


def test_lens_matches_hf_hidden_states(hf_pair):
    hf, model = hf_pair
    ids = random_ids(20, VOCAB, seed=13)
    z_hf, _, _ = hf_decoded_rows(hf, ids)
    ref = reference_stats(z_hf, z_hf[-1], z_hf[0], ids, k=5)
    result = logit_lens(model, ids, keep_logits=True, chunk_size=6)
    assert result.labels == ["embed", "h.0", "h.1", "h.2"]
    np.testing.assert_allclose(result.logits, z_hf.numpy(), atol=1e-4, rtol=0)
    # Divergences, entropies and probabilities agree closely.
    for name in ("kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy"):
        np.testing.assert_allclose(getattr(result, name), ref[name], atol=1e-4, rtol=0, err_msg=name)
    for name in ("top_probs", "prob_final", "prob_next", "prob_input"):
        np.testing.assert_allclose(getattr(result, name), ref[name], atol=1e-5, rtol=0, err_msg=name)
    assert result.kl_final[0].mean() > 0.5 and result.entropy.min() < 3.0  # the rows are far from uniform
    # Top-1 and ranks are identical wherever no near-tie (within 1e-5) could flip them.
    top_gap = z_hf.topk(2, dim=-1).values
    clear = (top_gap[..., 0] - top_gap[..., 1] > 1e-5).numpy()
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(result.top_ids[..., 0][clear], ref["top_ids"][..., 0][clear])
    np.testing.assert_array_equal(result.final_ids[clear[-1]], ref["final_ids"][clear[-1]])
    targets = {"final": torch.from_numpy(ref["final_ids"]), "next": torch.cat([ids[1:], ids[:1]]), "input": ids}
    for name, target in targets.items():
        clear = (margin(z_hf, target) > 1e-5).numpy()
        if name == "next":
            clear[:, -1] = False  # no next token there (NaN / -1 on both sides, checked below)
        assert clear.mean() > 0.9, name
        got, want = getattr(result, f"rank_{name}"), ref[f"rank_{name}"]
        np.testing.assert_array_equal(got[clear], want[clear], err_msg=name)
    assert (result.rank_next[:, -1] == -1).all() and np.isnan(result.cross_entropy[:, -1]).all()


def test_last_blocks_decoder_of_the_embed_row_is_the_whole_model(hf_pair):
    """Running all L blocks on h_0, then ln_f, is the model itself: the 2021 decoder with k = L
    turns the embed row into HF's logits."""
    hf, model = hf_pair
    ids = random_ids(17, VOCAB, seed=14)
    _, logits_hf, _ = hf_decoded_rows(hf, ids)
    result = logit_lens(model, ids, decoder="last_blocks", last_blocks=N_LAYER, keep_logits=True)
    np.testing.assert_allclose(result.logits[0], logits_hf.numpy(), atol=1e-4, rtol=0)
    assert result.decoder.name == "last_blocks" and result.decoder.params == {"k": N_LAYER}


@pytest.mark.parametrize("decoder", ["ln_f_no_bias", "norm_only"])
def test_other_decoders_on_hf_hidden_states(hf_pair, decoder):
    """The decoders that drop β, or γ and β, applied by hand to HF's pre-ln_f states."""
    hf, model = hf_pair
    ids = random_ids(15, VOCAB, seed=15)
    z_hf, _, hs = hf_decoded_rows(hf, ids)
    ln, W = hf.transformer.ln_f, hf.transformer.wte.weight
    gamma = ln.weight if decoder == "ln_f_no_bias" else None
    with torch.no_grad():
        # HF's hidden_states hold the last block's output only after ln_f, so only the rows
        # before it (embed .. h.{L-2}) can be re-decoded with another decoder.
        z = torch.stack([layer_norm(h[0], gamma, None, ln.eps) @ W.T for h in hs[:-1]])
    result = logit_lens(model, ids, decoder=decoder, keep_logits=True)
    np.testing.assert_allclose(result.logits[:-1], z.numpy(), atol=1e-4, rtol=0)
    ref = reference_stats(torch.from_numpy(result.logits), z_hf[-1], z_hf[0], ids, k=5)
    for name in FLOAT_FIELDS:
        np.testing.assert_allclose(getattr(result, name), ref[name], atol=1e-4, rtol=0, err_msg=name)


def test_minigpt_package_exports_the_lens():
    assert set(minigpt.DECODERS) == {"logit", "ln_f_no_bias", "norm_only", "last_blocks"}


def test_onednn_matmul_agrees_with_the_default_path():
    """onednn=True changes only how the unembedding matmul is computed: float rounding, no more."""
    config = minigpt.GPTConfig(vocab_size=97, n_positions=32, n_embd=24, n_head=3, n_layer=3)
    torch.manual_seed(3)
    model = minigpt.GPT(config).eval()
    ids = torch.randint(0, config.vocab_size, (20,), generator=torch.Generator().manual_seed(4))
    a = minigpt.logit_lens(model, ids, keep_logits=True)
    b = minigpt.logit_lens(model, ids, keep_logits=True, matmul="onednn", chunk_size=7)
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-5, rtol=0)
    for name in ("kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=1e-5, rtol=0, err_msg=name)
    margin = np.sort(a.logits, axis=-1)[..., -1] - np.sort(a.logits, axis=-1)[..., -2]
    clear = margin > 1e-4  # top-1 can only flip on a near-tie
    np.testing.assert_array_equal(b.top_ids[..., 0][clear], a.top_ids[..., 0][clear])
    with pytest.raises(minigpt.LensError, match="float32 model on the CPU"):
        minigpt.logit_lens(model.to(torch.float64), ids, matmul="onednn")
