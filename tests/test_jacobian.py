"""The Jacobian lens: its file format, its readout against an independent formula, its estimator against a
brute-force Jacobian (`torch.autograd.functional.jacobian`), J = I against the logit lens, and its errors."""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minigpt
from minigpt import GPT, GPTConfig, JacobianLens
from minigpt.errors import CheckpointError, InputError, LensError
from minigpt.lens import jacobian as jl
from minigpt.testing import random_model

# Odd sizes; three blocks, so the lens has two layers (0 and 1) and the top row h.2 has none.
CONFIG = GPTConfig(vocab_size=37, n_positions=32, n_embd=12, n_head=3, n_layer=3)


@pytest.fixture(scope="module")
def model() -> GPT:
    return random_model(CONFIG, seed=5, scale=0.3)


def prompts(n: int, T: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CONFIG.vocab_size, (T,), generator=g).tolist() for _ in range(n)]


def write_official(path: Path, J: dict[int, torch.Tensor], d_model: int, **extra) -> Path:
    """A file in the reference format, written here without minigpt's save."""
    torch.save({"J": {l: m.half() for l, m in J.items()}, "n_prompts": 7, "source_layers": sorted(J),
                "d_model": d_model, **extra}, path)  # fmt: skip
    return path


def known_matrices(C: int, layers: list[int], seed: int = 1) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {l: torch.eye(C) + 0.3 * torch.randn(C, C, generator=g) for l in layers}


# ----------------------------------------------------------------------------
# Reading the official format


def test_a_file_decodes_each_row_as_ln_f_of_J_h(model: GPT, tmp_path: Path) -> None:
    J = known_matrices(12, [0, 1])
    lens = JacobianLens.load(write_official(tmp_path / "lens.pt", J, 12), model)
    ids = torch.tensor(prompts(1, 9)[0])
    got = minigpt.logit_lens(model, ids, decoder=lens, keep_logits=True).logits  # (R, T, V)
    with torch.no_grad():
        resid = model(ids[None]).resid[:, 0]  # (L + 1, T, C)
        ln = model.ln_f
        read = lambda x: F.layer_norm(x, (12,), ln.weight, ln.bias, 1e-5) @ model.wte.weight.T  # noqa: E731
        expected = [read(resid[0])]  # embed: no matrix, the logit lens
        expected += [read(resid[l + 1] @ J[l].half().float().T) for l in (0, 1)]  # h.l: ln_f(J_l h)
        expected += [read(resid[3])]  # the top row: the model's output
    diff = max((torch.from_numpy(got[r]) - e).abs().max().item() for r, e in enumerate(expected))
    assert diff <= 1e-4, diff
    assert lens.source_layers == [0, 1] and lens.n_prompts == 7


def test_identity_matrices_equal_the_logit_lens_exactly(model: GPT) -> None:
    ids = torch.tensor(prompts(1, 11)[0])
    a = minigpt.logit_lens(model, ids, keep_logits=True)
    b = minigpt.logit_lens(model, ids, decoder=JacobianLens.identity(model), keep_logits=True)
    for name, value in a.arrays().items():
        assert np.array_equal(value, b.arrays()[name], equal_nan=value.dtype.kind == "f"), name


def test_save_then_load_round_trips(model: GPT, tmp_path: Path) -> None:
    lens = JacobianLens(known_matrices(12, [0, 1]), d_model=12, n_prompts=3, metadata={"corpus": "x", "n": [1, 2]})
    back = JacobianLens.load(lens.save(tmp_path / "a.pt"), model)
    for l in (0, 1):
        assert torch.equal(back.J[l], lens.J[l].half().float())  # stored fp16, as the reference does
    assert (back.n_prompts, back.source_layers, back.d_model, back.metadata) == (3, [0, 1], 12, {"corpus": "x", "n": [1, 2]})
    exact = JacobianLens.load(lens.save(tmp_path / "b.pt", dtype=torch.float32), model)
    assert all(torch.equal(exact.J[l], lens.J[l]) for l in (0, 1))
    raw = torch.load(tmp_path / "a.pt", weights_only=True)  # the reference format, as TL and Anthropic's code read it
    assert set(raw) == {"J", "n_prompts", "source_layers", "d_model", "metadata"}
    assert sorted(raw["J"]) == [0, 1] and raw["J"][0].dtype == torch.float16 and raw["source_layers"] == [0, 1]


def pickle_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
    return found


def test_the_file_carries_no_code(model: GPT, tmp_path: Path) -> None:
    path = JacobianLens.identity(model).save(tmp_path / "lens.pt")
    assert pickle_globals(path) <= {"torch._utils._rebuild_tensor_v2", "torch.HalfStorage", "collections.OrderedDict"}


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


def test_a_file_that_would_run_code_is_refused(model: GPT, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("MARKER", str(marker))
    torch.save({"J": {0: torch.eye(12)}, "n_prompts": 1, "source_layers": [0], "d_model": 12, "metadata": _Evil()},
               tmp_path / "evil.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="weights_only=True"):
        JacobianLens.load(tmp_path / "evil.pt", model)
    assert not marker.exists()


def test_a_lens_for_another_width_or_depth_is_refused(model: GPT, tmp_path: Path) -> None:
    with pytest.raises(LensError, match="d_model = 16.*n_embd 12"):
        JacobianLens.load(write_official(tmp_path / "w.pt", known_matrices(16, [0]), 16), model)
    with pytest.raises(LensError, match="layer 2.*0..1"):  # layer 2 would be the top row of a 3-block model
        JacobianLens.load(write_official(tmp_path / "d.pt", known_matrices(12, [0, 2]), 12), model)
    with pytest.raises(LensError, match="n_embd"):
        minigpt.evaluate_lens(GPT(GPTConfig(vocab_size=37, n_positions=8, n_embd=8, n_head=2, n_layer=3)),
                              torch.arange(8), decoders=[JacobianLens.identity(model)])  # fmt: skip


def test_malformed_files_get_one_clear_error(model: GPT, tmp_path: Path) -> None:
    torch.save({"J": {0: torch.eye(12)}, "d_model": 12}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="lacks n_prompts, source_layers"):
        JacobianLens.load(tmp_path / "a.pt", model)
    torch.save({"J": {0: torch.eye(12)}, "n_prompts": 1, "source_layers": [0, 1], "d_model": 12}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="source_layers"):
        JacobianLens.load(tmp_path / "b.pt", model)
    torch.save({"J": {0: torch.eye(11)}, "n_prompts": 1, "source_layers": [0], "d_model": 12}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"\(12, 12\)"):
        JacobianLens.load(tmp_path / "c.pt", model)
    (tmp_path / "d.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        JacobianLens.load(tmp_path / "d.pt", model)
    with pytest.raises(LensError, match="sub-block row"):
        minigpt.logit_lens(model, torch.arange(5), decoder=JacobianLens.identity(model), sub_blocks=True)


def test_hub_ids_go_through_the_file_finder(model: GPT, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = JacobianLens.identity(model).save(tmp_path / "lens.pt")
    asked = []
    monkeypatch.setattr(jl, "_hub_file", lambda repo, filename, revision: asked.append((repo, filename, revision)) or local)
    JacobianLens.load("gpt2", model)  # a model with a published lens
    JacobianLens.load("neuronpedia/jacobian-lens/gpt2-small/jlens/x/lens.pt", model)  # repo + file in one id
    JacobianLens.load("someone/lenses", model, filename="a/b.pt", revision="v1")
    assert asked == [
        ("neuronpedia/jacobian-lens", "gpt2-small/jlens/Salesforce-wikitext/gpt2_jacobian_lens.pt", None),
        ("neuronpedia/jacobian-lens", "gpt2-small/jlens/x/lens.pt", None),
        ("someone/lenses", "a/b.pt", "v1"),
    ]
    with pytest.raises(LensError, match="not an existing file"):
        JacobianLens.load("no-such-lens", model)


def test_offline_hub_errors_are_readable(model: GPT, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("minigpt.sources")  # the one module that finds files (the lead's)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(minigpt.HubError, match="HF_HUB_OFFLINE"):
        JacobianLens.load("gpt2", model)


# ----------------------------------------------------------------------------
# Fitting


def brute_force(model: GPT, corpus: list[list[int]], skip_first: int) -> dict[int, torch.Tensor]:
    """E_prompt[(1/|V|) Σ_{t∈V} Σ_{t'∈V, t'≥t} ∂h_final,t' / ∂h_l,t] from full Jacobians (T, C, T, C)."""
    L = model.config.n_layer
    sums = {l: torch.zeros(12, 12, dtype=torch.float64) for l in range(L - 1)}
    for ids in corpus:
        ids = torch.tensor(ids)
        T = len(ids)
        V = list(range(skip_first, T - 1))
        with torch.no_grad():
            resid = model(ids[None]).resid[:, 0]  # (L + 1, T, C)
        for l in range(L - 1):

            def rest(x: torch.Tensor, l: int = l) -> torch.Tensor:  # h_l (T, C) -> h_final (T, C)
                for parts in model.walk(x[None], start=l + 1):
                    x = parts.out[0]
                return x

            jac = torch.autograd.functional.jacobian(rest, resid[l + 1])  # (T', C_out, T, C_in)
            J = sum(jac[tp, :, t, :] for t in V for tp in V if tp >= t) / len(V)
            sums[l] += J.double()
    return {l: (s / len(corpus)).float() for l, s in sums.items()}


@pytest.mark.parametrize("dim_batch", [32, 5])  # 5: the last backward pass holds only 2 of 12 dims
def test_fit_matches_a_brute_force_jacobian(model: GPT, dim_batch: int) -> None:
    corpus = prompts(3, 10, seed=2)
    lens = JacobianLens.fit(model, corpus, n_prompts=3, skip_first=2, dim_batch=dim_batch, progress=False)
    expected = brute_force(model, corpus, skip_first=2)
    assert lens.source_layers == [0, 1] and lens.n_prompts == 3
    for l, J in expected.items():
        rel = ((lens.J[l] - J).norm() / J.norm()).item()
        assert rel <= 1e-4, (l, rel)
    assert all(p.requires_grad for p in model.parameters())  # the parameters' flags are restored


def test_fit_counts_prompts_and_truncates(model: GPT) -> None:
    long, short = prompts(1, 20, seed=3)[0], [1, 2, 3]
    with pytest.warns(UserWarning, match="skipping a prompt of 3 tokens"):
        lens = JacobianLens.fit(model, [short, long], seq_len=10, skip_first=2, progress=False)
    assert lens.n_prompts == 1
    truncated = JacobianLens.fit(model, [long[:10]], skip_first=2, progress=False)
    assert torch.equal(lens.J[0], truncated.J[0])
    with pytest.raises(InputError, match="skip_first"), pytest.warns(UserWarning):
        JacobianLens.fit(model, [short], progress=False)


class CharTokenizer:
    """A stand-in for tiktoken over the 37-token vocabulary: one id per character, <|endoftext|> = 36."""

    eot_token = 36

    def encode_ordinary(self, text: str) -> list[int]:
        return [ord(c) % 36 for c in text]


def test_texts_are_tokenised_with_endoftext_first(model: GPT) -> None:
    tok = CharTokenizer()
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    a = JacobianLens.fit(model, texts, tokenizer=tok, skip_first=2, progress=False)
    b = JacobianLens.fit(model, [[36, *tok.encode_ordinary(t)] for t in texts], skip_first=2, progress=False)
    assert all(torch.equal(a.J[l], b.J[l]) for l in (0, 1))
    one = JacobianLens.fit(model, "abcdefghij" * 6, tokenizer=tok, n_prompts=2, seq_len=10, skip_first=2, progress=False)
    assert one.n_prompts == 2
    with pytest.raises(LensError, match="tokenizer"):
        JacobianLens.fit(model, texts, progress=False)


def test_a_fitted_lens_is_a_decoder_everywhere(model: GPT) -> None:
    lens = JacobianLens.fit(model, prompts(2, 12), skip_first=2, progress=False)
    result = minigpt.evaluate_lens(model, torch.tensor(sum(prompts(4, 8, seed=9), [])), window=8,
                                   decoders=["logit", lens])  # fmt: skip
    assert set(result.metrics) == {"logit", "jacobian"}
    kl = result.metrics["jacobian"]["kl"]
    assert kl[-1] == 0 and np.isfinite(kl).all()  # the top row is the model's output
    assert result.decoders[1].params["covers"] == ["h.0", "h.1"]
