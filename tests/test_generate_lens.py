"""The lens during generation: the same ids as `generate`, the same numbers as `logit_lens` over the final
sequence at the generated positions (each decoder), the sampled token as each step's "next", and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, JacobianLens, TunedLens
from minigpt.errors import InputError, LensError
from minigpt.lens import Patchscope
from minigpt.testing import random_state

CONFIG = GPTConfig(vocab_size=37, n_positions=24, n_embd=12, n_head=3, n_layer=3)
FLOATS = ("kl_final", "kl_final_rev", "kl_input", "entropy", "cross_entropy", "prob_next", "logit_next", "top_probs")
INTS = ("top_ids", "rank_next", "rank_final", "rank_input", "final_ids", "token_ids", "next_ids")


@pytest.fixture(scope="module")
def model() -> GPT:
    m = GPT(CONFIG)
    m.load_state_dict(random_state(CONFIG, seed=8, scale=0.4))
    return m.eval()


def decoders(model: GPT) -> dict:
    g = torch.Generator().manual_seed(1)
    J = {l: torch.eye(12) + 0.2 * torch.randn(12, 12, generator=g) for l in (0, 1)}
    tuned = TunedLens.from_model(model)
    with torch.no_grad():
        for t in tuned.translators:
            t.weight.normal_(0, 0.1, generator=g)
    return {"logit": "logit", "tuned": tuned, "jacobian": JacobianLens(J, d_model=12, n_prompts=1),
            "patchscope": Patchscope([3, 9, 4, 1])}  # fmt: skip


def test_the_same_as_logit_lens_over_the_final_sequence(model: GPT) -> None:
    prompt = [5, 17, 2, 30, 8]
    g = torch.Generator().manual_seed(3)
    run = minigpt.generate_lens(model, prompt, 9, decoders=decoders(model), generator=g, k=4)
    T0, n = len(prompt), 9
    assert run.ids[:T0].tolist() == prompt and len(run.ids) == T0 + n and run.n == n
    for label, dec in decoders(model).items():
        got = run.lens[label]
        ref = minigpt.logit_lens(model, torch.from_numpy(run.ids), decoder=dec, k=4, positions=slice(T0 - 1, T0 - 1 + n))
        assert got.labels == ref.labels and got.start == ref.start == T0 - 1 and len(got) == n
        for name in FLOATS:
            diff = np.nanmax(np.abs(getattr(got, name) - getattr(ref, name)))
            assert diff <= 1e-4, (label, name, diff)
        for name in INTS:
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=f"{label} {name}")
        np.testing.assert_array_equal(got.next_ids, run.generated)  # each step's "next" is the token sampled there
        np.testing.assert_array_equal(run.depth[label], ref.depth)


def test_the_ids_are_generates(model: GPT) -> None:
    prompt = torch.tensor([1, 2, 3])
    a = minigpt.generate(model, prompt, 12, top_k=5, generator=torch.Generator().manual_seed(4))
    b = minigpt.generate_lens(model, prompt, 12, top_k=5, generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(b.ids, a.numpy())
    greedy = minigpt.generate_lens(model, prompt, 6, temperature=0)
    np.testing.assert_array_equal(greedy.lens["logit"].final_ids, greedy.generated)  # greedy: the top row's top-1


def test_the_prefix_is_never_run_again(model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = GPT.embed

    def spy(self, idx, past=0):
        seen.append((idx.shape[1], past))
        return real(self, idx, past)

    monkeypatch.setattr(GPT, "embed", spy)
    minigpt.generate_lens(model, [1, 2, 3, 4], 5, decoders=["logit", "norm_only"])
    assert seen == [(4, 0), (1, 4), (1, 5), (1, 6), (1, 7)]


def test_to_dict_is_json(model: GPT) -> None:
    run = minigpt.generate_lens(model, [1, 2], 3)
    d = json.loads(json.dumps(run.to_dict(), allow_nan=False))
    assert d["prompt_len"] == 2 and len(d["ids"]) == 5 and len(d["depth"]["logit"]) == 3
    assert d["lens"]["logit"]["next_ids"] == d["ids"][2:]


def test_bad_requests_get_one_readable_error(model: GPT) -> None:
    with pytest.raises(InputError, match="exceeds the context of 24"):
        minigpt.generate_lens(model, [1, 2, 3], 22)
    with pytest.raises(LensError, match="unknown decoder 'jacobain'"):
        minigpt.generate_lens(model, [1, 2], 3, decoders=["jacobain"])
    with pytest.raises(LensError, match="whole sequence"):
        minigpt.generate_lens(model, [1, 2], 3, decoders=["last_blocks"])
    with pytest.raises(InputError, match="positive number"):
        minigpt.generate_lens(model, [1, 2], 0)
    with pytest.raises(InputError, match="tokenizer"):
        minigpt.generate_lens(model, "text", 2)


def test_the_png_view_draws_the_grid(model: GPT, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from minigpt.plot import plot_generation

    run = minigpt.generate_lens(model, [1, 2, 3], 6, decoders=["logit", "norm_only"], temperature=0)
    fig = plot_generation(run, "norm_only")
    ax = fig.axes[0]
    assert len(ax.texts) == 4 * 6  # rows x steps, each the row's top-1
    assert [t.get_text() for t in ax.get_yticklabels()] == run.lens["norm_only"].labels
    fig.savefig(tmp_path / "run.png")
    with pytest.raises(LensError, match="no lens 'tuned'"):
        plot_generation(run, "tuned")
