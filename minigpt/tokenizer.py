"""GPT-2's byte-level BPE as a `tiktoken.Encoding`.

Built from the checkpoint's `vocab.json` + `merges.txt` when it has them (they are
byte-identical to OpenAI's `encoder.json` + `vocab.bpe`), else from the GPT-2 ranks bundled
with minigpt (`minigpt/assets/gpt2.tiktoken`, the same ranks), so that no path needs the
network. tiktoken's own `get_encoding("gpt2")` would download its files on first use.

Text that merely *contains* "<|endoftext|>" (a web page quoting it, say): `tok.encode(text)`
raises on it, by tiktoken's design. Use `tok.encode_ordinary(text)` (the string becomes
ordinary tokens) or `tok.encode(text, disallowed_special=())` (the same). Only
`tok.encode(text, allowed_special={"<|endoftext|>"})` turns it into the special id 50256.
minigpt's own entry points (the lens, the CLI, generate) use `encode_ordinary`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from pathlib import Path

import tiktoken

from . import sources
from .errors import TokenizerError

EOT = "<|endoftext|>"
EOT_ID = 50256
# The pre-tokenisation pattern of GPT-2 (tiktoken's r50k_base / gpt2).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# sha256 of r50k_base.tiktoken, as tiktoken pins it (tiktoken_ext/openai_public.py).
GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def byte_decoder() -> dict[str, int]:
    """GPT-2's map from the printable characters in vocab.json back to the bytes they stand for.

    vocab.json cannot hold raw bytes, so GPT-2 spells each byte as a printable character:
    printable bytes as themselves, the others as chr(256 + n) in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def encoding_from_files(vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> tiktoken.Encoding:
    """Build the encoding from `vocab.json` (token -> id) and check it against `merges.txt`."""
    return _encoding_from_files(str(Path(vocab_path).resolve()), str(Path(merges_path).resolve()))


@functools.lru_cache(maxsize=8)
def _encoding_from_files(vocab_path: str, merges_path: str) -> tiktoken.Encoding:
    try:
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = [line for line in Path(merges_path).read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#version")]  # fmt: skip
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"cannot read the tokenizer files: {e}; re-download vocab.json and merges.txt") from e
    decode = byte_decoder()
    special = {EOT: vocab.pop(EOT)} if EOT in vocab else {}
    try:
        ranks = {bytes(decode[ch] for ch in token): rank for token, rank in vocab.items()}
    except (KeyError, TypeError) as e:
        raise TokenizerError(f"{vocab_path} is not a GPT-2 byte-level vocabulary ({e!r})") from e
    # In GPT-2, merge i creates token 256 + i: tiktoken needs only the ranks, but a
    # vocab.json and merges.txt that disagree mean mismatched files.
    for i, line in enumerate(merges):
        parts = line.split(" ")
        if len(parts) != 2 or vocab.get(parts[0] + parts[1]) != 256 + i:
            raise TokenizerError(
                f"merges.txt line {i + 2} ({line!r}) does not match vocab.json; the two files come from different tokenizers"
            )
    if len(ranks) != len(vocab) or sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{vocab_path}: token ids must be 0..{len(vocab) - 1} without gaps or duplicates")
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=special,
        explicit_n_vocab=len(ranks) + len(special),
    )  # fmt: skip


def bundled_gpt2() -> tiktoken.Encoding:
    """GPT-2's tokenizer from the ranks bundled with minigpt (`minigpt/assets/gpt2.tiktoken`): no network.

    The file is OpenAI's `r50k_base.tiktoken` (MIT, from openai/whisper), the same ranks as
    `encoder.json` + `vocab.bpe`; its sha256 is the one tiktoken pins for it.
    """
    return _bundled_gpt2()


@functools.lru_cache(maxsize=1)
def _bundled_gpt2() -> tiktoken.Encoding:
    path = sources.asset_path("gpt2.tiktoken")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read minigpt's bundled tokenizer {path}: {e}; reinstall minigpt") from e
    if hashlib.sha256(data).hexdigest() != GPT2_TIKTOKEN_SHA256:
        raise TokenizerError(f"minigpt's bundled tokenizer {path} is damaged (wrong sha256); reinstall minigpt")
    # One `base64(token bytes) rank` per line, the format of tiktoken's own files.
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: EOT_ID},
        explicit_n_vocab=len(ranks) + 1,
    )  # fmt: skip


# ----------------------------------------------------------------------------
# Writing vocab.json + merges.txt (for checkpoints that transformers can load too)


def write_tokenizer_files(directory: str | os.PathLike, tok: tiktoken.Encoding | None = None) -> None:
    """Write `vocab.json` + `merges.txt` (Hugging Face's names) for a GPT-2 byte-level BPE.

    For the bundled GPT-2 ranks they are byte-identical to OpenAI's `encoder.json` + `vocab.bpe`.
    """
    vocab, merges = tokenizer_files_text(tok or bundled_gpt2())
    directory = Path(directory)
    (directory / "vocab.json").write_text(vocab, encoding="utf-8")
    (directory / "merges.txt").write_text(merges, encoding="utf-8")


def tokenizer_files_text(tok: tiktoken.Encoding) -> tuple[str, str]:
    """The text of `vocab.json` and of `merges.txt` for an encoding's ranks."""
    return _tokenizer_files_text(tok)


@functools.lru_cache(maxsize=2)
def _tokenizer_files_text(tok: tiktoken.Encoding) -> tuple[str, str]:
    ranks = tok._mergeable_ranks  # tiktoken keeps no public accessor for the ranks
    spell = {b: ch for ch, b in byte_decoder().items()}  # byte -> its printable stand-in
    by_rank = sorted(ranks, key=ranks.__getitem__)
    vocab = {"".join(spell[b] for b in token): ranks[token] for token in by_rank}
    vocab.update(tok._special_tokens)
    lines = ["#version: 0.2"]
    for token in by_rank:
        if len(token) > 1:
            a, b = merge_pair(ranks, token)
            lines.append("".join(spell[x] for x in a) + " " + "".join(spell[x] for x in b))
    return json.dumps(vocab), "\n".join(lines) + "\n"


def merge_pair(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens whose merge made `token`: BPE on its bytes with only the merges ranked below it.

    In a byte-level BPE, a token's rank is the step at which it was merged, so running the
    earlier merges on its bytes stops at exactly the two parts it was made from.
    """
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        rank, i = min((ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
        if rank >= limit:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise TokenizerError(f"token {token!r} (rank {limit}) is not a merge of two lower-ranked tokens")
    return parts[0], parts[1]


def load_tokenizer(name_or_path: str | os.PathLike = "gpt2") -> tiktoken.Encoding:
    """The tokenizer for a checkpoint name or path (the forms `GPT.from_pretrained` takes).

    A checkpoint's own `vocab.json` + `merges.txt` come first (from its directory, or from the
    hub cache for a hub name); without them, the bundled GPT-2 ranks, so it works offline.

    >>> tok = load_tokenizer("gpt2")
    >>> tok.encode("Hello world")
    [15496, 995]
    """
    source = sources.where(name_or_path)  # the rule `GPT.from_pretrained` uses, so both agree on every name
    if isinstance(source, sources.Local):
        folder = source.path if source.path.is_dir() else source.path.parent
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if (folder / vocab).is_file() and (folder / merges).is_file():
                return encoding_from_files(folder / vocab, folder / merges)
        return bundled_gpt2()
    if isinstance(source, sources.Bundled):  # the shipped models use the bundled GPT-2 tokenizer, never the hub
        return bundled_gpt2()
    cache_only = sources.cache_only()
    vocab, merges = (sources.hub_file(source.repo_id, name, revision=source.revision, optional=True, cache_only=cache_only)
                     for name in ("vocab.json", "merges.txt"))  # fmt: skip
    if vocab is not None and merges is not None:
        return encoding_from_files(vocab, merges)
    return bundled_gpt2()


def token_text(tok: tiktoken.Encoding, token_id: int) -> str:
    """One token's text. A fragment of a multi-byte character shows as its bytes (`\\xe2\\x80`), not as mojibake."""
    return tok.decode_single_token_bytes(token_id).decode("utf-8", errors="backslashreplace")
