"""The patchscope against a naive one (transformers' GPT2LMHeadModel, a forward hook replacing the hidden state
at the target's last position, the whole target prompt run again per vector), its exact top row, its cost,
its spec, its errors, and the four lenses side by side in `evaluate_lens` with prec@1 and surprisal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, JacobianLens, TunedLens
from minigpt.errors import InputError, LensError
from minigpt.lens import Patchscope, Row
from minigpt.lens import patchscope as ps

CONFIG = GPTConfig(vocab_size=37, n_positions=32, n_embd=12, n_head=3, n_layer=3, n_inner=29)
TOL = 1e-4


def hf_and_minigpt(seed: int = 3):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=3, n_head=3, n_embd=12, vocab_size=37, n_positions=32, n_inner=29,
                                     attn_implementation="eager", bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():  # away from HF's init (γ = 1, β = 0), so an ignored parameter shows
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    model = GPT(CONFIG)
    keys = set(model.state_dict())
    model.load_state_dict({k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k.removeprefix("transformer.") in keys})
    return hf.eval(), model.eval()


def naive_patchscope(hf, target: list[int], vectors: torch.Tensor, resid_index: int) -> torch.Tensor:
    """Logits (N, V): for each vector, the whole target prompt run with the vector written over the hidden state
    at its last position, after the embedding (resid_index 0) or after block resid_index - 1."""
    L = hf.config.n_layer
    module = hf.transformer.drop if resid_index == 0 else hf.transformer.h[resid_index - 1]

    def patch(mod, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = h.clone()
        h[:, -1] = vectors
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = module.register_forward_hook(patch)
    try:
        with torch.no_grad():
            logits = hf(torch.tensor([target]).expand(len(vectors), -1)).logits[:, -1]  # (N, V)
    finally:
        handle.remove()
    assert L == 3
    return logits


TARGETS = [[5, 9, 2, 30, 7, 11, 4], [17, 3]]  # two target prompts; the second has a one-token prefix


@pytest.mark.parametrize("target", TARGETS)
def test_every_row_equals_a_naive_patchscope_in_transformers(target: list[int]) -> None:
    hf, model = hf_and_minigpt()
    source = torch.tensor([[1, 8, 3, 21, 13, 6, 2, 35, 9]])
    with torch.no_grad():
        resid = model(source).resid[:, 0]  # (L + 1, T, C)
    scope = Patchscope(target, chunk_size=4)  # 9 positions: chunks of 4, 4 and 1
    diffs = []
    for i in range(CONFIG.n_layer + 1):
        mine = scope.logits(model, resid[i], i)  # (T, V)
        theirs = naive_patchscope(hf, target, resid[i], i)
        diffs.append((mine - theirs).abs().max().item())
    assert max(diffs) <= TOL, diffs


def test_a_one_token_target_prompt() -> None:
    hf, model = hf_and_minigpt()
    vectors = torch.randn(5, 12)
    for i in range(4):
        diff = (Patchscope([17]).logits(model, vectors, i) - naive_patchscope(hf, [17], vectors, i)).abs().max().item()
        assert diff <= TOL, (i, diff)


def test_the_top_row_is_the_models_output_exactly() -> None:
    _, model = hf_and_minigpt()
    ids = torch.tensor([4, 8, 15, 16, 23, 1])
    a = minigpt.logit_lens(model, ids, keep_logits=True)
    b = minigpt.logit_lens(model, ids, decoder=Patchscope(TARGETS[0]), keep_logits=True)
    assert np.array_equal(a.logits[-1], b.logits[-1])
    with torch.no_grad():
        out = model(ids[None])
        assert torch.equal(Patchscope(TARGETS[0]).decode(model, out.resid[-1], Row.of_resid(-1, 3)), model.ln_f(out.resid[-1]))
        # the same numbers as the forward pass (the lens' unembedding matmul may block the rows differently)
        assert (torch.from_numpy(b.logits[-1]) - out.logits[0]).abs().max() <= 1e-6
    assert (b.kl_final[-1] == 0).all() and (b.rank_final[-1] == 1).all()


def test_each_vector_costs_one_position_through_the_blocks_above_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = hf_and_minigpt()
    scope = Patchscope(TARGETS[0], chunk_size=3)
    calls = []
    real = GPT.walk

    def counting(self, x, *, start=0, cache=None):
        calls.append((tuple(x.shape), start))
        return real(self, x, start=start, cache=cache)

    monkeypatch.setattr(GPT, "walk", counting)
    h = torch.randn(7, 12)
    scope.decode(model, h, Row.of_resid(1, 3))  # the prefix's keys and values first, then 7 vectors in chunks
    assert calls == [((1, 6, 12), 0), ((3, 1, 12), 1), ((3, 1, 12), 1), ((1, 1, 12), 1)]
    calls.clear()
    scope.decode(model, h, Row.of_resid(2, 3))  # the prefix is computed once per model
    assert calls == [((3, 1, 12), 2), ((3, 1, 12), 2), ((1, 1, 12), 2)]


def test_the_spec_carries_the_prompt(tokenizer_dir) -> None:
    tok = minigpt.load_tokenizer(str(tokenizer_dir))
    scope = Patchscope(tokenizer=tok)
    assert scope.params["prompt"] == ps.TOKEN_IDENTITY == "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
    assert scope.params["ids"] == tok.encode_ordinary(ps.TOKEN_IDENTITY)
    spec = minigpt.lens.DecoderSpec.of(scope).to_dict()
    assert spec["name"] == "patchscope" and spec["params"]["prompt"] == ps.TOKEN_IDENTITY


def test_bad_patchscopes_get_one_readable_error() -> None:
    _, model = hf_and_minigpt()
    with pytest.raises(InputError, match="no tokens"):
        Patchscope([])
    with pytest.raises(LensError, match="tokenizer"):
        Patchscope("cat -> cat")
    with pytest.raises(LensError, match="vocabulary"):
        minigpt.logit_lens(model, torch.arange(4), decoder=Patchscope([40, 2]))
    with pytest.raises(LensError, match="unknown decoder 'patchscopes'"):
        minigpt.logit_lens(model, torch.arange(4), decoder="patchscopes")


def test_four_lenses_side_by_side_with_prec_at_1_and_surprisal() -> None:
    _, model = hf_and_minigpt()
    corpus = torch.randint(0, 37, (96,), generator=torch.Generator().manual_seed(4))
    jlens = JacobianLens.fit(model, [corpus[:20].tolist(), corpus[20:40].tolist()], skip_first=2, progress=False)
    tuned = TunedLens.from_model(model)
    scope = Patchscope(TARGETS[0])
    result = minigpt.evaluate_lens(model, corpus, window=16, decoders=["logit", tuned, jlens, scope])
    assert list(result.metrics) == ["logit", "tuned", "jacobian", "patchscope"]
    for name, ms in result.metrics.items():
        assert np.array_equal(ms["prec@1"], ms["top1_agreement"])  # the paper's name for the same fraction
        assert ms["prec@1"][-1] == 1 and ms["surprisal"][-1] <= ms["entropy"][-1] + 1e-9  # the top row: the model's own top-1
        assert np.isfinite(ms["surprisal"]).all() and (ms["surprisal"] >= 0).all()
    # an untrained tuned lens is the logit lens, and so its surprisal
    assert np.allclose(result.metrics["tuned"]["surprisal"], result.metrics["logit"]["surprisal"], atol=1e-5)
    # surprisal in bits: -log2 p_final(row's top-1), checked at one row against logit_lens' own numbers
    lens = minigpt.logit_lens(model, corpus[:16], decoder=scope, keep_logits=True)
    final = torch.from_numpy(lens.logits[-1]).log_softmax(-1)  # (T, V)
    top1 = torch.from_numpy(lens.top_ids[1, :, 0])
    bits = (-final.gather(1, top1[:, None])[:, 0] / np.log(2)).mean().item()
    one = minigpt.evaluate_lens(model, corpus[:16], window=16, decoders=[scope])
    assert abs(one.metrics["patchscope"]["surprisal"][1] - bits) <= 1e-5
    d = result.to_dict()
    assert d["decoders"]["patchscope"]["params"]["ids"] == TARGETS[0]
    back = minigpt.CorpusResult.from_dict(d)
    assert np.allclose(back.metrics["jacobian"]["surprisal"], result.metrics["jacobian"]["surprisal"])


def test_plot_curves_draws_the_four_lenses() -> None:
    pytest.importorskip("matplotlib")
    from minigpt.plot import plot_curves

    _, model = hf_and_minigpt()
    corpus = torch.randint(0, 37, (48,), generator=torch.Generator().manual_seed(5))
    result = minigpt.evaluate_lens(model, corpus, window=16,
                                   decoders=["logit", TunedLens.from_model(model), JacobianLens.identity(model), Patchscope([3, 4])])  # fmt: skip
    fig = plot_curves(result, metrics=("kl", "prec@1", "surprisal"))
    lines = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert {f"surprisal_{n}" for n in ("logit", "tuned", "jacobian", "patchscope")} <= lines
