"""GPT-2's byte-level BPE as a `tiktoken.Encoding`.

Built from the checkpoint's `vocab.json` + `merges.txt` when it has them (they are
byte-identical to OpenAI's `encoder.json` + `vocab.bpe`), else from tiktoken's own `gpt2`.

Text that merely *contains* "<|endoftext|>" (a web page quoting it, say): `tok.encode(text)`
raises on it, by tiktoken's design. Use `tok.encode_ordinary(text)` (the string becomes
ordinary tokens) or `tok.encode(text, disallowed_special=())` (the same). Only
`tok.encode(text, allowed_special={"<|endoftext|>"})` turns it into the special id 50256.
minigpt's own entry points (the lens, the CLI, generate) use `encode_ordinary`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import tiktoken

from .errors import TokenizerError

EOT = "<|endoftext|>"
EOT_ID = 50256
# The pre-tokenisation pattern of GPT-2 (tiktoken's r50k_base / gpt2).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
TIKTOKEN_HOST = "openaipublic.blob.core.windows.net"
TIKTOKEN_GPT2_URLS = (
    f"https://{TIKTOKEN_HOST}/gpt-2/encodings/main/vocab.bpe",
    f"https://{TIKTOKEN_HOST}/gpt-2/encodings/main/encoder.json",
)


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


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's `gpt2`, which downloads its files once, with no timeout of its own.

    So check first: use it when cached, and otherwise fail fast when offline.
    """
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache_dir = Path(cache) if cache else Path(tempfile.gettempdir()) / "data-gym-cache"
    cached = all((cache_dir / hashlib.sha1(url.encode()).hexdigest()).exists() for url in TIKTOKEN_GPT2_URLS)
    if not cached:
        from huggingface_hub import constants

        hint = (
            "pass a checkpoint directory that has vocab.json and merges.txt, "
            "or set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached gpt2 files"
        )
        if constants.HF_HUB_OFFLINE:
            raise TokenizerError(f"the GPT-2 tokenizer is not cached and HF_HUB_OFFLINE is set; {hint}")
        from .load import http_reachable

        if not http_reachable(TIKTOKEN_GPT2_URLS[0]):
            raise TokenizerError(f"cannot download the GPT-2 tokenizer ({TIKTOKEN_HOST} unreachable); {hint}")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken raises plain exceptions for network and hash failures
        raise TokenizerError(f"tiktoken could not load 'gpt2': {e}") from e


def load_tokenizer(name_or_path: str | os.PathLike = "gpt2") -> tiktoken.Encoding:
    """The tokenizer for a checkpoint name or path (the forms `GPT.from_pretrained` takes).

    >>> tok = load_tokenizer("gpt2")
    >>> tok.encode("Hello world")
    [15496, 995]
    """
    from .load import HUB_ID, HUB_REPOS, hub_download

    path = Path(name_or_path).expanduser()
    if path.exists():
        folder = path if path.is_dir() else path.parent
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if (folder / vocab).is_file() and (folder / merges).is_file():
                return encoding_from_files(folder / vocab, folder / merges)
        return tiktoken_gpt2()
    name = str(name_or_path)
    if name in HUB_REPOS or HUB_ID.match(name):
        got = hub_download(HUB_REPOS.get(name, name), (), ("vocab.json", "merges.txt"))
        if got["vocab.json"] is not None and got["merges.txt"] is not None:
            return encoding_from_files(got["vocab.json"], got["merges.txt"])
        return tiktoken_gpt2()
    from .load import resolve

    resolve(name)  # raises the same ModelNameError as loading the model would
    raise AssertionError("unreachable")  # pragma: no cover


def token_text(tok: tiktoken.Encoding, token_id: int) -> str:
    """One token's text. A fragment of a multi-byte character shows as its bytes (`\\xe2\\x80`), not as mojibake."""
    return tok.decode_single_token_bytes(token_id).decode("utf-8", errors="backslashreplace")
