"""`evaluate_lens`: the lens over a corpus, against per-window `logit_lens` statistics and against
an independent naive computation (every row's log-softmax in float64), plus its windows, its
JSON layout, its memory and its errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, InputError, LensError, evaluate_lens, logit_lens
from minigpt.lens import CorpusResult, LastBlocks, lens_rows, prediction_depth

from test_lens import layer_norm, random_ids, sharp_model

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2)
CONFIG = GPTConfig(vocab_size=37, n_positions=12, n_embd=12, n_head=3, n_layer=3)
PER_POSITION = ("kl", "entropy", "ce_input", "top1_agreement", "top1_input")  # every position counts
PER_NEXT = ("ce", "top1_accuracy")  # each window's last position is left out


@pytest.fixture(scope="module")
def model() -> GPT:
    return sharp_model(CONFIG, seed=11)


@pytest.fixture(scope="module")
def corpus() -> torch.Tensor:
    return random_ids(50, CONFIG.vocab_size, seed=12)  # 4 windows of 12, then one of 2


def close(got, want, name: str) -> None:
    """1e-6 absolute + 1e-5 relative: late rows' KLs are near 0."""
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5, err_msg=name)


def windows(ids: torch.Tensor, window: int) -> list[torch.Tensor]:
    return [ids[i : i + window] for i in range(0, len(ids), window)]


def per_window_means(model: GPT, ids: torch.Tensor, window: int, decoder, sub_blocks: bool = False) -> dict:
    """The corpus metrics as means of `logit_lens`'s per-position statistics over the windows."""
    results = [logit_lens(model, w, decoder=decoder, sub_blocks=sub_blocks) for w in windows(ids, window)]
    cat = lambda f: np.concatenate([f(r) for r in results], axis=-1).astype(np.float64)  # noqa: E731  (R, N)
    top1 = lambda r: r.top_ids[:, :, 0]  # noqa: E731
    values = {
        "kl": cat(lambda r: r.kl_final) / LN2,
        "entropy": cat(lambda r: r.entropy) / LN2,
        "ce_input": cat(lambda r: -np.log(r.prob_input.astype(np.float64))) / LN2,
        "top1_agreement": cat(lambda r: top1(r) == r.final_ids),
        "top1_input": cat(lambda r: top1(r) == r.token_ids),
        "ce": cat(lambda r: r.cross_entropy[:, :-1]) / LN2,
        "top1_accuracy": cat(lambda r: (top1(r) == r.next_ids)[:, :-1]),
    }
    out = {name: v.mean(-1) for name, v in values.items()}
    for name in ("kl", "entropy", "ce", "ce_input"):
        out[f"{name}_se"] = values[name].std(-1, ddof=1) / np.sqrt(values[name].shape[-1])
    R = len(results[0].labels)
    out["depth_hist"] = np.bincount(np.concatenate([r.depth for r in results]), minlength=R + 1)
    return out


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_corpus_means_equal_per_window_logit_lens(model, corpus, batch_size):
    decoders = ["logit", "norm_only", LastBlocks(2)]
    result = evaluate_lens(model, corpus, decoders=decoders, window=12, batch_size=batch_size)
    assert result.n_tokens == 50 and result.n_windows == 5 and result.window == 12
    assert result.labels == ["embed", "h.0", "h.1", "h.2"]
    for decoder in decoders:
        name = decoder if isinstance(decoder, str) else decoder.name
        want = per_window_means(model, corpus, 12, decoder)
        got = result.metrics[name]
        for metric, value in want.items():
            if metric == "depth_hist":
                np.testing.assert_array_equal(got[metric], value, err_msg=f"{name} {metric}")
            else:
                close(got[metric], value, f"{name} {metric}")
        assert got["depth_hist"].sum() == 50
    # The top row is the model's output under all three decoders.
    for name in ("logit", "last_blocks"):
        assert result.metrics[name]["kl"][-1] == 0 and result.metrics[name]["top1_agreement"][-1] == 1
    assert result.metrics["norm_only"]["kl"][-1] > 1e-3


def test_corpus_with_sub_blocks(model, corpus):
    result = evaluate_lens(model, corpus, decoders="logit", window=12, sub_blocks=True)
    assert [r.label for r in result.rows] == [r.label for r in lens_rows(3, sub_blocks=True)]
    want = per_window_means(model, corpus, 12, "logit", sub_blocks=True)
    for metric in PER_POSITION + PER_NEXT:
        close(result.metrics["logit"][metric], want[metric], metric)
    np.testing.assert_array_equal(result.metrics["logit"]["depth_hist"], want["depth_hist"])


def naive(model: GPT, ids: torch.Tensor, window: int, decoder: str) -> dict:
    """The corpus metrics computed the obvious way: each window's residual stream, every row's
    logits at once in float64, log-softmax, then means over positions. Written here, from the
    definitions, sharing nothing with minigpt/lens."""
    ln, W = model.ln_f, model.wte.weight.detach().double()
    g, b = ln.weight.detach().double(), ln.bias.detach().double()
    sums: dict[str, list] = {m: [] for m in PER_POSITION + PER_NEXT}
    depths = []
    for w in windows(ids, window):
        with torch.no_grad():
            resid = model(w[None]).resid[:, 0].double()  # (R, T, C)
        final = torch.log_softmax(layer_norm(resid[-1], g, b) @ W.T, -1)  # (T, V)
        normed = layer_norm(resid, g, b) if decoder == "logit" else layer_norm(resid)
        logp = torch.log_softmax(normed @ W.T, -1)  # (R, T, V)
        y = final.argmax(-1)  # (T,)
        top1 = logp.argmax(-1)  # (R, T)
        sums["kl"].append((final.exp() * (final - logp)).sum(-1))
        sums["entropy"].append(-(logp.exp() * logp).sum(-1))
        sums["ce_input"].append(-logp.gather(-1, w.expand(len(logp), -1)[..., None])[..., 0])
        sums["top1_agreement"].append((top1 == y).double())
        sums["top1_input"].append((top1 == w).double())
        sums["ce"].append(-logp[:, :-1].gather(-1, w[1:].expand(len(logp), -1)[..., None])[..., 0])
        sums["top1_accuracy"].append((top1[:, :-1] == w[1:]).double())
        agree = top1 == y
        for t in range(len(w)):  # depth by its definition: the lowest row from which all rows agree
            depths.append(min(r for r in range(len(agree) + 1) if agree[r:, t].all()))
    out = {m: torch.cat(v, dim=-1).mean(-1).numpy() for m, v in sums.items()}
    for m in ("kl", "entropy", "ce", "ce_input"):
        out[m] = out[m] / LN2
    out["depth_hist"] = np.bincount(depths, minlength=len(agree) + 1)
    return out


@pytest.mark.parametrize("decoder", ["logit", "norm_only"])
def test_corpus_means_equal_a_naive_float64_computation(model, corpus, decoder):
    result = evaluate_lens(model, corpus, decoders=[decoder], window=12, batch_size=2)
    want = naive(model, corpus, 12, decoder)
    for metric in PER_POSITION + PER_NEXT:
        close(result.metrics[decoder][metric], want[metric], metric)
    np.testing.assert_array_equal(result.metrics[decoder]["depth_hist"], want["depth_hist"])
    assert result.metrics[decoder]["kl"][0] > 0.5  # far from a trivial model


def test_baseline_is_the_models_own_entropy_and_cross_entropy(model, corpus):
    result = evaluate_lens(model, corpus, window=12)
    logit = result.metrics["logit"]
    assert result.baseline["entropy"] == pytest.approx(logit["entropy"][-1], abs=1e-9)
    assert result.baseline["ce"] == pytest.approx(logit["ce"][-1], abs=1e-9)
    # ... and the model's cross-entropy is what its forward pass gives.
    losses = []
    for w in windows(corpus, 12):
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(model(w[None]).logits[0, :-1], w[1:], reduction="none"))
    assert result.baseline["ce"] == pytest.approx(float(torch.cat(losses).mean()) / LN2, abs=1e-6, rel=1e-5)


# ----------------------------------------------------------------------------
# Windows and corpora


def test_ids_corpus_windows_are_consecutive_and_the_last_is_kept(model, corpus):
    a = evaluate_lens(model, corpus, window=12)
    assert a.n_windows == 5 and a.n_tokens == 50
    # The same windows given one by one as separate corpora add up to the same sums.
    parts = [evaluate_lens(model, w, window=12) for w in windows(corpus, 12)]
    kl = sum(p.metrics["logit"]["kl"] * p.n_tokens for p in parts) / 50
    close(a.metrics["logit"]["kl"], kl, "kl")
    # max_tokens cuts the token stream before windowing.
    cut = evaluate_lens(model, corpus, window=12, max_tokens=30)
    same = evaluate_lens(model, corpus[:30], window=12)
    assert cut.n_tokens == 30 and cut.n_windows == 3
    assert cut.to_dict()["metrics"] == same.to_dict()["metrics"]
    # Lists, tuples and numpy arrays of ids are the same corpus.
    for form in (corpus.tolist(), tuple(corpus.tolist()), corpus.numpy()):
        assert evaluate_lens(model, form, window=12).to_dict() == a.to_dict()


@pytest.fixture(scope="module")
def vocab_model(vocab_checkpoint):
    return GPT.from_pretrained(vocab_checkpoint), minigpt.load_tokenizer(vocab_checkpoint)


def test_texts_are_joined_with_end_of_text(vocab_model):
    model, tok = vocab_model
    docs = ["The dog ran to the park.", "A cat sat<|endoftext|> on the mat.\n", "Fin"]
    ids = tok.encode_ordinary(docs[0]) + [50256] + tok.encode_ordinary(docs[1]) + [50256] + tok.encode_ordinary(docs[2])
    from_texts = evaluate_lens(model, docs, tokenizer=tok, window=8)
    from_ids = evaluate_lens(model, ids, tokenizer=tok, window=8)
    assert from_texts.to_dict() == from_ids.to_dict()
    assert from_texts.n_tokens == len(ids) and from_texts.n_windows == math.ceil(len(ids) / 8)
    # Bytes: the UTF-8 lengths of the evaluated tokens (<|endoftext|> counts its 13 characters).
    assert from_texts.n_bytes == sum(len(tok.decode_single_token_bytes(i)) for i in ids)
    assert from_texts.n_bytes == len("<|endoftext|>".join(docs).encode("utf-8"))
    # A generator of documents, and max_tokens cutting it.
    lazy = evaluate_lens(model, (d for d in docs), tokenizer=tok, window=8, max_tokens=10)
    assert lazy.to_dict() == evaluate_lens(model, ids[:10], tokenizer=tok, window=8).to_dict()
    # A str is one text, never an iterable of characters.
    one = evaluate_lens(model, docs[0], tokenizer=tok, window=8)
    assert one.n_tokens == len(tok.encode_ordinary(docs[0]))
    # Without a tokenizer an ids corpus has no byte count, and no bits-per-byte part.
    plain = evaluate_lens(model, ids, window=8)
    assert plain.n_bytes is None and plain.to_dict()["tuned_lens"] is None


def test_to_dict_layout_and_units(vocab_model, tmp_path):
    model, tok = vocab_model
    text = "Hello world, this is a small corpus for the lens. " * 3
    result = evaluate_lens(model, text, tokenizer=tok, decoders=["ln_f", "norm_only"], window=16)
    data = json.loads(result.to_json(tmp_path / "metrics.json"))
    assert data == json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    R = 1 + model.config.n_layer
    assert data["labels"] == ["embed", "h.0", "h.1", "h.2"] and data["window"] == 16
    assert data["n_tokens"] == len(tok.encode_ordinary(text)) and data["n_bytes"] == len(text.encode())
    assert set(data["metrics"]) == {"logit", "norm_only"}  # "ln_f" is the default's alias; its name is "logit"
    for name, metrics in data["metrics"].items():
        assert set(metrics) >= {"kl", "kl_se", "entropy", "entropy_se", "ce", "ce_se", "top1_agreement",
                                "top1_accuracy", "depth_hist", "ce_input", "ce_input_se", "top1_input"}  # fmt: skip
        for key, value in metrics.items():
            assert len(value) == (R + 1 if key == "depth_hist" else R), (name, key)
        assert sum(metrics["depth_hist"]) == data["n_tokens"]
        assert all(0 <= x <= 1 for x in metrics["top1_agreement"] + metrics["top1_accuracy"] + metrics["top1_input"])
    # tuned-lens' aggregate: bits per byte, layer_i = resid[i] for i < L, the top row as the baseline.
    per_byte = data["n_tokens"] / data["n_bytes"]
    tl = data["tuned_lens"]
    assert set(tl) == {"logit", "norm_only", "baseline"}
    for name in ("logit", "norm_only"):
        for metric in ("kl", "ce", "entropy"):
            assert list(tl[name][metric]) == ["layer_0", "layer_1", "layer_2"]
            for i in range(3):
                assert tl[name][metric][f"layer_{i}"] == pytest.approx(data["metrics"][name][metric][i] * per_byte)
    assert tl["baseline"]["ce"]["final"] == pytest.approx(data["metrics"]["logit"]["ce"][-1] * per_byte)
    assert tl["baseline"]["entropy"]["final"] == pytest.approx(data["metrics"]["logit"]["entropy"][-1] * per_byte)
    # Save, load, and a short repr.
    result.save(tmp_path / "r.json")
    loaded = CorpusResult.load(tmp_path / "r.json")
    assert loaded.to_dict() == result.to_dict()
    assert len(repr(result)) < 160 and "\n" not in repr(result) and "'norm_only'" in repr(result)


def test_sub_block_rows_stay_out_of_the_tuned_lens_layout(vocab_model):
    model, tok = vocab_model
    result = evaluate_lens(model, "One two three four five six.", tokenizer=tok, window=16, sub_blocks=True)
    tl = result.to_dict()["tuned_lens"]["logit"]["kl"]
    assert list(tl) == ["layer_0", "layer_1", "layer_2"]
    assert tl["layer_2"] == pytest.approx(result.bits_per_byte(result.metric("kl")[result.labels.index("h.1")]))


def test_bits_per_byte_takes_a_metric_name(vocab_model):
    model, tok = vocab_model
    text = "One two three four five six seven eight."
    result = evaluate_lens(model, text, tokenizer=tok, window=16, decoders=["logit", "norm_only"])
    per_byte = result.n_tokens / len(text.encode("utf-8"))  # one window: every token counted once
    np.testing.assert_allclose(result.bits_per_byte("kl"), result.metric("kl") * per_byte, rtol=1e-12)
    np.testing.assert_allclose(result.bits_per_byte("ce_se", "norm_only"), result.metric("ce_se", "norm_only") * per_byte,
                               rtol=1e-12)  # fmt: skip
    assert result.bits_per_byte(2.0) == pytest.approx(2.0 * per_byte)
    with pytest.raises(LensError, match="'top1_agreement' is not in bits per token; bits_per_byte takes one of kl"):
        result.bits_per_byte("top1_agreement")
    with pytest.raises(LensError, match="no decoder 'tuned' in this result"):
        result.bits_per_byte("kl", "tuned")
    with pytest.raises(LensError, match="takes a metric name such as 'kl' or numbers"):
        result.bits_per_byte(None)  # type: ignore[arg-type]


def test_progress_bar(model, corpus, capsys):
    evaluate_lens(model, corpus, window=12, progress=True)
    assert "evaluate_lens" in capsys.readouterr().err
    evaluate_lens(model, corpus, window=12)  # stderr is not a terminal under pytest: no bar
    assert capsys.readouterr().err == ""


def test_bf16_matmul_keeps_the_references_exact(model, corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", minigpt.lens.SlowMatmulWarning)  # CPUs without bf16 units warn
        fast = evaluate_lens(model, corpus, window=12, matmul="bf16")
    exact = evaluate_lens(model, corpus, window=12)
    assert fast.matmul == "bf16" and fast.metrics["logit"]["kl"][-1] == 0  # the top row is the reference itself
    np.testing.assert_allclose(fast.metrics["logit"]["kl"], exact.metrics["logit"]["kl"], atol=0.05, rtol=0.05)
    for name, value in exact.baseline.items():  # the model's own numbers are fp32 whatever the knob
        assert fast.baseline[name] == pytest.approx(value, rel=1e-6), name
    assert not np.array_equal(fast.metrics["logit"]["kl"][:-1], exact.metrics["logit"]["kl"][:-1])  # bf16 really ran


def test_bf16_warns_where_it_is_slow(model, corpus, monkeypatch):
    from minigpt.lens import _matmul

    monkeypatch.setattr(_matmul, "bf16_is_fast", lambda device: False)
    with pytest.warns(minigpt.lens.SlowMatmulWarning, match="no bf16 matrix units .* use matmul='exact'"):
        evaluate_lens(model, corpus, window=12, matmul="bf16")
    monkeypatch.setattr(_matmul, "bf16_is_fast", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", minigpt.lens.SlowMatmulWarning)
        evaluate_lens(model, corpus, window=12, matmul="bf16")


# ----------------------------------------------------------------------------
# Memory


MEMORY_CHILD = textwrap.dedent("""
    import json, sys, torch
    from minigpt import GPT, GPTConfig, evaluate_lens
    from minigpt.lens import lens_rows, row_streams
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = GPTConfig(vocab_size=50257, n_positions=64, n_embd=16, n_head=2, n_layer=2)
    model = GPT(config).eval()
    tokens = int(sys.argv[1])
    ids = torch.randint(0, config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(1))
    def peak():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    with torch.inference_mode():
        row_streams(model, ids[: 4 * 64].view(4, 64), lens_rows(2))  # the model and one forward pass
    base = peak()
    evaluate_lens(model, ids, window=64, batch_size=4)
    print(json.dumps({"base": base, "peak": peak()}))
""")


def lens_memory(tokens: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tokens)], capture_output=True, text=True, env=env, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    return m["peak"] - m["base"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_memory_stays_flat_when_the_corpus_grows_tenfold():
    """Peak RSS above the model and one forward pass, for 256 and 2560 tokens of a model with
    GPT-2's vocabulary: a batch's (B, T, V) logits would be 51 MB here, (R, N, V) floats 1.5 GB."""
    small, large = lens_memory(256), lens_memory(2560)
    assert large - small < 50e6, (small, large)
    assert small < 1.5e9, small  # bounded by the work space, not by the corpus


# ----------------------------------------------------------------------------
# Bad input


BAD = [
    (dict(corpus=[]), InputError, r"the corpus is empty"),
    (dict(corpus=torch.tensor([], dtype=torch.long)), InputError, r"the corpus is empty"),
    (dict(corpus=iter([])), InputError, r"the corpus is empty"),
    (dict(window=13), LensError, r"window must be between 1 and the model's context of 12 tokens, got 13"),
    (dict(window=0), LensError, r"window must be between 1 and"),
    (dict(max_tokens=0), LensError, r"max_tokens must be a positive number of tokens, got 0"),
    (dict(max_tokens=-5), LensError, r"max_tokens must be a positive number of tokens, got -5"),
    (dict(batch_size=0), LensError, r"batch_size must be a positive number of windows"),
    (dict(decoders=["lnf"]), LensError, r"unknown decoder 'lnf'; choose one of logit, ln_f_no_bias"),
    (dict(decoders=[]), LensError, r"decoders is empty"),
    (dict(decoders=None), LensError, r"decoders is a list of decoders or names"),
    (dict(decoders={"": "logit"}), LensError, r"a decoder's label is a non-empty string"),
    (dict(decoders=[LastBlocks(4)]), LensError, r"last_blocks must be between 1 and the number of blocks \(3\), got 4"),
    (dict(corpus="some text"), LensError, r"a text corpus needs a tokenizer"),
    (dict(corpus=["a", "b"]), LensError, r"a text corpus needs a tokenizer"),
    (dict(corpus=[1, 2, 99]), InputError, r"token id 99 is outside the vocabulary"),
    (dict(corpus=torch.zeros(2, 5, dtype=torch.long)), InputError, r"one integer sequence \(N,\), got \(2, 5\)"),
    (dict(corpus=[1.5, 2.5]), InputError, r"its first item is a float"),
    (dict(corpus=b"bytes"), InputError, r"decode it to a str first"),
    (dict(matmul="int8"), LensError, r"unknown matmul 'int8'"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=lambda x: repr(x)[:50])
def test_bad_input(model, corpus, kwargs, error, message):
    kwargs = dict(kwargs)
    with pytest.raises(error, match=message):
        evaluate_lens(model, kwargs.pop("corpus", corpus), **kwargs)


def test_labels_key_the_numbers(model, corpus):
    """A dict gives each decoder its label; a name that comes twice in a list is numbered."""
    both = evaluate_lens(model, corpus, decoders={"mine": "norm_only", "theirs": "logit"}, window=12)
    assert list(both.metrics) == ["mine", "theirs"] and [d.name for d in both.decoders] == ["norm_only", "logit"]
    listed = evaluate_lens(model, corpus, decoders=["logit", "norm_only", "ln_f"], window=12)
    assert list(listed.metrics) == ["logit", "norm_only", "logit_2"]
    for metric in ("kl", "ce", "top1_agreement", "depth_hist"):
        np.testing.assert_array_equal(listed.metric(metric, "logit_2"), listed.metric(metric, "logit"))
        np.testing.assert_array_equal(both.metric(metric, "mine"), listed.metric(metric, "norm_only"))
    data = both.to_dict()
    assert list(data["decoders"]) == ["mine", "theirs"] and data["decoders"]["mine"]["name"] == "norm_only"
    assert list(CorpusResult.from_dict(json.loads(json.dumps(data))).metrics) == ["mine", "theirs"]


def test_empty_text_corpus(vocab_model):
    model, tok = vocab_model
    for empty in ("", [""], iter([""])):
        with pytest.raises(InputError, match="the corpus is empty"):
            evaluate_lens(model, empty, tokenizer=tok)


def test_prediction_depth_rule():
    """The depth rule on a hand-made agreement table (rows bottom to top, positions across)."""
    agree = torch.tensor([
        [0, 1, 0, 1, 0],
        [1, 0, 0, 1, 0],
        [1, 1, 0, 1, 1],
        [1, 1, 1, 1, 0],
    ], dtype=torch.bool)  # fmt: skip
    depth, first_hit = prediction_depth(agree)
    assert depth.tolist() == [1, 2, 3, 0, 4] and first_hit.tolist() == [1, 0, 3, 0, 2]
