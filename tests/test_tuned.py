"""The tuned lens and the input probe (minigpt.TunedLens): exact decoding, tuned-lens' files, the hub,
the training recipe, exact resume, data-parallel training under torchrun, the CLI, and bad input.

The references are independent of the code under test: transformers' GPT2LMHeadModel hidden states
decoded by hand (`ln_f(h + h Wᵀ + b) @ W_Eᵀ`), files written the way tuned-lens writes them
(`torch.save` of an nn.ModuleList's state dict), and the SGD recipe written out step by step.
That the lens *learns* on a trained model is in test_tuned_trained.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import minigpt
from minigpt import GPT, CheckpointError, GPTConfig, HubError, InputError, LensError, TunedLens
from minigpt.lens import DecoderSpec
from minigpt.cli import main
from minigpt.testing import random_state
from minigpt.tuned import lens_id, space_repo
from minigpt.tuned_train import WindowOrder, split_holdout

from conftest import ROOT, SHAKESPEARE, require

# Odd, distinct sizes (C = 24 is not a multiple of 64; V = 101 is prime).
SMALL = GPTConfig(vocab_size=101, n_positions=32, n_embd=24, n_head=3, n_layer=3)
TUNED_LENS_CONFIG_KEYS = {"base_model_name_or_path", "d_model", "num_hidden_layers", "bias",
                          "base_model_revision", "unembed_hash", "lens_type"}  # fmt: skip


def make_model(config: GPTConfig = SMALL, seed: int = 3) -> GPT:
    model = GPT(config)
    model.load_state_dict(random_state(config, seed=seed))
    return model.eval()


def randomize(lens: TunedLens, seed: int = 0, scale: float = 0.5) -> TunedLens:
    """Random maps big enough to change every row's distribution."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in lens.translators:
            d = t.weight.shape[0]
            t.weight.copy_(scale / math.sqrt(d) * torch.randn(t.weight.shape, generator=g))
            if t.bias is not None:
                t.bias.copy_(0.2 * torch.randn(t.bias.shape, generator=g))
    return lens


def translator_tensors(lens: TunedLens) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(t.weight.detach().clone(), t.bias.detach().clone()) for t in lens.translators]


def write_tuned_lens_files(folder: Path, maps: list[tuple[torch.Tensor, torch.Tensor]], d: int, L: int,
                           dtype: torch.dtype = torch.float32) -> Path:  # fmt: skip
    """A lens folder exactly as tuned-lens' TunedLens.save writes it: config.json (TunedLensConfig's
    fields) and params.pt (torch.save of `layer_translators.state_dict()`, an nn.ModuleList of nn.Linear)."""
    folder.mkdir(parents=True, exist_ok=True)
    translators = nn.ModuleList(nn.Linear(d, d, dtype=dtype) for _ in maps)
    with torch.no_grad():
        for t, (w, b) in zip(translators, maps):
            t.weight.copy_(w)
            t.bias.copy_(b)
    torch.save(translators.state_dict(), folder / "params.pt")
    config = {"base_model_name_or_path": "gpt2", "d_model": d, "num_hidden_layers": L, "bias": True,
              "base_model_revision": None, "unembed_hash": "abc123", "lens_type": "linear_tuned_lens"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def model() -> GPT:
    return make_model()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (20,), generator=torch.Generator().manual_seed(5))


# ----------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("kind", ["tuned", "probe"])
def test_untrained_lens_is_the_logit_lens(model: GPT, ids: torch.Tensor, kind: str) -> None:
    """Zero maps: every row decodes bit for bit as ln_f, and has logit_lens's top-k and KL(final ‖ row)."""
    lens = TunedLens.from_model(model, kind)
    reference = minigpt.logit_lens(model, ids, k=5)
    out = model(ids[None])
    logp_final = out.logits[0].log_softmax(-1)
    worst = 0.0
    for i in range(SMALL.n_layer + 1):
        h = out.resid[i, 0]
        assert torch.equal(lens.decode(model, h, i), model.ln_f(h)), i
        z = lens.logits(model, h, i)  # (T, V)
        assert torch.equal(z.topk(5, dim=-1).indices, torch.from_numpy(reference.top_ids[i])), i
        kl = (logp_final.exp() * (logp_final - z.log_softmax(-1))).sum(-1)
        worst = max(worst, (kl - torch.from_numpy(reference.kl_final[i])).abs().max().item())
    print(f"{kind}: max |Δ KL| against logit_lens over all rows: {worst:.2e}")
    assert worst <= 1e-6


def hf_gpt2(config: GPTConfig, seed: int, directory: Path):
    """transformers' GPT-2 with random weights, and minigpt's GPT loaded from the files it saves."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, attn_implementation="eager",
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():  # lm_head is tied to wte
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    hf.save_pretrained(directory, safe_serialization=True)
    return hf, GPT.from_pretrained(str(directory))


def hf_reference_rows(hf, ids: torch.Tensor) -> list[torch.Tensor]:
    """HF's stream before ln_f at every row: hidden_states[i] for i < L, and ln_f's input for the top row
    (HF's hidden_states[L] already has ln_f applied)."""
    seen = []
    handle = hf.transformer.ln_f.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        hidden = hf(ids[None], output_hidden_states=True).hidden_states
    handle.remove()
    return [h[0] for h in hidden[:-1]] + [seen[-1][0]]


@pytest.mark.parametrize("width", [24, 768])
def test_random_lens_matches_transformers(tmp_path: Path, width: int) -> None:
    """ln_f(h + h Wᵀ + b) @ W_Eᵀ from HF's hidden states, by hand, equals the lens for every map of both kinds;
    a lens written in tuned-lens' exact format loads and gives the same numbers (float16 files upcast)."""
    config = GPTConfig(vocab_size=50257 if width == 768 else 101, n_positions=32, n_embd=width,
                       n_head=12 if width == 768 else 3, n_layer=2)  # fmt: skip
    hf, model = hf_gpt2(config, seed=width, directory=tmp_path / "hf")
    ids = torch.randint(0, config.vocab_size, (9,), generator=torch.Generator().manual_seed(1))
    rows = hf_reference_rows(hf, ids)
    resid = model(ids[None]).resid[:, 0]
    ln_f, W_E = hf.transformer.ln_f, hf.lm_head.weight

    def reference(i: int, maps) -> torch.Tensor:
        h = rows[i]
        if i < len(maps):
            W, b = maps[i]
            h = h + h @ W.T + b
        with torch.no_grad():
            return ln_f(h) @ W_E.T

    worst = {}
    for kind in ("tuned", "probe"):
        lens = randomize(TunedLens.from_model(model, kind), seed=width)
        maps = translator_tensors(lens)
        assert len(maps) == (2 if kind == "tuned" else 3)
        with torch.no_grad():
            worst[kind] = max((lens.logits(model, resid[i], i) - reference(i, maps)).abs().max().item() for i in range(3))
    # tuned-lens' own files for the tuned maps: read back, they give the reference numbers too.
    tuned_maps = translator_tensors(randomize(TunedLens.from_model(model), seed=width))
    folder = write_tuned_lens_files(tmp_path / "theirs", tuned_maps, width, 2)
    loaded = TunedLens.load(folder, model)
    with torch.no_grad():
        worst["tuned-lens files"] = max((loaded.logits(model, resid[i], i) - reference(i, tuned_maps)).abs().max().item()
                                        for i in range(3))  # fmt: skip
        fp16 = write_tuned_lens_files(tmp_path / "theirs16", tuned_maps, width, 2, dtype=torch.float16)
        half_maps = [(w.half().float(), b.half().float()) for w, b in tuned_maps]
        loaded16 = TunedLens.load(fp16, model)
        assert all(t.weight.dtype == torch.float32 for t in loaded16.translators)
        worst["tuned-lens fp16 files"] = max(
            (loaded16.logits(model, resid[i], i) - reference(i, half_maps)).abs().max().item() for i in range(3)
        )
    print(f"width {width}: max |Δ logit| against HF by hand: {worst}")
    assert all(v <= 1e-4 for v in worst.values()), worst
    # The rows really differ from the logit lens (a lens that ignored its maps would fail above).
    assert (reference(0, tuned_maps) - reference(0, [])).abs().max() > 1e-2


def test_translator_i_reads_resid_i(model: GPT, ids: torch.Tensor) -> None:
    """Only map 1 is non-zero: only resid[1] (the row "h.0") changes, whether the row is an int or a Row."""
    lens = TunedLens.from_model(model)
    randomize(lens)
    with torch.no_grad():
        for i in (0, 2):
            lens.translators[i].weight.zero_()
            lens.translators[i].bias.zero_()
    resid = model(ids[None]).resid[:, 0]
    rows = [SimpleNamespace(label="embed", site="embed", block=-1, resid_index=0)] + [
        SimpleNamespace(label=f"h.{l}", site="resid_post", block=l, resid_index=l + 1) for l in range(SMALL.n_layer)
    ]  # minigpt.lens.Row's fields
    for i, row in enumerate(rows):
        by_row, by_index = lens.decode(model, resid[i], row), lens.decode(model, resid[i], i)
        assert torch.equal(by_row, by_index)
        assert torch.equal(by_row, model.ln_f(resid[i])) == (i != 1), row.label
    # The top row has no translator: it is the model's output.
    assert lens.index(SMALL.n_layer) is None and lens.index(-1) is None
    assert torch.equal(lens.logits(model, resid[-1], -1), model(ids[None]).logits[0])
    assert TunedLens.from_model(model, "probe").index(SMALL.n_layer) == SMALL.n_layer  # the probe's top map
    mid = SimpleNamespace(label="h.1.resid_mid", site="resid_mid", block=1, resid_index=None)
    with pytest.raises(LensError, match=r"sub-block row h\.1\.resid_mid.*sub_blocks=False"):
        lens.decode(model, resid[1], mid)
    with pytest.raises(LensError, match=r"out of range.*0\.\.3"):
        lens.decode(model, resid[1], 4)
    with pytest.raises(LensError, match="width 24"):
        lens.decode(model, resid[1][..., :8], 1)


def test_decoder_values(model: GPT) -> None:
    lens = TunedLens.from_model(model, "probe")
    assert lens.name == "probe" and TunedLens.from_model(model).name == "tuned"
    spec = json.loads(json.dumps(DecoderSpec.of(lens).to_dict()["params"]))
    assert spec["kind"] == "probe" and spec["d_model"] == 24 and spec["num_hidden_layers"] == 3
    assert repr(lens) == "TunedLens(kind='probe', d_model=24, layers=3, maps=4)"
    with pytest.raises(LensError, match="unknown lens kind 'other'"):
        TunedLens(24, 3, kind="other")  # type: ignore[arg-type]


@pytest.mark.parametrize("other", [dict(n_embd=30), dict(n_layer=2)])
def test_lens_for_another_model(model: GPT, tmp_path: Path, other: dict) -> None:
    lens = randomize(TunedLens.from_model(model))
    lens.save(tmp_path / "lens")
    wrong = make_model(GPTConfig(**{**SMALL.__dict__, **other}))
    L, C = wrong.config.n_layer, wrong.config.n_embd
    expected = rf"made for a model with 3 layers and n_embd 24.*the model has {L} layers and n_embd {C}.*minigpt tune"
    with pytest.raises(LensError, match=expected):
        lens.check(wrong)
    with pytest.raises(LensError, match=expected):
        TunedLens.load(tmp_path / "lens", wrong)
    with pytest.raises(LensError, match=expected):
        lens.logits(wrong, torch.zeros(2, C), 0)


# ----------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("kind", ["tuned", "probe"])
def test_minigpt_format_round_trip(model: GPT, tmp_path: Path, kind: str) -> None:
    lens = randomize(TunedLens.from_model(model, kind), seed=4)
    lens.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["config.json", "lens.safetensors"]
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert set(config) == TUNED_LENS_CONFIG_KEYS | {"kind", "format"}
    assert (config["kind"], config["format"], config["d_model"], config["num_hidden_layers"]) == (kind, "minigpt", 24, 3)
    tensors = load_file(str(tmp_path / "lens" / "lens.safetensors"))  # read independently of minigpt
    n = 3 if kind == "tuned" else 4
    assert set(tensors) == {f"{i}.{p}" for i in range(n) for p in ("weight", "bias")}
    for i, (w, b) in enumerate(translator_tensors(lens)):
        assert torch.equal(tensors[f"{i}.weight"], w) and torch.equal(tensors[f"{i}.bias"], b)
    loaded = TunedLens.load(tmp_path / "lens", model)
    assert loaded.kind == kind and loaded.config == lens.config  # the file's config, whatever its path
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), lens.state_dict().values()))
    # Optional tuned-lens keys may be missing.
    (tmp_path / "lens" / "config.json").write_text(json.dumps({"d_model": 24, "num_hidden_layers": 3, "kind": kind}))
    assert TunedLens.load(tmp_path / "lens" / "lens.safetensors", model).kind == kind  # a file path: its folder


def test_export_in_tuned_lens_format(model: GPT, tmp_path: Path) -> None:
    """lens.save(format="tuned-lens") writes what tuned-lens reads: its config keys, and params.pt with
    "{i}.weight" [d, d] (out x in) and "{i}.bias" [d], loadable by torch.load(weights_only=True)."""
    lens = randomize(TunedLens.from_model(model), seed=6)
    lens.save(tmp_path / "theirs", format="tuned-lens")
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["config.json", "params.pt"]
    config = json.loads((tmp_path / "theirs" / "config.json").read_text())
    assert set(config) == TUNED_LENS_CONFIG_KEYS and config["lens_type"] == "linear_tuned_lens"
    state = torch.load(tmp_path / "theirs" / "params.pt", weights_only=True)
    translators = nn.ModuleList(nn.Linear(24, 24) for _ in range(3))
    translators.load_state_dict(state)  # exactly the layout tuned-lens loads
    for t, (w, b) in zip(translators, translator_tensors(lens)):
        assert torch.equal(t.weight, w) and torch.equal(t.bias, b)
    again = TunedLens.load(tmp_path / "theirs", model)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), lens.state_dict().values()))
    with pytest.raises(LensError, match="cannot hold a probe"):
        TunedLens.from_model(model, "probe").save(tmp_path / "probe", format="tuned-lens")
    with pytest.raises(LensError, match="already holds params.pt"):
        lens.save(tmp_path / "theirs")  # a folder holds one lens


def test_params_pt_with_code_is_refused_and_nothing_runs(model: GPT, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    folder = write_tuned_lens_files(tmp_path / "evil", translator_tensors(TunedLens.from_model(model)), 24, 3)
    torch.save({"0.weight": Payload(), "0.bias": torch.zeros(24)}, folder / "params.pt")
    with pytest.raises(CheckpointError, match=r"asks to call (builtins\.)?exec, i\.e\. to run code.*weights_only=True") as e:
        TunedLens.load(folder, model)
    assert isinstance(e.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists(), "the payload ran"
    # The payload is live: an unrestricted load would have run it.
    torch.load(folder / "params.pt", weights_only=False)
    assert marker.read_text() == "ran"


def test_bad_lens_files(model: GPT, tmp_path: Path) -> None:
    maps = translator_tensors(randomize(TunedLens.from_model(model)))
    good = write_tuned_lens_files(tmp_path / "good", maps, 24, 3)
    data = (good / "params.pt").read_bytes()

    def variant(name: str, params: bytes | None = None, config: dict | None = None) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        if params is not None:
            (folder / "params.pt").write_bytes(params)
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        return folder

    cases = {
        "truncated": (variant("truncated", data[: len(data) // 2]), CheckpointError, r"truncated or corrupt.*again"),
        "empty": (variant("empty", b""), CheckpointError, r"truncated or corrupt"),
        "garbage": (variant("garbage", bytes(range(256)) * 4), CheckpointError, r"not a tensor file.*again"),
        "config for 4 maps": (variant("wrong-n", config={"d_model": 24, "num_hidden_layers": 4}), LensError,
                              r"made for a model with 4 layers"),
    }
    not_a_dict = variant("list")
    torch.save([1, 2], not_a_dict / "params.pt")
    cases["not a dict"] = (not_a_dict, CheckpointError, r"holds a list, not the state dict")
    shapes = variant("shapes")
    torch.save({**{f"{i}.weight": torch.zeros(24, 24) for i in range(3)}, **{f"{i}.bias": torch.zeros(24) for i in range(2)},
                "2.bias": torch.zeros(12)}, shapes / "params.pt")  # fmt: skip
    cases["wrong shape"] = (shapes, CheckpointError, r"wrong shape 2\.bias: file \(12,\), expected \(24,\)")
    missing_key = variant("missing-key")
    torch.save({f"{i}.weight": torch.zeros(24, 24) for i in range(3)}, missing_key / "params.pt")
    cases["missing keys"] = (missing_key, CheckpointError, r"missing 0\.bias \[24\], 1\.bias \[24\], 2\.bias \[24\]")
    no_config = variant("no-config")
    (no_config / "config.json").unlink()
    cases["no config"] = (no_config, CheckpointError, r"has params\.pt but no config\.json")
    no_params = variant("no-params")
    (no_params / "params.pt").unlink()
    cases["no params"] = (no_params, CheckpointError, r"holds no lens: expected lens\.safetensors.*params\.pt")
    both = variant("both")
    (both / "lens.safetensors").write_bytes(b"x")
    cases["both formats"] = (both, CheckpointError, r"both lens\.safetensors and params\.pt")
    bad_json = variant("bad-json")
    (bad_json / "config.json").write_text("{not json")
    cases["bad json"] = (bad_json, CheckpointError, r"cannot read .*config\.json")
    cases["lens type"] = (variant("type", config={"d_model": 24, "num_hidden_layers": 3, "lens_type": "other"}),
                          CheckpointError, r"lens_type 'other' is not supported")  # fmt: skip
    ours = tmp_path / "ours"
    TunedLens.from_model(model).save(ours)
    (ours / "lens.safetensors").write_bytes((ours / "lens.safetensors").read_bytes()[:100])
    cases["truncated safetensors"] = (ours, CheckpointError, r"not a valid safetensors file.*truncated")
    for name, (folder, error, message) in cases.items():
        with pytest.raises(error, match=message):
            TunedLens.load(folder, model)
        print(f"{name}: ok")
    with pytest.raises(LensError, match=r"^no/such/lens\.pt does not exist \(nothing at .*\); give the folder of a lens"):
        TunedLens.load("no/such/lens.pt", model)


# ----------------------------------------------------------------------------
# The hub (in a subprocess: huggingface_hub reads the environment at import)

HUB_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys

    resolve = socket.getaddrinfo
    def loopback_only(host, *args, **kwargs):  # a machine without network
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no network in this test")
        return resolve(host, *args, **kwargs)
    socket.getaddrinfo = loopback_only

    import minigpt
    model = minigpt.GPT.from_pretrained(sys.argv[1])
    results = {}
    for name in sys.argv[2:]:
        if name.startswith("env:"):  # tuned-lens' variables are read when a lens is loaded
            key, _, value = name[4:].partition("=")
            os.environ[key] = value
            continue
        try:
            lens = minigpt.TunedLens.load(name.partition(":")[2] or name, model)
            results[name] = {"ok": float(sum(p.detach().double().sum() for p in lens.parameters()))}
        except minigpt.MinigptError as e:
            results[name] = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(results))
    """
)


def populate_space_cache(home: Path, repo: str, repo_type: str, folders: dict[str, Path]) -> None:
    """huggingface_hub's cache layout: hub/{spaces|models}--owner--name/{refs/main, snapshots/<commit>/lens/<name>/...}."""
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    root = home / "hub" / (f"{repo_type}s--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for name, src in folders.items():
        shutil.copytree(src, root / "snapshots" / commit / "lens" / name)


def run_hub(tmp_path: Path, home: Path, checkpoint: Path, *names: str, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TUNED_LENS"))}
    clean.update(HF_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    run = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(checkpoint), *names], env=clean, cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        print(f"{env}: {name}: {result}")
    return results


def test_hub_names_map_to_the_space(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("gpt2", "openai-community/gpt2"):
        assert lens_id(name) == "gpt2"
    assert lens_id("openai-community/gpt2-xl") == "gpt2-xl" and lens_id("distilbert/distilgpt2") == "distilgpt2"
    assert lens_id("EleutherAI/pythia-160m") == "EleutherAI/pythia-160m"
    monkeypatch.delenv("TUNED_LENS_REPO_ID", raising=False)
    monkeypatch.delenv("TUNED_LENS_REPO_TYPE", raising=False)
    assert space_repo() == ("AlignmentResearch/tuned-lens", "space")
    monkeypatch.setenv("TUNED_LENS_REPO_ID", "me/lenses")
    monkeypatch.setenv("TUNED_LENS_REPO_TYPE", "model")
    assert space_repo() == ("me/lenses", "model")


@pytest.mark.parametrize("mode", ["refused", "HF_HUB_OFFLINE"])
def test_hub_lens_from_the_cache_and_an_unreachable_hub(tmp_path: Path, model: GPT, mode: str) -> None:
    """A lens cached from the Space loads by name without network; an uncached one is a HubError that says
    how to get it; an existing folder named like a hub name wins; TUNED_LENS_REPO_ID/TYPE are honoured."""
    checkpoint = tmp_path / "model"
    minigpt.testing.write_checkpoint(checkpoint, model.state_dict(), SMALL)
    published = randomize(TunedLens.from_model(model), seed=11)
    write_tuned_lens_files(tmp_path / "published", translator_tensors(published), 24, 3)
    mine = randomize(TunedLens.from_model(model), seed=12)
    mine.save(tmp_path / "mine")
    home = tmp_path / "hf-home"
    populate_space_cache(home, "AlignmentResearch/tuned-lens", "space", {"gpt2": tmp_path / "published"})
    populate_space_cache(home, "me/lenses", "model", {"gpt2": tmp_path / "mine"})
    (tmp_path / "gpt2-medium").mkdir()
    mine.save(tmp_path / "gpt2-medium")  # a folder in the working directory, named like a hub name
    minigpt.testing.write_checkpoint(tmp_path / "gpt2", model.state_dict(), SMALL)  # a stray folder with no lens
    env = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: connections are refused
    if mode == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    commit = "fedcba9876543210fedcba9876543210fedcba98"  # populate_space_cache's snapshot
    results = run_hub(tmp_path, home, checkpoint, "gpt2", "openai-community/gpt2", "gpt2-xl", "gpt2-medium",
                      f"gpt2@{commit}", "gpt2@v9", "./lenses/nosuch", "distilbert/distilgpt2",
                      "env:TUNED_LENS_REPO_ID=me/lenses", "env:TUNED_LENS_REPO_TYPE=model", "me/lenses:gpt2", env=env)
    total = lambda lens: float(sum(p.detach().double().sum() for p in lens.parameters()))  # noqa: E731
    assert results["gpt2"]["ok"] == pytest.approx(total(published), abs=1e-9)  # the stray ./gpt2 is passed over
    assert results["openai-community/gpt2"]["ok"] == pytest.approx(total(published), abs=1e-9)
    assert results[f"gpt2@{commit}"]["ok"] == pytest.approx(total(published), abs=1e-9)  # NAME@REVISION
    assert results["gpt2@v9"]["error"] == "HubError" and "at revision v9" in results["gpt2@v9"]["message"]
    assert results["gpt2-medium"]["ok"] == pytest.approx(total(mine), abs=1e-9)  # a folder holding a lens wins
    nosuch = results["./lenses/nosuch"]
    assert nosuch["error"] == "LensError" and nosuch["message"].startswith("./lenses/nosuch does not exist"), nosuch
    distil = results["distilbert/distilgpt2"]  # minigpt maps the id to the Space's folder, and says so
    assert distil["error"] == "HubError" and "lens/distilgpt2/" in distil["message"], distil
    xl = results["gpt2-xl"]
    assert xl["error"] == "HubError", xl
    why = "HF_HUB_OFFLINE is set" if mode == "HF_HUB_OFFLINE" else "the hub (http://127.0.0.1:9) cannot be reached"
    assert f"cannot get config.json of lens/gpt2-xl/ of the space AlignmentResearch/tuned-lens: {why}" in xl["message"]
    assert "not in the cache" in xl["message"] and "pass their folder instead of the name" in xl["message"]
    # Another repo, as tuned-lens' variables choose it.
    assert results["me/lenses:gpt2"]["ok"] == pytest.approx(total(mine), abs=1e-9)


# ----------------------------------------------------------------------------
# Training


def corpus(n: int = 600, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


FIT = dict(steps=4, tokens_per_step=64, window=16)


def weights(lens: TunedLens) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lens.parameters()]


def test_same_seed_same_lens(model: GPT) -> None:
    (a, report_a), (b, _) = TunedLens.fit(model, corpus(), seed=1, **FIT), TunedLens.fit(model, corpus(), seed=1, **FIT)  # 4 steps
    c = TunedLens.fit(model, corpus(), seed=2, **FIT).lens
    assert len(report_a.losses) == report_a.settings["steps"] and report_a.settings["seed"] == 1
    assert not hasattr(a, "fit_losses") and not hasattr(a, "fit_config")  # the report sits beside the lens
    assert all(p.grad is None for p in model.parameters())  # the model is read, never trained
    assert all(p.requires_grad for p in model.parameters())  # and is left as it was
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(c)))
    assert any(p.abs().max() > 0 for p in a.parameters())


@pytest.mark.parametrize("kind", ["tuned", "probe"])
def test_recipe_written_out(model: GPT, kind: str) -> None:
    """Two steps of fit equal tuned-lens' recipe computed here by hand: the loss (KL(final ‖ lens) through
    F.kl_div, whose arguments are (input=log q, target=log p) for KL(p ‖ q); or CE against the input),
    mean over tokens, summed over rows; one clip of the global norm at 1; SGD with Nesterov momentum 0.9,
    weight decay 1e-3; lr 0.1 decaying linearly to 0 over `steps`."""
    steps, lr, mom, wd, W = 2, 0.1, 0.9, 1e-3, 16
    data = corpus()
    windows = data[: len(data) // W * W].view(-1, W)
    order = WindowOrder(len(windows), seed=0)
    n_maps = 3 if kind == "tuned" else 4
    params = [torch.zeros(24, 24, requires_grad=True) if j % 2 == 0 else torch.zeros(24, requires_grad=True)
              for j in range(2 * n_maps)]  # fmt: skip
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for step in range(steps):
        x = windows[order.take(4)]  # 64 tokens
        with torch.no_grad():
            out = model(x)
            logp_final = out.logits.log_softmax(-1).reshape(-1, SMALL.vocab_size)
        loss = 0.0
        for i in range(n_maps):
            h = out.resid[i]
            h = h + h @ params[2 * i].T + params[2 * i + 1]
            logq = (model.ln_f(h) @ model.wte.weight.T).log_softmax(-1).reshape(-1, SMALL.vocab_size)
            if kind == "tuned":
                loss = loss + F.kl_div(logq, logp_final, log_target=True, reduction="batchmean")
            else:
                loss = loss + F.cross_entropy(logq, x.reshape(-1))
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        scale = min(1.0, 1.0 / (norm.item() + 1e-6))
        with torch.no_grad():
            for j, (p, g) in enumerate(zip(params, grads)):
                d = g * scale + wd * p
                bufs[j] = d.clone() if bufs[j] is None else mom * bufs[j] + d
                p -= lr * (1 - step / steps) * (d + mom * bufs[j])
    lens, _ = TunedLens.fit(model, data, kind=kind, steps=steps, tokens_per_step=64, window=W)
    diff = max((a - b).abs().max().item() for a, b in zip(weights(lens), params))
    size = max(p.abs().max().item() for p in params)
    print(f"{kind}: max |Δ| between fit and the recipe by hand: {diff:.2e} (weights up to {size:.2e})")
    assert size > 1e-3 and diff <= 1e-6 * max(1.0, size) + 1e-7


def test_resume_continues_exactly(model: GPT, tmp_path: Path) -> None:
    """k steps, saved, then resumed to N equals N steps straight, bit for bit (weights, momentum, data order)."""
    options = dict(steps=7, tokens_per_step=48, window=16, seed=3)  # 3 windows a step: epochs end mid-step
    straight, _ = TunedLens.fit(model, corpus(), **options)
    TunedLens.fit(model, corpus(), out=tmp_path / "run", stop_after=3, **options)
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["step"] == 3 and state["config"]["steps"] == 7
    momentum = load_file(str(tmp_path / "run" / "train_state.safetensors"))
    assert {k for k in momentum if k.startswith("momentum.")} == {f"momentum.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    resumed, _ = TunedLens.fit(model, corpus(), resume=tmp_path / "run", steps=7)
    assert all(torch.equal(a, b) for a, b in zip(weights(straight), weights(resumed)))
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 7
    on_disk = TunedLens.load(tmp_path / "run", model)
    assert all(torch.equal(a, b) for a, b in zip(weights(straight), weights(on_disk)))
    # A second resume in parts gives the same again (resumed from a resumed run).
    TunedLens.fit(model, corpus(), out=tmp_path / "parts", stop_after=2, **options)
    TunedLens.fit(model, corpus(), resume=tmp_path / "parts", stop_after=5)
    twice, _ = TunedLens.fit(model, corpus(), resume=tmp_path / "parts")
    assert all(torch.equal(a, b) for a, b in zip(weights(straight), weights(twice)))
    with pytest.raises(LensError, match=r"other settings: lr=0\.5 \(the run has 0\.1\)"):
        TunedLens.fit(model, corpus(), resume=tmp_path / "run", lr=0.5)
    with pytest.raises(LensError, match="the corpus differs"):
        TunedLens.fit(model, corpus(seed=8), resume=tmp_path / "run", steps=9)
    with pytest.raises(LensError, match="has no train_state.json"):
        TunedLens.fit(model, corpus(), resume=tmp_path / "nothing")


def test_fit_bad_input(model: GPT) -> None:
    with pytest.raises(LensError, match="window 64 exceeds the model's context of 32"):
        TunedLens.fit(model, corpus(), window=64)
    with pytest.raises(LensError, match="unknown lens kind 'both'"):
        TunedLens.fit(model, corpus(), kind="both")  # type: ignore[arg-type]
    with pytest.raises(LensError, match="steps must be a positive integer"):
        TunedLens.fit(model, corpus(), steps=0)
    with pytest.raises(InputError, match="fewer than one window of 16"):
        TunedLens.fit(model, corpus(10), window=16)
    with pytest.raises(InputError, match="empty"):
        TunedLens.fit(model, [], window=16)
    with pytest.raises(InputError, match="outside the vocabulary"):
        TunedLens.fit(model, torch.tensor([5, 101] * 20), window=16)
    with pytest.raises(LensError, match="needs a tokenizer"):
        TunedLens.fit(model, "some text")
    with pytest.raises(LensError, match=r"val_fraction must be in \[0, 1\)"):
        split_holdout(corpus(), 1.0)


def test_evaluation_counts_every_held_out_token(model: GPT) -> None:
    """Windows of 16 over 50 tokens: 3 full windows and a short one, each token once; the untrained lens
    scores exactly as the logit lens, whose top row has KL 0."""
    lens = TunedLens.from_model(model)
    result = lens.evaluate(model, corpus(50), window=16)
    assert result.n_tokens == 50 and result.labels == ["embed", "h.0", "h.1", "h.2"]
    assert result.metrics["tuned"] == result.metrics["logit"]
    assert result.metrics["logit"]["kl"][-1] == 0.0 and result.metrics["logit"]["top1_agreement"][-1] == 1.0
    assert "tuned lens" in result.table() and "mean nothing" not in result.table()
    probe = TunedLens.from_model(model, "probe").evaluate(model, corpus(50), window=16)
    assert "next-token KL and cross-entropy mean nothing for the probe" in probe.table()


# ----------------------------------------------------------------------------
# The command line, and data parallelism under torchrun


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    path.write_text(require(SHAKESPEARE).read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


TUNE_ARGS = ["--steps", "2", "--tokens-per-step", "64", "--window", "32"]


def test_tune_command(capsys: pytest.CaptureFixture[str], vocab_checkpoint: Path, text_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "lens"
    code = main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(out), *TUNE_ARGS])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "eval.json", "lens.safetensors", "train_state.json", "train_state.safetensors"]  # fmt: skip
    result = json.loads((out / "eval.json").read_text())
    lines = stdout.strip().splitlines()
    assert lines[0].startswith(f"held out: {result['n_tokens']:,} tokens in windows of 32; mean KL(final ‖ row) in bits")
    assert [line.split()[0] for line in lines[2:]] == ["embed", "h.0", "h.1", "h.2"]
    assert float(lines[2].split()[2]) == pytest.approx(result["metrics"]["tuned"]["kl"][0], abs=1e-4)
    model = GPT.from_pretrained(str(vocab_checkpoint))
    assert TunedLens.load(out, model).base_model_name_or_path == str(vocab_checkpoint)
    # Continue the run, then refuse the mistakes.
    assert main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(out),
                 "--resume", "--steps", "3"]) == 0  # fmt: skip
    assert json.loads((out / "train_state.json").read_text())["step"] == 3
    capsys.readouterr()
    again = main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(out)])
    assert again == 1 and "already holds a run; pass --resume" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(fresh), "--resume"]) == 1
    assert "holds no saved run" in capsys.readouterr().err
    assert main(["tune", "--text-file", str(text_file), "--out", str(fresh), "--val-fraction", "1"]) == 2
    assert "expected a fraction in [0, 1)" in capsys.readouterr().err
    assert main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(fresh),
                 "--window", "2048"]) == 2  # fmt: skip
    assert "--window 2048: the model's context is 1024 tokens" in capsys.readouterr().err
    assert main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(out),
                 "--resume", "--lr", "0.5"]) == 2  # fmt: skip
    assert "--resume continues the run" in (err := capsys.readouterr().err) and "--lr 0.5 (the run has 0.1)" in err
    assert main(["tune", "--text-file", str(tmp_path / "missing.txt"), "--model", str(vocab_checkpoint), "--out", str(fresh)]) == 1
    assert "cannot read --text-file" in capsys.readouterr().err


def test_probe_command(capsys: pytest.CaptureFixture[str], vocab_checkpoint: Path, text_file: Path, tmp_path: Path) -> None:
    code = main(["tune", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--out", str(tmp_path / "p"),
                 "--kind", "probe", *TUNE_ARGS])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "how well each row names its input token" in stdout and "mean nothing for the probe" in stdout
    assert json.loads((tmp_path / "p" / "config.json").read_text())["kind"] == "probe"


TWO_COMMANDS = textwrap.dedent(
    """
    import sys
    from minigpt.cli import main

    args = sys.argv[1:]
    cut = args.index("--then")
    sys.exit(main(args[:cut]) or main(args[cut + 1 :]))
    """
)


def agree(one: dict, two: dict, n_tokens: int) -> float:
    """The worst disagreement between two runs' metrics, in units of their tolerance (<= 1 passes).

    Means: 1e-6 + 1e-5 |value| (absolute + relative; late rows' KLs are near 0). Counts and top-1
    fractions: 2 positions, since ranks batch other windows together, and a top-1 within float rounding
    of its runner-up may flip."""
    worst = 0.0
    for ms, other in zip(one.values(), two.values()):  # by position: `eval --lens DIR` labels a lens by its DIR
        for metric, values in ms.items():
            for a, b in zip(values, other[metric]):
                if metric == "depth_hist":
                    tolerance = 2
                elif metric.startswith("top1"):
                    tolerance = 2 / n_tokens
                else:
                    tolerance = 1e-6 + 1e-5 * abs(a)
                worst = max(worst, abs(a - b) / tolerance)
    return worst


@pytest.mark.slow
def test_two_processes_under_torchrun_agree_with_one(capsys: pytest.CaptureFixture[str], vocab_checkpoint: Path,
                                                     text_file: Path, tmp_path: Path) -> None:  # fmt: skip
    """Under `torchrun --nproc-per-node 2` (gloo), `minigpt tune` trains the one-process lens and gets its held-out
    numbers, and `minigpt eval --lens` (evaluate_lens, each rank a share of the windows) gets the same numbers."""
    model = ["--model", str(vocab_checkpoint)]
    tune = ["tune", "--text-file", str(text_file), *model, *TUNE_ARGS, "--val-fraction", "0.2"]
    evaluate = ["eval", "--text-file", str(text_file), *model, "--window", "32", "--tokens", "400"]
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    assert main([*tune, "--out", str(tmp_path / "one")]) == 0
    assert main([*evaluate, "--lens", str(tmp_path / "one"), "--json", str(tmp_path / "one" / "corpus.json")]) == 0
    capsys.readouterr()
    script = tmp_path / "two_commands.py"
    script.write_text(TWO_COMMANDS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               *tune, "--out", str(tmp_path / "two"), "--then",
               *evaluate, "--lens", str(tmp_path / "two"), "--json", str(tmp_path / "two" / "corpus.json")]  # fmt: skip
    try:
        run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun with 2 processes did not finish within 240 s")
    assert run.returncode == 0, run.stderr[-3000:]
    states = [json.loads((tmp_path / d / "train_state.json").read_text()) for d in ("one", "two")]
    assert states[1]["world_size"] == 2
    # The logged losses are the global batch's, each rank's share summed, not rank 0's share alone.
    assert len(states[0]["losses"]) == 2 and min(min(step) for step in states[0]["losses"]) > 1e-3  # >> the tolerance
    np.testing.assert_allclose(states[1]["losses"], states[0]["losses"], rtol=1e-5, atol=2e-6)
    one, two = load_file(str(tmp_path / "one" / "lens.safetensors")), load_file(str(tmp_path / "two" / "lens.safetensors"))
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    size = max(v.abs().max().item() for v in one.values())
    print(f"1 vs 2 processes: max |Δ weight| {diff:.2e} (weights up to {size:.2e})")
    assert size > 1e-3 and diff <= 1e-5 * size
    for name in ("eval.json", "corpus.json"):
        e1, e2 = (json.loads((tmp_path / d / name).read_text()) for d in ("one", "two"))
        assert e1["n_tokens"] == e2["n_tokens"] > 0  # every window once: none twice, none padded
        worst = agree(e1["metrics"], e2["metrics"], e1["n_tokens"])
        print(f"{name}: {e1['n_tokens']} tokens, the numbers agree within {worst:.2f} x their tolerance")
        assert worst <= 1.0
    assert list(e2["metrics"])[0] == "logit" and len(e2["metrics"]) == 2  # "tuned" in eval.json, the DIR in corpus.json
    assert run.stdout.count("held out:") == 1  # only rank 0 prints


# ----------------------------------------------------------------------------
# The lens package: the tuned lens and the probe as decoders of logit_lens and evaluate_lens


def test_logit_lens_through_a_tuned_lens(model: GPT, ids: torch.Tensor) -> None:
    """decoder=TunedLens: untrained, bit for bit the logit lens; trained maps change exactly the rows they map."""
    plain = minigpt.logit_lens(model, ids)
    zero = minigpt.logit_lens(model, ids, decoder=TunedLens.from_model(model))
    for field in ("top_ids", "top_logits", "kl_final", "rank_final", "kl_input", "entropy", "cross_entropy"):
        assert np.array_equal(getattr(zero, field), getattr(plain, field), equal_nan=True), field
    assert zero.decoder.name == "tuned" and zero.decoder.params["d_model"] == 24
    lens = randomize(TunedLens.from_model(model))
    tuned = minigpt.logit_lens(model, ids, decoder=lens)
    resid = model(ids[None]).resid[:, 0]
    for i in range(SMALL.n_layer + 1):
        expected = lens.logits(model, resid[i], i).topk(5, dim=-1).indices
        assert torch.equal(torch.from_numpy(tuned.top_ids[i]), expected), i
    assert (tuned.kl_final[:-1] != plain.kl_final[:-1]).all() and (tuned.kl_final[-1] == 0).all()
    with pytest.raises(LensError, match="sub-block row"):
        minigpt.logit_lens(model, ids, decoder=lens, sub_blocks=True)


def test_evaluate_lens_names_the_learned_decoders(model: GPT) -> None:
    tuned, probe = TunedLens.from_model(model), randomize(TunedLens.from_model(model, "probe"))
    result = minigpt.evaluate_lens(model, corpus(100), decoders=["ln_f", tuned, probe], window=16).to_dict()
    assert list(result["metrics"]) == ["logit", "tuned", "probe"]
    assert result["metrics"]["tuned"] == result["metrics"]["logit"]  # untrained: the logit lens, to the bit
    assert result["metrics"]["probe"]["top1_input"] != result["metrics"]["logit"]["top1_input"]


def test_lens_and_eval_commands_take_a_lens(capsys: pytest.CaptureFixture[str], vocab_checkpoint: Path, text_file: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    model = GPT.from_pretrained(str(vocab_checkpoint))
    randomize(TunedLens.from_model(model), seed=2).save(tmp_path / "tuned")
    randomize(TunedLens.from_model(model, "probe"), seed=3).save(tmp_path / "probe")
    code = main(["lens", "The dog ran to the park", "--model", str(vocab_checkpoint), "--lens", str(tmp_path / "tuned"),
                 "--json", str(tmp_path / "lens.json")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "lens.json").read_text())
    assert saved["decoder"]["name"] == "tuned", saved["decoder"]
    code = main(["eval", "--text-file", str(text_file), "--model", str(vocab_checkpoint), "--tokens", "200",
                 "--lens", str(tmp_path / "tuned"), "--lens", str(tmp_path / "probe"), "--json", str(tmp_path / "eval.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert list(json.loads((tmp_path / "eval.json").read_text())["metrics"]) == ["logit", str(tmp_path / "tuned"),
                                                                              str(tmp_path / "probe")]  # fmt: skip
    assert "next-token KL and cross-entropy mean nothing" in out
    for command in (["lens", "The dog", "--json", str(tmp_path / "x.json")], ["eval", "--text-file", str(text_file)]):
        base = [*command, "--model", str(vocab_checkpoint), "--lens", str(tmp_path / "tuned")]
        assert main([*base, "--sub-blocks"]) == 2
        assert "--sub-blocks with --lens" in capsys.readouterr().err
    # `lens` draws one decoder; `eval` compares them, a lens beside any --decoder (issue 18, item 15).
    assert main(["lens", "The dog", "--json", str(tmp_path / "x.json"), "--model", str(vocab_checkpoint), "--lens",
                 str(tmp_path / "tuned"), "--decoder", "norm_only"]) == 2  # fmt: skip
    assert "give --lens or --decoder, not both" in capsys.readouterr().err
    assert main(["lens", "The dog", "--model", str(vocab_checkpoint), "--lens", str(tmp_path / "nowhere/x.pt"),
                 "--json", str(tmp_path / "x.json")]) == 1  # fmt: skip
    assert "x.pt does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# A lens is a value: its config, its unembedding hash, and its files as tuned-lens reads them


def independent_unembed_hash(W_E: torch.Tensor) -> str:
    """tuned-lens' `tensor_hash(unembedding.weight.float().numpy())`, written out here."""
    return hashlib.sha256(str.encode(np.array_str(W_E.detach().float().numpy(), precision=1))).hexdigest()


def test_unembed_hash_is_written_checked_and_warns(tmp_path: Path, model: GPT) -> None:
    hf, same = hf_gpt2(SMALL, seed=5, directory=tmp_path / "hf")
    lens = TunedLens.from_model(same)
    assert lens.config.unembed_hash == independent_unembed_hash(hf.lm_head.weight)  # what tuned-lens computes
    for fmt in ("minigpt", "tuned-lens"):
        lens.save(tmp_path / fmt, format=fmt)
        assert json.loads((tmp_path / fmt / "config.json").read_text())["unembed_hash"] == lens.config.unembed_hash
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the model it was made for: no warning
            TunedLens.load(tmp_path / fmt, same)
        with pytest.warns(UserWarning, match="unembedding hash does not match"):
            TunedLens.load(tmp_path / fmt, model)  # another model of the same shape
    with pytest.warns(UserWarning, match="unembedding hash does not match"):
        lens.check(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lens.check(model.config)  # a config alone has no weights to hash
    assert TunedLens(24, 3).config.unembed_hash is None  # made without a model: nothing recorded, nothing checked


def test_a_lens_is_a_frozen_value(model: GPT) -> None:
    lens = TunedLens.from_model(model, base_model_name_or_path="mine")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lens.config.kind = "probe"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        lens.kind = "probe"  # type: ignore[misc]
    spec = DecoderSpec.of(lens)
    assert spec.params == {"kind": "tuned", "d_model": 24, "num_hidden_layers": 3, "bias": True,
                           "base_model_name_or_path": "mine"}  # fmt: skip
    assert TunedLens(config=lens.config).config == lens.config


def test_a_lens_without_biases_in_tuned_lens_format(tmp_path: Path, model: GPT) -> None:
    """tuned-lens 0.2.0 zeroes every translator's bias when it builds a lens, so a bias-free lens is written
    with zero biases (and "bias": true): its file loads there, and decodes as the lens does."""
    lens = randomize(TunedLens.from_model(model, bias=False), seed=3)
    assert all(t.bias is None for t in lens.translators)
    lens.save(tmp_path / "theirs", format="tuned-lens")
    config = json.loads((tmp_path / "theirs" / "config.json").read_text())
    assert config["bias"] is True
    state = torch.load(tmp_path / "theirs" / "params.pt", weights_only=True)
    assert set(state) == {f"{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert all(torch.equal(state[f"{i}.bias"], torch.zeros(24)) for i in range(3))
    # what tuned-lens does on load: nn.Linear(d, d, bias=config["bias"]), then load_state_dict
    translators = nn.ModuleList(nn.Linear(24, 24, bias=config["bias"]) for _ in range(3))
    for t in translators:
        t.bias.data.zero_()
    translators.load_state_dict(state)
    loaded = TunedLens.load(tmp_path / "theirs", model)
    resid = model(corpus(12)[None]).resid[:, 0]
    with torch.no_grad():
        for i in range(3):
            expected = lens.logits(model, resid[i], i)
            assert torch.equal(loaded.logits(model, resid[i], i), expected)
            by_hand = model.ln_f(resid[i] + translators[i](resid[i])) @ model.wte.weight.T
            assert (by_hand - expected).abs().max() <= 1e-5
    lens.save(tmp_path / "ours")  # minigpt's own format keeps bias=False
    assert TunedLens.load(tmp_path / "ours", model).bias is False


def test_autocast_on_a_cpu_uses_bf16(model: GPT) -> None:
    """fit(autocast=True) runs the passes in bf16 on a CPU too (as tuned-lens does on any device)."""
    exact, _ = TunedLens.fit(model, corpus(), seed=1, **FIT)
    cast, report = TunedLens.fit(model, corpus(), seed=1, autocast=True, **FIT)
    diff = max((a - b).abs().max().item() for a, b in zip(weights(exact), weights(cast)))
    size = max(p.abs().max().item() for p in exact.parameters())
    assert 0 < diff < 0.2 * size, (diff, size)  # bf16 rounding: different, and close
    assert len(report.losses) == 4


def test_two_tuned_lenses_evaluated_together(model: GPT) -> None:
    a, b = randomize(TunedLens.from_model(model), seed=1), randomize(TunedLens.from_model(model), seed=2)
    data = corpus(200)
    listed = minigpt.evaluate_lens(model, data, decoders=["logit", a, b], window=16)
    assert list(listed.metrics) == ["logit", "tuned", "tuned_2"]
    named = minigpt.evaluate_lens(model, data, decoders={"a": a, "b": b}, window=16)
    for metric in ("kl", "ce", "top1_agreement"):
        # one call with other decoders beside them: other chunk shapes, so float rounding only
        np.testing.assert_allclose(named.metric(metric, "a"), listed.metric(metric, "tuned"), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(named.metric(metric, "b"), listed.metric(metric, "tuned_2"), rtol=1e-5, atol=1e-7)
        alone = minigpt.evaluate_lens(model, data, decoders=[b], window=16)
        np.testing.assert_allclose(named.metric(metric, "b"), alone.metric(metric, "tuned"), rtol=1e-5, atol=1e-7)
    assert not np.array_equal(named.metric("kl", "a"), named.metric("kl", "b"))
