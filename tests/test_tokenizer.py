"""The GPT-2 tokenizer: the shared test vectors (generated offline by tiktoken and HF tokenizers),
tinyshakespeare's token counts, a round-trip property, special tokens, mismatched files, and the
bundled GPT-2 ranks (the offline fallback, and the source of the vocab.json + merges.txt that
`minigpt train` writes)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigpt
from minigpt import ModelNameError, TokenizerError
from minigpt import tokenizer as tokenizer_module

from conftest import ROOT, SHAKESPEARE, TOKENIZER_DIR, require

EOT = "<|endoftext|>"
EOT_ID = 50256


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(require(TOKENIZER_DIR / "test_vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok(vocab_checkpoint: Path) -> tiktoken.Encoding:
    """Built from the checkpoint's vocab.json + merges.txt (HF names)."""
    assert (vocab_checkpoint / "vocab.json").exists() and (vocab_checkpoint / "merges.txt").exists()
    return minigpt.load_tokenizer(vocab_checkpoint)


def check_vectors(tok: tiktoken.Encoding, vectors: dict) -> None:
    assert tok.n_vocab == vectors["n_vocab"]
    assert tok.eot_token == vectors["eot_token"] == EOT_ID
    for case in vectors["ordinary"]:
        assert tok.encode_ordinary(case["text"]) == case["ids"], case["text"]
        assert tok.decode(case["ids"]) == case["text"], case["ids"]
    for case in vectors["special"]:
        assert tok.encode(case["text"], allowed_special=case["allowed_special"]) == case["ids"], case["text"]
        assert tok.decode(case["ids"]) == case["text"]
    for case in vectors["decode"]:
        assert tok.decode(case["ids"]) == case["text"], case["ids"]
        assert tok.encode_ordinary(case["text"]) == case["ids"]


def test_test_vectors(tok: tiktoken.Encoding, vectors: dict) -> None:
    assert len(vectors["ordinary"]) >= 10
    check_vectors(tok, vectors)


def test_openai_file_names_work_too(tokenizer_dir: Path, vectors: dict) -> None:
    """The shared folder holds encoder.json + vocab.bpe (OpenAI's names for the same bytes)."""
    assert not (tokenizer_dir / "vocab.json").exists()
    check_vectors(minigpt.load_tokenizer(tokenizer_dir), vectors)


def test_tokenizer_of_a_model_file_uses_its_folder(vocab_checkpoint: Path, vectors: dict) -> None:
    check_vectors(minigpt.load_tokenizer(vocab_checkpoint / "model.safetensors"), vectors)


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return require(SHAKESPEARE).read_text(encoding="utf-8")


def test_tinyshakespeare_whole_file(tok: tiktoken.Encoding, shakespeare: str, vectors: dict) -> None:
    assert len(shakespeare.encode("utf-8")) == 1_115_394
    ids = tok.encode_ordinary(shakespeare)
    assert len(ids) == 338_025 == vectors["tiny_shakespeare_llmc"]["encode_ordinary_whole_file_tokens"]
    assert tok.decode(ids) == shakespeare


def test_tinyshakespeare_as_llm_c_tokenizes_it(tok: tiktoken.Encoding, shakespeare: str, vectors: dict) -> None:
    """karpathy/llm.c dev/data/tinyshakespeare.py: split on blank lines, <|endoftext|> before each section."""
    expected = vectors["tiny_shakespeare_llmc"]
    sections = shakespeare.split("\n\n")
    sections = [s + "\n\n" for s in sections[:-1]] + [sections[-1]]
    ids: list[int] = []
    for section in sections:
        ids += tok.encode(EOT + section, allowed_special="all")
    assert len(ids) == expected["total_tokens"] == 338_028
    assert ids[:257] == expected["first_257_tokens"]
    assert len(ids) - expected["val_tokens"] == expected["train_tokens"]
    assert ids.count(EOT_ID) == len(sections)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_round_trip_any_text(tok: tiktoken.Encoding, text: str) -> None:
    ids = tok.encode_ordinary(text)
    assert all(0 <= i < EOT_ID for i in ids)
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(["<|endoftext|>", "<|", "|>", " ", "a", "\n", "é", "🤖"])).map("".join))
def test_round_trip_with_special_strings(tok: tiktoken.Encoding, text: str) -> None:
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_endoftext_in_ordinary_text(tok: tiktoken.Encoding, vectors: dict) -> None:
    text = "hello <|endoftext|> world"
    ids = tok.encode_ordinary(text)
    assert EOT_ID not in ids and tok.decode(ids) == text
    assert tok.encode(text, disallowed_special=()) == ids
    expected = tok.encode_ordinary("hello ") + [EOT_ID] + tok.encode_ordinary(" world")
    assert tok.encode(text, allowed_special="all") == expected
    assert tok.encode("hello <|endoftext|>", allowed_special={EOT}) == [31373, 220, EOT_ID]  # PROVENANCE.md
    with pytest.raises(ValueError, match="disallowed special token"):  # tiktoken's design, documented
        tok.encode(text)


def test_token_text_shows_partial_utf8_as_bytes(tok: tiktoken.Encoding) -> None:
    ids = tok.encode_ordinary("🤖")
    assert len(ids) > 1  # split across tokens: no single token is a whole character
    parts = [tokenizer_module.token_text(tok, i) for i in ids]
    assert "".join(parts) != "🤖" and all("\\x" in p for p in parts), parts
    assert tokenizer_module.token_text(tok, 15496) == "Hello"


# ----------------------------------------------------------------------------
# Mismatched or broken files


def tokenizer_copy(tmp_path: Path, tokenizer_dir: Path) -> tuple[Path, list[str], dict]:
    shutil.copyfile(tokenizer_dir / "vocab.bpe", tmp_path / "merges.txt")
    shutil.copyfile(tokenizer_dir / "encoder.json", tmp_path / "vocab.json")
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    return tmp_path, lines, vocab


def test_merges_that_disagree_with_vocab(tmp_path: Path, tokenizer_dir: Path) -> None:
    d, lines, _ = tokenizer_copy(tmp_path, tokenizer_dir)
    lines[100], lines[101] = lines[101], lines[100]  # two merges swapped: lines[0] is the #version header
    (d / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    hint = r"merges\.txt line 101 .*does not match vocab\.json.*different tokenizers"
    with pytest.raises(TokenizerError, match=hint):
        minigpt.load_tokenizer(d)


def test_vocab_with_a_gap(tmp_path: Path, tokenizer_dir: Path) -> None:
    d, _, vocab = tokenizer_copy(tmp_path, tokenizer_dir)
    vocab = {k: v for k, v in vocab.items() if v != 300}
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"does not match vocab\.json|without gaps"):
        minigpt.load_tokenizer(d)


def test_vocab_that_is_not_byte_level(tmp_path: Path, tokenizer_dir: Path) -> None:
    d, _, vocab = tokenizer_copy(tmp_path, tokenizer_dir)
    vocab["a b"] = len(vocab)  # a space is never spelled as itself in GPT-2's vocab.json
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"not a GPT-2 byte-level vocabulary"):
        minigpt.load_tokenizer(d)


def test_unreadable_vocab(tmp_path: Path, tokenizer_dir: Path) -> None:
    d, _, _ = tokenizer_copy(tmp_path, tokenizer_dir)
    (d / "vocab.json").write_text("{broken", encoding="utf-8")
    hint = r"cannot read the tokenizer files.*re-download vocab\.json and merges\.txt"
    with pytest.raises(TokenizerError, match=hint):
        minigpt.load_tokenizer(d)


def test_unknown_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNameError, match=r"unknown model 'gpt3'.*gpt2-medium"):
        minigpt.load_tokenizer("gpt3")


# ----------------------------------------------------------------------------
# The bundled GPT-2 ranks: the fallback for a checkpoint without tokenizer files, offline


@pytest.fixture
def no_network(monkeypatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def fresh_bundled() -> None:
    """Forget the bundled encoding built earlier in this process, so the file is really read."""
    tokenizer_module._bundled_gpt2.cache_clear()
    yield
    tokenizer_module._bundled_gpt2.cache_clear()


def test_bundled_ranks_are_openai_s(tokenizer_dir: Path, vectors: dict, tok, fresh_bundled, no_network) -> None:
    asset = ROOT / "minigpt" / "assets" / "gpt2.tiktoken"
    assert asset.read_bytes() == (tokenizer_dir / "gpt2.tiktoken").read_bytes()  # see PROVENANCE.md
    assert hashlib.sha256(asset.read_bytes()).hexdigest() == (
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # tiktoken's pin for r50k_base
    )
    bundled = tokenizer_module.bundled_gpt2()
    reference = minigpt.load_tokenizer(tokenizer_dir)  # from encoder.json + vocab.bpe
    assert bundled._mergeable_ranks == reference._mergeable_ranks == tok._mergeable_ranks
    assert bundled._special_tokens == reference._special_tokens == {EOT: EOT_ID}
    assert bundled._pat_str == reference._pat_str
    check_vectors(bundled, vectors)


def test_written_tokenizer_files_are_openai_s(tmp_path: Path, tokenizer_dir: Path, no_network) -> None:
    tokenizer_module.write_tokenizer_files(tmp_path)
    assert (tmp_path / "vocab.json").read_bytes() == (tokenizer_dir / "encoder.json").read_bytes()
    assert (tmp_path / "merges.txt").read_bytes() == (tokenizer_dir / "vocab.bpe").read_bytes()


@pytest.mark.parametrize("first, expected", [(b"ab", (b"ab", b"c")), (b"bc", (b"a", b"bc"))])
def test_merge_pair_replays_the_earlier_merges(first: bytes, expected: tuple[bytes, bytes]) -> None:
    """'abc' splits two ways into known tokens; only replaying the merges ranked below it finds the real one."""
    other = b"bc" if first == b"ab" else b"ab"
    ranks = {b"a": 0, b"b": 1, b"c": 2, first: 3, other: 4, b"abc": 5}
    assert tokenizer_module.merge_pair(ranks, b"abc") == expected


def test_bare_model_file_uses_the_bundled_tokenizer(
    tmp_path: Path, vocab_checkpoint: Path, vectors: dict, tok, fresh_bundled, no_network, monkeypatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))  # tiktoken's own files: not there
    fallback = minigpt.load_tokenizer(bare_model_file(tmp_path, vocab_checkpoint))
    check_vectors(fallback, vectors)
    assert fallback._mergeable_ranks == tok._mergeable_ranks
    assert not (tmp_path / "empty-cache").exists()


def test_shipped_model_tokenizer_never_asks_the_hub(monkeypatch, tmp_path: Path, no_network) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("went to the hub"))
    assert minigpt.load_tokenizer("shakespeare").encode("Hello world") == [15496, 995]


def test_damaged_bundled_file(tmp_path: Path, fresh_bundled, monkeypatch) -> None:
    damaged = tmp_path / "assets" / "gpt2.tiktoken"
    damaged.parent.mkdir()
    damaged.write_bytes((ROOT / "minigpt" / "assets" / "gpt2.tiktoken").read_bytes()[:-10])
    monkeypatch.setattr(minigpt.sources, "asset_path", lambda *parts: tmp_path.joinpath("assets", *parts))
    with pytest.raises(TokenizerError, match=r"bundled tokenizer .* is damaged \(wrong sha256\); reinstall minigpt"):
        tokenizer_module.bundled_gpt2()
    damaged.unlink()
    with pytest.raises(TokenizerError, match=r"cannot read minigpt's bundled tokenizer .*reinstall minigpt"):
        tokenizer_module.bundled_gpt2()


def bare_model_file(tmp_path: Path, vocab_checkpoint: Path) -> Path:
    path = tmp_path / "model" / "weights.safetensors"  # no vocab.json / merges.txt beside it
    path.parent.mkdir()
    shutil.copyfile(vocab_checkpoint / "model.safetensors", path)
    return path
