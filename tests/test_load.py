"""Loading: every accepted form (directory in both layouts, bare .safetensors, names), strict checks on
bad checkpoints (each error names the keys and says what to do), the hub when it cannot be reached,
`download`, and the memory a load takes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import minigpt
from minigpt import (
    GPT,
    CheckpointError,
    ConfigError,
    GPTConfig,
    HubError,
    ModelNameError,
    PickleCheckpointError,
)
from minigpt.load import download, load_model
from minigpt.testing import random_state, write_checkpoint

from conftest import ROOT, TINY

# The preset -> hub repo map, as the design document states it (not read from the code under test).
EXPECTED_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read directly (independently of minigpt)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_weights_equal(model: GPT, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(state), set(got) ^ set(state)
    for k, v in state.items():
        assert got[k].shape == v.shape and torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state(TINY, seed=11)


def write(directory: Path, tensors: dict[str, torch.Tensor], config: GPTConfig | dict | None = TINY) -> Path:
    """A checkpoint directory holding exactly these tensors (and config.json, if given)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors")
    if isinstance(config, GPTConfig):
        fields = {
            "activation_function": config.activation_function, "n_embd": config.n_embd, "n_head": config.n_head,
            "n_layer": config.n_layer, "n_positions": config.n_positions, "vocab_size": config.vocab_size,
            "n_inner": config.n_inner, "layer_norm_epsilon": config.layer_norm_epsilon,
        }  # fmt: skip
        (directory / "config.json").write_text(json.dumps(fields))
    elif isinstance(config, dict):
        (directory / "config.json").write_text(json.dumps(config))
    return directory


# ----------------------------------------------------------------------------
# Every accepted form


def test_official_layout_directory(tiny_checkpoint: Path) -> None:
    model = GPT.from_pretrained(str(tiny_checkpoint))
    tensors = file_tensors(tiny_checkpoint / "model.safetensors")
    masks = [k for k in tensors if k.endswith(".attn.bias") and tensors[k].dim() == 4]
    assert len(masks) == TINY.n_layer  # the fixture really is in the official layout
    assert model.config == TINY
    assert_weights_equal(model, {k: v for k, v in tensors.items() if k not in masks})
    assert not model.training


def test_path_object_and_trailing_slash(tiny_checkpoint: Path) -> None:
    a = load_model(tiny_checkpoint)  # a Path works as well as a str
    b = load_model(str(tiny_checkpoint) + "/")
    assert_weights_equal(a, b.state_dict())


def test_transformer_prefixed_directory(tmp_path: Path, tiny_state: dict) -> None:
    official = write_checkpoint(tmp_path / "official", tiny_state, TINY, layout="official")
    hf = write_checkpoint(tmp_path / "hf", tiny_state, TINY, layout="hf")
    assert all(k.startswith("transformer.") for k in file_tensors(hf / "model.safetensors"))
    a, b = GPT.from_pretrained(str(official)), GPT.from_pretrained(str(hf))
    assert_weights_equal(a, tiny_state)
    assert_weights_equal(b, tiny_state)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    assert torch.equal(a(ids).logits, b(ids).logits)


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_lm_head_equal_to_wte_loads(tmp_path: Path, tiny_state: dict, layout: str) -> None:
    d = write_checkpoint(tmp_path, tiny_state, TINY, layout=layout, lm_head=True)
    assert "lm_head.weight" in file_tensors(d / "model.safetensors")
    assert_weights_equal(GPT.from_pretrained(str(d)), tiny_state)


def test_lm_head_that_differs_from_wte(tmp_path: Path, tiny_state: dict) -> None:
    tensors = dict(tiny_state, **{"lm_head.weight": tiny_state["wte.weight"] + 1e-3})
    with pytest.raises(CheckpointError, match=r"lm_head\.weight differs from wte\.weight.*ties them.*remove lm_head"):
        GPT.from_pretrained(str(write(tmp_path / "a", tensors)))
    tensors = dict(tiny_state, **{"lm_head.weight": tiny_state["wte.weight"][:-1].clone()})  # another shape
    with pytest.raises(CheckpointError, match=r"lm_head\.weight differs from wte\.weight"):
        GPT.from_pretrained(str(write(tmp_path / "b", tensors)))


BARE = {
    "4C": GPTConfig(vocab_size=101, n_positions=24, n_embd=128, n_head=2, n_layer=2),
    "odd-inner": GPTConfig(vocab_size=101, n_positions=24, n_embd=128, n_head=2, n_layer=3, n_inner=300),
}


@pytest.mark.parametrize("layout", ["official", "hf"])
@pytest.mark.parametrize("shape", list(BARE))
def test_bare_safetensors_infers_config(tmp_path: Path, shape: str, layout: str) -> None:
    config = BARE[shape]
    state = random_state(config, seed=5)
    d = write_checkpoint(tmp_path / "dir", state, config, layout=layout)
    bare = tmp_path / "bare" / "some-name.safetensors"  # alone in its folder, not called model.safetensors
    bare.parent.mkdir()
    shutil.copyfile(d / "model.safetensors", bare)
    model = GPT.from_pretrained(str(bare))
    assert model.config == config  # head_dim 64 -> n_head = n_embd / 64
    assert_weights_equal(model, state)
    ids = torch.tensor([[5, 0, 100, 42]])
    assert torch.equal(model(ids).logits, GPT.from_pretrained(str(d))(ids).logits)


def test_bare_safetensors_without_inferable_heads_asks_for_a_config(tmp_path: Path, tiny_checkpoint: Path) -> None:
    bare = tmp_path / "tiny.safetensors"
    shutil.copyfile(tiny_checkpoint / "model.safetensors", bare)
    with pytest.raises(CheckpointError, match=r"cannot infer n_head.*n_embd=12.*64.*config"):
        GPT.from_pretrained(str(bare))
    model = load_model(bare, config=TINY)  # the second fix the message offers
    assert model.config == TINY


def test_bare_safetensors_with_config_json_beside_it(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The first fix the error above offers: 'put a config.json beside the file'."""
    bare = tmp_path / "tiny.safetensors"
    shutil.copyfile(tiny_checkpoint / "model.safetensors", bare)
    shutil.copyfile(tiny_checkpoint / "config.json", tmp_path / "config.json")
    model = GPT.from_pretrained(str(bare))
    assert model.config == TINY


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["official", "hf"])
def test_half_checkpoint_loads_as_float32(tmp_path: Path, tiny_state: dict, dtype: torch.dtype, layout: str) -> None:
    half = {k: v.to(dtype) for k, v in tiny_state.items()}
    model = GPT.from_pretrained(str(write_checkpoint(tmp_path, half, TINY, layout)))
    assert model.dtype == torch.float32 and {p.dtype for p in model.parameters()} == {torch.float32}
    assert_weights_equal(model, {k: v.float() for k, v in half.items()})
    kept = GPT.from_pretrained(str(tmp_path), dtype=dtype)  # asked for the file's own dtype: no conversion
    assert_weights_equal(kept, half)


def test_conversion_reads_large_tensors_in_chunks(tmp_path: Path, tiny_state: dict, monkeypatch) -> None:
    """A chunk smaller than one tensor (wte here) still gives every row, once."""
    monkeypatch.setattr(minigpt.load, "CONVERT_CHUNK_BYTES", 5 * 12 * 2)  # 5 rows of wte [37, 12] in float16
    half = {k: v.half() for k, v in tiny_state.items()}
    model = GPT.from_pretrained(str(write(tmp_path, half)))
    assert_weights_equal(model, {k: v.float() for k, v in half.items()})


def test_config_json_with_extra_keys_and_null_n_inner(tmp_path: Path, tiny_state: dict) -> None:
    fields = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "model_type": "gpt2", "n_ctx": 16, "n_embd": 12, "n_head": 3, "n_inner": None,
        "n_layer": 2, "n_positions": 16, "vocab_size": 37, "task_specific_params": {"text-generation": {}},
        "some_future_key": [1, 2, 3], "layer_norm_epsilon": 1e-5,
    }  # fmt: skip
    model = GPT.from_pretrained(str(write(tmp_path, tiny_state, fields)))
    assert model.config == TINY and model.config.n_inner is None


def test_config_json_with_n_ctx_only(tmp_path: Path, tiny_state: dict) -> None:
    fields = {"n_ctx": 16, "n_embd": 12, "n_head": 3, "n_layer": 2, "vocab_size": 37}
    assert GPT.from_pretrained(str(write(tmp_path, tiny_state, fields))).config.n_positions == 16


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_pytorch_tanh"])
def test_other_activation_is_a_config_error(tmp_path: Path, tiny_state: dict, activation: str) -> None:
    d = write(tmp_path, tiny_state, dict(n_embd=12, n_head=3, n_layer=2, vocab_size=37, n_positions=16,
                                         activation_function=activation))  # fmt: skip
    with pytest.raises(ConfigError, match=rf"activation_function '{activation}' is not supported.*gelu_new"):
        GPT.from_pretrained(str(d))


@pytest.mark.parametrize(
    "content, hint",
    [
        ("{not json", r"cannot read .*config\.json.*JSON config"),
        ("[1, 2]", r"does not hold a JSON object"),
        (json.dumps({"n_embd": "12", "n_head": 3, "n_layer": 2, "vocab_size": 37, "n_positions": 16}),
         r"'n_embd' must be a positive integer"),
        (json.dumps({"n_embd": 12, "n_head": 5, "n_layer": 2, "vocab_size": 37, "n_positions": 16}),
         r"divisible by n_head.*fix config\.json"),
    ],
    ids=["not-json", "not-object", "string-field", "bad-heads"],
)
def test_bad_config_json(tmp_path: Path, tiny_state: dict, content: str, hint: str) -> None:
    d = write(tmp_path, tiny_state, None)
    (d / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=hint):
        GPT.from_pretrained(str(d))


# ----------------------------------------------------------------------------
# Names


def test_existing_path_wins_over_a_preset_name(tmp_path: Path, tiny_checkpoint: Path, monkeypatch) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    assert GPT.from_pretrained("gpt2").config == TINY


@pytest.mark.parametrize("name", ["gpt3", "gpt-2", "nope/nope/nope", "distil"])
def test_unknown_name_lists_the_presets(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    with pytest.raises(ModelNameError) as info:
        GPT.from_pretrained(name)
    message = str(info.value)
    assert repr(name) in message and "existing path" in message
    for preset in [*EXPECTED_REPOS, "shakespeare"]:
        assert preset in message, preset
    assert "openai-community/gpt2" in message


@pytest.mark.parametrize(
    "name, nearest",
    [("gtp2", "gpt2"), ("GPT2", "gpt2"), ("gpt2-XL", "gpt2-xl"), ("gpt2medium", "gpt2-medium"),
     ("distilgtp2", "distilgpt2"), ("Shakespeare", "shakespeare"), ("shakespear", "shakespeare")],
)  # fmt: skip
def test_a_typo_suggests_the_nearest_preset(name: str, nearest: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    with pytest.raises(ModelNameError, match=rf"unknown model '{name}': did you mean '{nearest}'\?"):
        GPT.from_pretrained(name)
    with pytest.raises(ModelNameError, match=rf"did you mean '{nearest}'\?"):
        minigpt.load_tokenizer(name)


def test_no_suggestion_for_a_name_far_from_every_preset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNameError) as info:
        GPT.from_pretrained("llama")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "name, command",
    [
        ("weights/gpt2", "`minigpt download gpt2`"),  # weights/ exists, gpt2/ in it does not
        ("./weights/gpt2", "`minigpt download gpt2`"),
        ("weights/gpt2-xl", "`minigpt download gpt2-xl`"),
        ("weights/my-model", "`minigpt download gpt2 --dir weights/my-model`"),
        ("./nowhere/gpt2-medium", "`minigpt download gpt2-medium --dir ./nowhere/gpt2-medium`"),
        ("~/no-such-minigpt-folder/gpt2", "`minigpt download gpt2 --dir ~/no-such-minigpt-folder/gpt2`"),
    ],
)
def test_missing_folder_is_not_taken_for_a_hub_id(name: str, command: str, tmp_path: Path, monkeypatch) -> None:
    """A path-shaped name whose folder does not exist: say so, and how to make it; never ask the hub."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    with pytest.raises(ModelNameError) as info:
        GPT.from_pretrained(name)
    message = str(info.value)
    assert message.startswith(f"{name} does not exist (nothing at "), message
    assert command in message and "on a machine with network" in message, message
    assert "'shakespeare'" in message
    assert "hub" not in message and "network is" not in message
    with pytest.raises(ModelNameError, match="does not exist"):
        minigpt.load_tokenizer(name)


@pytest.mark.parametrize("name", ["missing/model.safetensors", "x.bin", "model.safetensors"])
def test_missing_file(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    with pytest.raises(ModelNameError, match=rf"^{name} does not exist \(nothing at .*\); check the file name"):
        GPT.from_pretrained(name)


def test_missing_folder_on_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from minigpt.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    assert main(["lens", "Hello", "--model", "weights/gpt2", "-o", "x.png"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights/gpt2 does not exist" in err and "minigpt download gpt2" in err


@pytest.mark.parametrize(
    "name, repo", [*EXPECTED_REPOS.items(), ("openai-community/gpt2-medium", "openai-community/gpt2-medium"),
                   ("someone/my.gpt-2_v1", "someone/my.gpt-2_v1")],
)  # fmt: skip
def test_names_map_to_hub_repos(name: str, repo: str, tiny_checkpoint: Path, tmp_path, monkeypatch) -> None:
    asked = []

    def fake_hub_download(repo_id, required, optional=(), downloading=False, revision=None):
        asked.append((repo_id, required))
        return {f: (tiny_checkpoint / f if (tiny_checkpoint / f).exists() else None) for f in required + optional}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.load, "hub_download", fake_hub_download)
    model = GPT.from_pretrained(name)
    assert asked == [(repo, ("config.json", "model.safetensors"))]
    assert model.config == TINY


# ----------------------------------------------------------------------------
# Bad checkpoints: minigpt's class, the keys named, a fix offered


def test_missing_keys(tmp_path: Path, tiny_state: dict) -> None:
    state = {k: v for k, v in tiny_state.items() if k not in ("h.1.mlp.c_fc.bias", "ln_f.weight")}
    with pytest.raises(CheckpointError) as info:
        GPT.from_pretrained(str(write(tmp_path, state)))
    message = str(info.value)
    assert "missing" in message and "h.1.mlp.c_fc.bias [48]" in message and "ln_f.weight [12]" in message
    assert "config.json" in message  # the fix: check the config belongs to these weights


def test_unexpected_keys(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state, **{"h.0.attn.rotary.weight": torch.zeros(3), "score.weight": torch.zeros(2, 12)})
    with pytest.raises(CheckpointError, match=r"unexpected .*h\.0\.attn\.rotary\.weight.*score\.weight.*config\.json"):
        GPT.from_pretrained(str(write(tmp_path, state)))


def test_transposed_c_fc_is_a_wrong_shape(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state, **{"h.0.mlp.c_fc.weight": tiny_state["h.0.mlp.c_fc.weight"].T})
    hint = r"wrong shape h\.0\.mlp\.c_fc\.weight: file \(48, 12\), expected \(12, 48\)"
    with pytest.raises(CheckpointError, match=hint):
        GPT.from_pretrained(str(write(tmp_path, state)))


def test_config_that_does_not_match_the_weights(tmp_path: Path, tiny_state: dict) -> None:
    config = GPTConfig(vocab_size=37, n_positions=16, n_embd=12, n_head=3, n_layer=3)
    with pytest.raises(CheckpointError, match=r"3 layers.*missing h\.2\.ln_1\.weight \[12\].*config\.json"):
        GPT.from_pretrained(str(write(tmp_path, tiny_state, config)))


def test_many_problems_are_summarised(tmp_path: Path, tiny_state: dict) -> None:
    config = GPTConfig(vocab_size=37, n_positions=16, n_embd=12, n_head=3, n_layer=4)
    with pytest.raises(CheckpointError, match=r"missing .*\(and \d+ more\)"):
        GPT.from_pretrained(str(write(tmp_path, tiny_state, config)))


def test_integer_tensor(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state, **{"ln_f.bias": torch.zeros(12, dtype=torch.int32)})
    with pytest.raises(CheckpointError, match=r"ln_f\.bias has dtype torch\.int32.*floating point"):
        GPT.from_pretrained(str(write(tmp_path, state)))


def test_both_prefixed_and_unprefixed(tmp_path: Path, tiny_state: dict) -> None:
    state = dict(tiny_state, **{"transformer.wte.weight": tiny_state["wte.weight"].clone()})
    with pytest.raises(CheckpointError, match=r"both with and without the 'transformer\.' prefix"):
        GPT.from_pretrained(str(write(tmp_path, state)))


@pytest.mark.parametrize(
    "make",
    [
        lambda good: random.Random(0).randbytes(4096),
        lambda good: random.Random(1).randbytes(len(good)),
        lambda good: b"",
        lambda good: b"this is not a safetensors file\n",
        lambda good: (2**40).to_bytes(8, "little") + good[8:],  # a header length far beyond the file
        lambda good: good[:8] + b"x" + good[9:],  # valid length, broken JSON header
        lambda good: good[: len(good) // 2],  # truncated: cut in half
        lambda good: good[:-4],  # truncated by a few bytes
    ],
    ids=["garbage-4k", "garbage-same-size", "empty", "text", "huge-header", "broken-header", "half", "minus-4"],
)
def test_corrupt_or_truncated_file(tmp_path: Path, tiny_checkpoint: Path, make) -> None:
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, d)
    weights = d / "model.safetensors"
    weights.write_bytes(make(weights.read_bytes()))
    with pytest.raises(CheckpointError, match=r"not a valid safetensors file.*truncated or corrupt.*download it again"):
        GPT.from_pretrained(str(d))


def test_pickle_in_a_directory(tmp_path: Path, tiny_state: dict) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save(tiny_state, d / "pytorch_model.bin")
    (d / "config.json").write_text("{}")
    with pytest.raises(PickleCheckpointError, match=r"pytorch_model\.bin.*arbitrary code.*safetensors"):
        GPT.from_pretrained(str(d))


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt"])
def test_pickle_file_path(tmp_path: Path, tiny_state: dict, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(tiny_state, path)
    with pytest.raises(PickleCheckpointError, match=r"arbitrary code.*safetensors\.torch\.save_file"):
        GPT.from_pretrained(str(path))
    assert issubclass(PickleCheckpointError, CheckpointError)


def test_safetensors_preferred_over_a_pickle_beside_it(tmp_path: Path, tiny_checkpoint: Path, tiny_state) -> None:
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, d)
    torch.save(tiny_state, d / "pytorch_model.bin")
    assert GPT.from_pretrained(str(d)).config == TINY


def test_directory_without_model_safetensors(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "config.json").write_bytes((tiny_checkpoint / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors.*config\.json and model\.safetensors"):
        GPT.from_pretrained(str(tmp_path))


def test_sharded_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"sharded checkpoint.*one model\.safetensors"):
        GPT.from_pretrained(str(tmp_path))


def test_file_that_is_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"not a \.safetensors file.*safetensors only"):
        GPT.from_pretrained(str(path))


# ----------------------------------------------------------------------------
# The hub, when it cannot be reached (in a subprocess: huggingface_hub reads the environment at import)

HUB_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, time

    # A machine without network, whatever this one has: only the loopback resolves.
    resolve = socket.getaddrinfo
    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no network in this test")
        return resolve(host, *args, **kwargs)
    socket.getaddrinfo = loopback_only

    import minigpt
    results = {}
    for action in sys.argv[1:]:
        what, name = action.split(":")
        start = time.perf_counter()
        try:
            if what == "model":
                value = minigpt.GPT.from_pretrained(name).config.n_embd
            elif what == "tokenizer":
                value = minigpt.load_tokenizer(name).encode("Hello world")
            else:
                value = sorted(p.name for p in minigpt.download(name, "downloaded").iterdir())
            results[action] = {"ok": value}
        except minigpt.MinigptError as e:
            results[action] = {"error": type(e).__name__, "message": str(e)}
        results[action]["elapsed_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps(results))
    """
)
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


def run_hub_script(tmp_path: Path, *actions: str, mode: str, home: Path, endpoint: str = DEAD_ENDPOINT,
                   timeout: float = 300) -> dict:  # fmt: skip
    """Run minigpt in a fresh interpreter (huggingface_hub reads the environment at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TIKTOKEN", "DATA_GYM"))}
    env.update(HF_HOME=str(home), TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-tiktoken"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if mode != "no-dns":  # no-dns: the default endpoint (huggingface.co), which cannot be resolved
        env["HF_ENDPOINT"] = endpoint
    if mode == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    try:
        run = subprocess.run(
            [sys.executable, "-c", HUB_SCRIPT, *actions], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"hub {mode} {actions}: no answer within {timeout} s (killed)")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for action, result in results.items():
        print(f"hub {mode} {action}: {result}")
    return results


def populate_hub_cache(home: Path, repo: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub reads: hub/models--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        shutil.copyfile(src, snapshot / name)


@pytest.mark.parametrize("mode", ["refused", "no-dns", "HF_HUB_OFFLINE"])
def test_hub_without_network(tmp_path: Path, vocab_checkpoint: Path, mode: str) -> None:
    """Endpoint refused (or HF_HUB_OFFLINE=1): a cached repo loads from the cache, an uncached one
    raises HubError (TokenizerError for the tokenizer) saying why and how to use a local directory."""
    home = tmp_path / "hf-home"
    files = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    populate_hub_cache(home, "openai-community/gpt2", {f: vocab_checkpoint / f for f in files})
    results = run_hub_script(
        tmp_path, "model:gpt2-medium", "tokenizer:gpt2-medium", "download:gpt2-medium", "model:gpt2",
        "model:openai-community/gpt2", "tokenizer:gpt2", "download:gpt2", mode=mode, home=home,
    )  # fmt: skip

    model = results["model:gpt2-medium"]
    assert model.get("error") == HubError.__name__, model
    why = {
        "refused": f"the hub ({DEAD_ENDPOINT}) cannot be reached",
        "no-dns": "the hub (https://huggingface.co) cannot be reached",
        "HF_HUB_OFFLINE": "HF_HUB_OFFLINE is set",
    }[mode]
    assert f"cannot get config.json of openai-community/gpt2-medium: {why}" in model["message"]
    assert "not in the cache" in model["message"]
    # How to get a checkpoint without network: the shipped model, `minigpt download` elsewhere, transformers' cache.
    assert "the model shipped with minigpt ('shakespeare'" in model["message"]
    assert "run `minigpt download gpt2-medium` on a machine with network and pass its directory" in model["message"]
    assert "transformers' cache" in model["message"] and "models--openai-community--gpt2-medium" in model["message"]
    # A mirror is a way out unless the user switched the hub off.
    assert ("HF_ENDPOINT to a mirror" in model["message"]) == (mode != "HF_HUB_OFFLINE"), model["message"]
    # `download` is how one makes a directory: it cannot suggest passing one.
    fetch = results["download:gpt2-medium"]
    assert fetch.get("error") == HubError.__name__, fetch
    assert "run `minigpt download gpt2-medium` on a machine with network and copy the folder" in fetch["message"]
    assert "directory" not in fetch["message"] and "instead of the name" not in fetch["message"]
    assert ("HF_ENDPOINT to a mirror" in fetch["message"]) == (mode != "HF_HUB_OFFLINE"), fetch["message"]
    # The tokenizer needs no network at all: the bundled GPT-2 ranks stand in.
    assert results["tokenizer:gpt2-medium"].get("ok") == [15496, 995], results["tokenizer:gpt2-medium"]

    # The cached repo: SMALL_VOCAB's n_embd proves the cached files were used.
    assert results["model:gpt2"].get("ok") == 32, results["model:gpt2"]
    assert results["model:openai-community/gpt2"].get("ok") == 32, results["model:openai-community/gpt2"]
    assert results["tokenizer:gpt2"].get("ok") == [15496, 995], results["tokenizer:gpt2"]
    assert results["download:gpt2"].get("ok") == sorted(files), results["download:gpt2"]
    copied = (tmp_path / "downloaded" / "model.safetensors").read_bytes()
    assert copied == (vocab_checkpoint / "model.safetensors").read_bytes()


def test_stalled_hub_fails_in_seconds(tmp_path: Path) -> None:
    """An endpoint that accepts connections but never answers (a hung proxy or mirror, a captive
    firewall): the TCP probe succeeds, so loading must not then wait on huggingface_hub's retries."""
    import socket

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    try:
        endpoint = f"http://127.0.0.1:{stalled.getsockname()[1]}"
        results = run_hub_script(tmp_path, "model:gpt2", mode="stalled", home=tmp_path / "hf-home",
                                 endpoint=endpoint, timeout=60)  # fmt: skip
    finally:
        stalled.close()
    model = results["model:gpt2"]
    assert model.get("error") == HubError.__name__, model
    assert "cannot be reached" in model["message"] and "pass its directory" in model["message"]


# ----------------------------------------------------------------------------
# download


def test_download_copies_a_local_checkpoint(tmp_path: Path, vocab_checkpoint: Path) -> None:
    target = download(str(vocab_checkpoint), tmp_path / "out" / "nested")
    assert target == tmp_path / "out" / "nested"
    for name in ("model.safetensors", "config.json", "vocab.json", "merges.txt"):
        assert (target / name).read_bytes() == (vocab_checkpoint / name).read_bytes(), name
    assert_weights_equal(GPT.from_pretrained(str(target)), GPT.from_pretrained(str(vocab_checkpoint)).state_dict())


def test_download_default_directory(tmp_path: Path, tiny_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = download(str(tiny_checkpoint))
    assert target == Path("weights") / tiny_checkpoint.name
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert download(str(target), target) == target  # onto itself: nothing to copy, nothing broken
    assert GPT.from_pretrained(str(target)).config == TINY


def test_download_of_the_shipped_model_writes_the_official_layout(tmp_path: Path, tokenizer_dir: Path) -> None:
    target = download("shakespeare", tmp_path / "d")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    for name, openai in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):  # GPT-2's own, byte for byte
        assert (target / name).read_bytes() == (tokenizer_dir / openai).read_bytes(), name
    assert GPT.from_pretrained(str(target)).config == GPT.from_pretrained("shakespeare").config


def test_download_errors(tmp_path: Path, tiny_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNameError, match=r"unknown model 'gpt3'"):
        download("gpt3", tmp_path / "x")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint into .*choose another --dir"):
        download(str(tiny_checkpoint), blocker / "sub")


# ----------------------------------------------------------------------------
# Memory: the loader maps the file instead of copying it

RSS_SCRIPT = textwrap.dedent(
    r"""
    import json, re, sys
    import torch
    import minigpt
    torch.set_num_threads(1)
    warm = minigpt.GPT(minigpt.GPTConfig(n_layer=1, n_head=1, n_embd=64, vocab_size=100, n_positions=16))
    with torch.no_grad():
        warm(torch.tensor([[1, 2, 3]]))  # kernels and allocator warmed up before measuring
    # VmHWM: this process's peak RSS (anonymous + file-backed pages). Not getrusage's ru_maxrss,
    # which survives fork + exec and so starts at the (large) peak of the pytest parent.
    status = lambda: open("/proc/self/status").read()
    peak = lambda: int(re.search(r"VmHWM:\s+(\d+) kB", status()).group(1)) * 1024
    before = peak()
    model = minigpt.load_model(sys.argv[1])
    after_load = peak()
    with torch.no_grad():
        model(torch.arange(8)[None])  # touches every weight
    print(json.dumps({"before": before, "after_load": after_load, "after_forward": peak()}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc (Linux)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_loading_does_not_copy_the_weights(tmp_path: Path, dtype: torch.dtype) -> None:
    """float32: the file's mapping becomes the parameters. float16: the upcast makes the float32 copy, and the
    narrow file is read in chunks beside it; either way the peak stays within 1.25x the float32 size."""
    config = GPTConfig(vocab_size=50257, n_positions=1024, n_embd=512, n_head=8, n_layer=6)
    state = {k: v.to(dtype) for k, v in random_state(config, seed=0).items()}
    d = write_checkpoint(tmp_path / "big", state, config)
    file_size = sum(v.numel() for v in state.values()) * 4  # the model's float32 size
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(d)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rss = json.loads(run.stdout.strip().splitlines()[-1])
    grew = rss["after_forward"] - rss["before"]
    mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
    report = (f"file {mb(file_size)}; peak RSS grew {mb(rss['after_load'] - rss['before'])} on load, "
              f"{mb(grew)} after a forward")  # fmt: skip
    print(report)
    assert grew <= 1.25 * file_size + 64 * 2**20, report
