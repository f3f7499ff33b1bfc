"""Direct logit attribution (`minigpt.attribute`), against an independent float64 computation.

The reference is `transformers.GPT2LMHeadModel` in float64 with random, perturbed weights. Hooks read
what each head, attention, neuron and MLP wrote and each row's full residual; the test then applies the
convention literally, `W_E[t] · (γ ⊙ (c − μ(c))) / σ(x_row)`, without the folded direction the code uses.
Sizes are odd and distinct (C=15, H=3, D=5, M=23, V=41), so a mis-split head or a transposed matrix fails.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, InputError, LensError
from minigpt.attribution import Component, as_row, report_attribution
from minigpt.lens import Row, lens_rows
from minigpt.testing import random_state

CONFIG = GPTConfig(vocab_size=41, n_positions=20, n_embd=15, n_head=3, n_layer=3, n_inner=23)
TOL = 1e-5  # per-component values against the float64 reference (minigpt runs in float32)


def gap_limit(total: np.ndarray) -> float:
    return 1e-4 * float(np.abs(total).max()) + 1e-5


# ----------------------------------------------------------------------------
# The reference: HF GPT-2 in float64, its writes read with hooks


class Reference:
    def __init__(self, seed: int = 3) -> None:
        transformers = pytest.importorskip("transformers")
        c = CONFIG
        hf_config = transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.n_inner, attn_implementation="eager", bos_token_id=None, eos_token_id=None, pad_token_id=None,
        )  # fmt: skip
        torch.manual_seed(seed)
        hf = transformers.GPT2LMHeadModel(hf_config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # HF's init has γ = 1 and biases 0: move every parameter, or a dropped bias would pass
            for _, p in hf.named_parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
        state = {k.removeprefix("transformer."): v.detach().clone() for k, v in hf.state_dict().items()
                 if k != "lm_head.weight" and not re.fullmatch(r"h\.\d+\.attn\.(bias|masked_bias)", k.removeprefix("transformer."))}  # fmt: skip
        self.model = GPT(c).eval()
        self.model.load_state_dict(state)
        self.hf = hf.double().eval()
        self.ids = torch.randint(0, c.vocab_size, (13,), generator=torch.Generator().manual_seed(11))
        self._hooks()

    def _hooks(self) -> None:
        t = self.hf.transformer
        got: dict[str, torch.Tensor] = {}
        handles = []
        first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
        for i, block in enumerate(t.h):
            handles += [
                block.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(f"pre{i}", a[0][0])),
                block.ln_2.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(f"mid{i}", a[0][0])),
                block.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(f"post{i}", first(o)[0])),
                block.attn.c_proj.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(f"z{i}", a[0][0])),
                block.attn.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(f"attn{i}", first(o)[0])),
                block.mlp.c_proj.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(f"act{i}", a[0][0])),
                block.mlp.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(f"mlp{i}", first(o)[0])),
            ]  # fmt: skip
        with torch.no_grad():
            self.logits = self.hf(self.ids[None]).logits[0]  # (T, V) float64
        for h in handles:
            h.remove()
        self.got = got

    # -- the row's residual and the convention, written out

    def resid(self, row: Row) -> torch.Tensor:
        t = self.hf.transformer
        if row.site == "embed":
            return self.embed() + self.pos_embed()
        return self.got[("mid" if row.site == "resid_mid" else "post") + str(row.block)]

    def embed(self) -> torch.Tensor:
        return self.hf.transformer.wte.weight[self.ids].detach()

    def pos_embed(self) -> torch.Tensor:
        return self.hf.transformer.wpe.weight[: len(self.ids)].detach()

    def value(self, c: torch.Tensor, row: Row, target: torch.Tensor, sigma: str = "row") -> torch.Tensor:
        """W_E[t] · (γ ⊙ (c − μ(c))) / σ, σ of the row's full residual (or of c itself)."""
        lnf = self.hf.transformer.ln_f
        x = self.resid(row) if sigma == "row" else c
        s = torch.sqrt(x.var(-1, unbiased=False) + lnf.eps)
        normed = lnf.weight * (c - c.mean(-1, keepdim=True)) / s[..., None]
        return (normed * self.hf.transformer.wte.weight[target]).sum(-1).detach()

    def head_writes(self, b: int, heads: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each head's write (T, C) and the block's attention bias (C,), from the hooked z and HF's weights."""
        attn, C, H = self.hf.transformer.h[b].attn, CONFIG.n_embd, CONFIG.n_head
        D = C // H
        W_O, b_O = attn.c_proj.weight.detach(), attn.c_proj.bias.detach()
        z = self.got[f"z{b}"]  # (T, C): heads side by side
        writes, bias = [], b_O
        for h in range(H):
            zh, rows = z[:, h * D : (h + 1) * D], W_O[h * D : (h + 1) * D]
            if heads == "folded":  # what the head adds whatever it reads: its value bias plus β_1 through W_V
                W_V = attn.c_attn.weight.detach()[:, 2 * C + h * D : 2 * C + (h + 1) * D]
                c_h = attn.c_attn.bias.detach()[2 * C + h * D : 2 * C + (h + 1) * D] + self.hf.transformer.h[b].ln_1.bias.detach() @ W_V
                zh, bias = zh - c_h, bias + c_h @ rows
            writes.append(zh @ rows)
        return writes, bias

    def neuron_values(self, b: int, row: Row, target: torch.Tensor, sigma: str = "row") -> torch.Tensor:
        """(M, T), each neuron's write act_m · W_out[m] put through the convention (small sizes: (T, M, C) is fine here)."""
        mlp = self.hf.transformer.h[b].mlp
        writes = self.got[f"act{b}"][:, :, None] * mlp.c_proj.weight.detach()[None]  # (T, M, C)
        return torch.stack([self.value(writes[:, m], row, target, sigma) for m in range(writes.shape[1])])

    def expected(self, row: Row, target: torch.Tensor, by: str, heads: str, sigma: str = "row") -> dict[str, torch.Tensor]:
        """label -> (T,) values: the whole decomposition, independently of minigpt."""
        out = {"embed": self.value(self.embed(), row, target, sigma), "pos_embed": self.value(self.pos_embed(), row, target, sigma)}
        top = -1 if row.site == "embed" else row.block
        for b in range(top + 1):
            if by == "component":
                out[f"h.{b}.attn"] = self.value(self.got[f"attn{b}"], row, target, sigma)
            else:
                writes, bias = self.head_writes(b, heads)
                for h, w in enumerate(writes):
                    out[f"h.{b}.attn.head{h}"] = self.value(w, row, target, sigma)
                out[f"h.{b}.attn_bias"] = self.value(bias.expand_as(writes[0]), row, target, sigma)
            if row.site == "resid_mid" and b == row.block:
                break
            if by == "neuron":
                for m, v in enumerate(self.neuron_values(b, row, target, sigma)):
                    out[f"h.{b}.mlp.n{m}"] = v
                bias = self.hf.transformer.h[b].mlp.c_proj.bias.detach()
                out[f"h.{b}.mlp_bias"] = self.value(bias.expand(len(self.ids), -1), row, target, sigma)
            else:
                out[f"h.{b}.mlp"] = self.value(self.got[f"mlp{b}"], row, target, sigma)
        lnf = self.hf.transformer.ln_f
        out["ln_bias"] = (self.hf.transformer.wte.weight[target] @ lnf.bias).detach()
        return out

    def total(self, row: Row, target: torch.Tensor) -> torch.Tensor:
        lnf = self.hf.transformer.ln_f
        logits = lnf(self.resid(row)) @ self.hf.transformer.wte.weight.T
        return logits.gather(-1, target[:, None])[:, 0].detach()


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference()


ROWS = [Row.embed(), Row.mid(0), Row.post(0), Row.mid(1), Row.post(1), Row.mid(2), Row.post(2)]


def compare(att: minigpt.Attribution, expected: dict[str, torch.Tensor]) -> float:
    assert att.labels == list(expected), "the components or their order differ from the reference"
    worst = 0.0
    for label, mine, theirs in zip(att.labels, att.values, expected.values()):
        d = float(np.abs(mine - theirs.numpy()).max())
        assert d < TOL, f"{label}: max |Δ| {d:.2e} against the float64 reference"
        worst = max(worst, d)
    return worst


# ----------------------------------------------------------------------------
# Values, the sum check, and the convention's edges


@pytest.mark.parametrize("by,heads", [("component", "folded"), ("head", "folded"), ("head", "raw"), ("neuron", "folded"), ("neuron", "raw")])
@pytest.mark.parametrize("row", [Row.post(2), Row.post(0), Row.mid(1)], ids=lambda r: r.label)
def test_values_match_float64_reference(ref: Reference, by: str, heads: str, row: Row) -> None:
    target = torch.randint(0, CONFIG.vocab_size, (len(ref.ids),), generator=torch.Generator().manual_seed(5))
    att = minigpt.attribute(ref.model, ref.ids, target=target, row=row, by=by, heads=heads)
    assert att.values.shape == (len(att.components), len(ref.ids)) and att.values.dtype == np.float32
    worst = compare(att, ref.expected(row, target, by, heads))
    print(f"{by}/{heads} at {row.label}: max |Δ| {worst:.2e}")
    np.testing.assert_allclose(att.total, ref.total(row, target).numpy(), atol=TOL)


@pytest.mark.parametrize("row", ROWS + [Row.prior()], ids=lambda r: r.label)
@pytest.mark.parametrize("by", ["component", "head", "neuron"])
def test_components_sum_to_the_lens_logit_at_every_row(ref: Reference, row: Row, by: str) -> None:
    att = minigpt.attribute(ref.model, ref.ids, row=row, by=by)  # the default target: the final top-1
    lens = minigpt.logit_lens(ref.model, ref.ids, sub_blocks=True, prior=True, keep_logits=True)
    r = lens.labels.index(row.label)
    lens_logit = lens.logits[r, np.arange(len(ref.ids)), att.target_ids]
    np.testing.assert_allclose(att.total, lens_logit, atol=1e-5)
    gap = np.abs(att.total - att.values.astype(np.float64).sum(0))
    assert gap.max() <= gap_limit(att.total), f"{row.label}: gap {gap.max():.2e}"
    np.testing.assert_array_equal(att.gap, (att.total.astype(np.float64) - att.values.astype(np.float64).sum(0)).astype(np.float32))


def test_default_target_is_the_final_top1(ref: Reference) -> None:
    att = minigpt.attribute(ref.model, ref.ids, row="h.0")
    np.testing.assert_array_equal(att.target_ids, ref.logits.argmax(-1).numpy())


def test_lower_rows_differ_from_using_the_top_rows_sigma(ref: Reference) -> None:
    # The reference with the top row's σ (TransformerLens #1076) is far from what attribute gives at h.0.
    target = ref.logits.argmax(-1)
    att = minigpt.attribute(ref.model, ref.ids, row=Row.post(0), target=target, by="component")
    wrong = ref.expected(Row.post(0), target, "component", "folded")
    s_row = torch.sqrt(ref.resid(Row.post(0)).var(-1, unbiased=False) + 1e-5)
    s_top = torch.sqrt(ref.resid(Row.post(2)).var(-1, unbiased=False) + 1e-5)
    assert float((s_row / s_top - 1).abs().max()) > 0.05  # the rows' scales really differ here
    assert float(np.abs(att.values[0] - (wrong["embed"] * s_row / s_top).numpy()).max()) > 1e-3


def test_parts_add_up_to_their_component(ref: Reference) -> None:
    target = ref.logits.argmax(-1)
    comp = minigpt.attribute(ref.model, ref.ids, target=target, by="component")
    for heads in ("folded", "raw"):
        neuron = minigpt.attribute(ref.model, ref.ids, target=target, by="neuron", heads=heads)
        kinds = np.array([c.kind for c in neuron.components])
        blocks = np.array([c.block for c in neuron.components])
        for b in range(CONFIG.n_layer):
            mlp = neuron.values[(blocks == b) & np.isin(kinds, ["mlp_neuron", "mlp_bias"])].sum(0)
            attn = neuron.values[(blocks == b) & np.isin(kinds, ["attn_head", "attn_bias"])].sum(0)
            assert ((blocks == b) & (kinds == "mlp_neuron")).sum() == CONFIG.mlp_width
            np.testing.assert_allclose(mlp, comp.values[comp.labels.index(f"h.{b}.mlp")], atol=2e-6)
            np.testing.assert_allclose(attn, comp.values[comp.labels.index(f"h.{b}.attn")], atol=2e-6)


def test_folded_and_raw_heads_differ_by_the_constant_only(ref: Reference) -> None:
    target = 7  # one token at every position: one direction
    folded = minigpt.attribute(ref.model, ref.ids, target=target, heads="folded")
    raw = minigpt.attribute(ref.model, ref.ids, target=target, heads="raw")
    diff = raw.values - folded.values
    head = np.array([c.kind == "attn_head" for c in folded.components])
    # A head's constant c_h @ W_O[h] is the same vector at every position, so raw − folded is that
    # vector's value: constant along positions once the row's σ (which varies) is multiplied back.
    s = torch.sqrt(torch.as_tensor(ref.resid(Row.post(2))).var(-1, unbiased=False) + 1e-5).numpy()
    scaled = diff[head] * s
    np.testing.assert_allclose(scaled, np.repeat(scaled[:, :1], scaled.shape[1], 1), atol=1e-5)
    assert np.abs(diff[head]).max() > 1e-3  # the constant is not zero with these biases
    np.testing.assert_allclose(raw.values.sum(0), folded.values.sum(0), atol=1e-5)


def test_against_is_antisymmetric_and_zero_against_itself(ref: Reference) -> None:
    a, b = 7, 30
    ab = minigpt.attribute(ref.model, ref.ids, target=a, against=b, by="neuron")
    ba = minigpt.attribute(ref.model, ref.ids, target=b, against=a, by="neuron")
    np.testing.assert_allclose(ab.values, -ba.values, atol=1e-6)
    np.testing.assert_allclose(ab.total, -ba.total, atol=1e-6)
    ta = minigpt.attribute(ref.model, ref.ids, target=a, by="neuron")
    tb = minigpt.attribute(ref.model, ref.ids, target=b, by="neuron")
    np.testing.assert_allclose(ab.values, ta.values - tb.values, atol=1e-5)
    np.testing.assert_allclose(ab.total, ref.logits[:, a].numpy() - ref.logits[:, b].numpy(), atol=TOL)
    same = minigpt.attribute(ref.model, ref.ids, target=a, against=a)
    assert np.all(same.values == 0) and np.all(same.total == 0)


def test_per_component_is_linearised_and_says_so(ref: Reference) -> None:
    target = ref.logits.argmax(-1)
    for by in ("component", "head", "neuron"):
        att = minigpt.attribute(ref.model, ref.ids, target=target, by=by, ln="per_component")
        expected = ref.expected(Row.post(2), target, by, "folded", sigma="own")
        assert att.labels == list(expected)
        for label, mine, theirs in zip(att.labels, att.values, expected.values()):
            np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-4, rtol=1e-4, err_msg=label)
        assert not att.exact and np.abs(att.gap).max() > 1e-2  # it does not sum: the gap shows it
        assert "does not sum" in repr(att)


def test_one_head_alone_writes_the_answer() -> None:
    # Every write into the stream is zero except the small embeddings and head 1 of block 1, which reads
    # its input through a large W_V and writes through a large W_O: only that head may come out large.
    c = CONFIG
    model = GPT(c).eval()
    state = random_state(c, seed=9, scale=0.02)
    C, D, B = c.n_embd, c.head_dim, 1
    for b in range(c.n_layer):
        state[f"h.{b}.attn.c_proj.weight"].zero_()
        state[f"h.{b}.attn.c_proj.bias"].zero_()
        state[f"h.{b}.mlp.c_proj.weight"].zero_()
        state[f"h.{b}.mlp.c_proj.bias"].zero_()
    g = torch.Generator().manual_seed(2)
    state[f"h.{B}.attn.c_attn.weight"][:, 2 * C + D : 2 * C + 2 * D] = torch.randn(C, D, generator=g)
    state[f"h.{B}.attn.c_proj.weight"][D : 2 * D] = 3 * torch.randn(D, C, generator=g)
    state["ln_f.bias"].zero_()  # no prior either: ln_bias is zero
    model.load_state_dict(state, strict=False)
    ids = torch.randint(0, c.vocab_size, (11,), generator=g)
    att = minigpt.attribute(model, ids, by="head")
    head = att.labels.index(f"h.{B}.attn.head1")
    for t in range(len(ids)):
        assert att.top(1, t)[0][0] == Component("attn_head", B, head=1)
    others = np.delete(np.abs(att.values), [head, att.labels.index(f"h.{B}.attn_bias")], axis=0)
    assert np.abs(att.values[head]).min() > 10 * others.max()
    zero_heads = [i for i, comp in enumerate(att.components) if comp.kind == "attn_head" and i != head]
    assert np.all(att.values[zero_heads] == 0)


def test_positions_slice_the_columns(ref: Reference) -> None:
    full = minigpt.attribute(ref.model, ref.ids, target=5, by="neuron")
    part = minigpt.attribute(ref.model, ref.ids, target=5, by="neuron", positions=slice(4, 9))
    assert part.start == 4 and part.values.shape[1] == 5
    np.testing.assert_allclose(part.values, full.values[:, 4:9], atol=1e-6)
    nxt = minigpt.attribute(ref.model, ref.ids, target=ref.ids[1:], positions=slice(0, -1))
    np.testing.assert_array_equal(nxt.target_ids, ref.ids[1:].numpy())


def test_rows_from_every_form() -> None:
    L = CONFIG.n_layer
    assert as_row(None, L) == Row.post(L - 1)
    assert as_row(("resid_post", 1), L) == Row.post(1) == as_row("h.1", L) == as_row(Row.post(1), L)
    assert as_row(("resid_mid", 0), L) == Row.mid(0) == as_row("h.0.resid_mid", L)
    assert as_row(("embed", -1), L) == Row.embed() == as_row("embed", L)


# ----------------------------------------------------------------------------
# The value: top, repr, files, HTML


def test_top_repr_json_and_html(ref: Reference) -> None:
    att = minigpt.attribute(ref.model, ref.ids, by="head")
    top = att.top(3, position=4)
    col = att.values[:, 4]
    assert [abs(v) for _, v in top] == sorted(np.abs(col).tolist(), reverse=True)[:3]
    assert all(att.values[att.labels.index(c.label), 4] == v for c, v in top)
    assert "\n" not in repr(att) and "row h.2" in repr(att) and "exact" in repr(att)
    back = minigpt.Attribution.from_json(att.to_json())
    np.testing.assert_array_equal(back.values, att.values)
    assert back.components == att.components and back.row == att.row
    json.loads(att.to_json())
    html = att._repr_html_()
    assert top[0][0].label in html and "gap" in html
    assert "gap" in att.table(5)


def test_text_target_on_the_shipped_model() -> None:
    model, tok = minigpt.GPT.from_pretrained("shakespeare"), minigpt.load_tokenizer("shakespeare")
    att = minigpt.attribute(model, "ROMEO: I love thee, my dear", tokenizer=tok, target=" lady", against=" lord")
    assert att.target_ids[0] == tok.encode_ordinary(" lady")[0] and att.against_ids[0] == tok.encode_ordinary(" lord")[0]
    assert "' lady'" in repr(att) and "' lord'" in repr(att)
    assert np.abs(att.gap).max() <= gap_limit(att.total)
    with pytest.raises(InputError, match="3 tokens|tokens .*not one"):
        minigpt.attribute(model, "ROMEO: I love", tokenizer=tok, target=" my dear lady")


# ----------------------------------------------------------------------------
# Bad input: one readable error each


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(target=41), InputError, r"target id 41 is outside the vocabulary \[0, 41\)"),
    (dict(target=-1), InputError, "outside the vocabulary"),
    (dict(against=[1, 2]), InputError, "one per token"),
    (dict(target=" Paris"), InputError, "pass tokenizer="),
    (dict(target=True), InputError, "token id"),
    (dict(by="neurons"), LensError, "unknown by='neurons'; choose one of 'component', 'head', 'neuron'"),
    (dict(heads="fold"), LensError, "unknown heads"),
    (dict(ln="exact"), LensError, "unknown ln"),
    (dict(row=("resid_post", 3)), LensError, "above the top row.*at most h.2"),
    (dict(row="h.3"), LensError, "no row 'h.3'"),
    (dict(row=("middle", 1)), LensError, "unknown row site"),
    (dict(positions=slice(20, 30)), LensError, "select nothing"),
])  # fmt: skip
def test_bad_input_is_one_readable_error(ref: Reference, kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        minigpt.attribute(ref.model, ref.ids, **kwargs)


def test_bad_tokens(ref: Reference) -> None:
    with pytest.raises(InputError, match="needs a tokenizer"):
        minigpt.attribute(ref.model, "some text")
    with pytest.raises(InputError, match="empty"):
        minigpt.attribute(ref.model, [])
    with pytest.raises(InputError, match="outside the vocabulary"):
        minigpt.attribute(ref.model, [1, 99])


# ----------------------------------------------------------------------------
# The report's data: each lens cell's top components


def test_report_data_equals_attribute_per_cell(ref: Reference) -> None:
    lens = minigpt.logit_lens(ref.model, ref.ids, sub_blocks=True, k=10, positions=slice(3, None))
    data = report_attribution(ref.model, ref.ids, lens, k=5)
    assert data["start"] == 3 and data["T"] == len(ref.ids) - 3
    for r, label in enumerate(lens.labels):
        for t in (0, 6):
            cell = data["cells"][label][t]
            att = minigpt.attribute(ref.model, ref.ids, target=int(lens.top_ids[r, t, 0]), row=label, by="head")
            top = att.top(5, position=3 + t)
            assert [l for l, _ in cell["top"]] == [c.label for c, _ in top]
            np.testing.assert_allclose([v for _, v in cell["top"]], [v for _, v in top], atol=1e-5)
            assert cell["id"] == lens.top_ids[r, t, 0]
            assert abs(cell["total"] - lens.top_logits[r, t, 0]) < 1e-4


# ----------------------------------------------------------------------------
# The figure and the command


def test_plot_attribution_draws_heads_and_bars(ref: Reference) -> None:
    from minigpt.plot_attribution import plot_attribution

    att = minigpt.attribute(ref.model, ref.ids, by="head")
    fig = plot_attribution(att, position=5, k=6)
    heat, bars = fig.axes[0], fig.axes[1]
    grid = heat.images[0].get_array()
    assert grid.shape == (CONFIG.n_layer, CONFIG.n_head)
    assert grid[1, 2] == att.values[att.labels.index("h.1.attn.head2"), 5]
    assert [t.get_text() for t in bars.get_yticklabels()][::-1] == [c.label for c, _ in att.top(6, 5)]
    with pytest.raises(LensError, match="no heads"):
        plot_attribution(minigpt.attribute(ref.model, ref.ids, by="component"), "heads")


def test_import_minigpt_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, minigpt; minigpt.attribute; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_cli_attribute(tmp_path, capsys) -> None:
    from minigpt.cli import main

    text = "ROMEO: I love thee, my dear"
    assert main(["attribute", text, "--model", "shakespeare", "--target", " lady", "-o", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    att = minigpt.Attribution.from_json(tmp_path / "a.json")
    assert att.top(1)[0][0].label in printed and "gap" in printed
    model, tok = minigpt.GPT.from_pretrained("shakespeare"), minigpt.load_tokenizer("shakespeare")
    direct = minigpt.attribute(model, text, tokenizer=tok, target=" lady")
    np.testing.assert_allclose(att.values, direct.values, atol=1e-6)
    assert main(["attribute", text, "--model", "shakespeare", "--row", "h.1", "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["attribute", text, "--model", "shakespeare", "-o", str(tmp_path / "a.html")]) == 0
    assert "mg-att-panel" in (tmp_path / "a.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv,code,words", [
    (["--target", " my dear lady"], 2, "is 3 tokens"),
    (["--row", "h.9"], 2, "--row h.9: this model's rows"),
    (["--by", "heads"], 2, "invalid choice"),
    (["--position", "40"], 2, "--position 40"),
    (["-o", "a.gif"], 2, "unknown format"),
    (["--target", "60000"], 2, "token ids go from 0 to 50256"),
    (["-o", "no/such/dir/a.png"], 1, "does not exist"),
])  # fmt: skip
def test_cli_errors_are_one_line_before_loading(argv, code, words, capsys, monkeypatch) -> None:
    from minigpt.cli import main

    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the options were checked")

    monkeypatch.setattr(minigpt.GPT, "from_pretrained", refuse)
    assert main(["attribute", "ROMEO: I love", "--model", "shakespeare", *argv]) == code
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
