"""`minigpt generate`: continue a prompt (greedy, temperature, top-k) with the KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..settings import group, setting
from .args import UsageError, non_negative_float, non_negative_int, positive_int
from .groups import ModelSource, Text
from .io import note, read_text
from .lens import TOP_K_SAYS, check_top_k

if TYPE_CHECKING:
    from ..model import GPTConfig

DESCRIPTION = "Sample a continuation of PROMPT and print it (the prompt itself is not repeated)."
EPILOG = """\
examples:
  minigpt generate "ROMEO:" --model shakespeare -n 60 --temperature 0.8 --top-k 50 --seed 1
  minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
  minigpt generate --text-file prompt.txt --model gpt2 -n 60 --top-k 40 --seed 1
"""


def check_new_tokens(n: int, config: GPTConfig) -> None:
    if n >= config.n_positions:  # the prompt needs at least one position beside the new tokens
        raise ValueError(f"{n} new tokens leave no room in a context of {config.n_positions}")


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt generate`."""

    text: Text = group(Text, "the prompt", only=("text", "text_file", "truncate"), changes={
        "text": {"positional": "PROMPT", "help": "the text to continue (or use --text-file)"},
        "text_file": {"help": "read the prompt from a UTF-8 file ('-' for stdin); one trailing newline is dropped"},
        "truncate": {"help": "keep the last prompt tokens that fit in the context beside the new ones"},
    })  # fmt: skip
    model: ModelSource = group(ModelSource, "the model")
    n: int = setting(40, "-n", "--max-new-tokens", parse=non_negative_int, metavar="N", check=check_new_tokens,
                     says="the model's context is {config.n_positions} tokens, prompt included; ask for fewer",
                     help="tokens to add")  # fmt: skip
    temperature: float = setting(1.0, "--temperature", parse=non_negative_float, metavar="T", help="0 is greedy decoding")
    top_k: int | None = setting(None, "--top-k", parse=positive_int, metavar="K", check=check_top_k, says=TOP_K_SAYS,
                                help="sample only among the K likeliest tokens")  # fmt: skip
    seed: int | None = setting(None, "--seed", parse=int, metavar="N", help="seed the sampling, for repeatable output")


def run(job: Job, given: frozenset[str]) -> int:
    import torch

    from . import load, load_config
    from ..errors import InputError
    from ..generate import generate
    from .args import check_settings

    job.text.check()
    device = job.model.torch_device()
    prompt = read_text(job.text.text, job.text.text_file)
    if not prompt:
        raise InputError("the prompt is empty: give at least one token to continue")
    name = job.model.name()
    config = load_config(name)
    check_settings(job, config)
    model, tok = load(name, device)
    ids = torch.tensor(tok.encode_ordinary(prompt))
    n_ctx = config.n_positions
    room = n_ctx - job.n  # prompt tokens that fit beside the new ones
    if len(ids) > room:
        if not job.text.truncate:
            raise InputError(f"a prompt of {len(ids)} tokens plus {job.n} new ones exceeds the context of {n_ctx} "
                             f"positions; pass --truncate to keep the last {room} prompt tokens, or ask for fewer with -n")  # fmt: skip
        note(f"generate: the prompt is {len(ids)} tokens; --truncate keeps the last {room}")
        ids = ids[-room:]
    generator = None if job.seed is None else torch.Generator(device=model.device).manual_seed(job.seed)
    out = generate(model, ids, job.n, temperature=job.temperature, top_k=job.top_k, generator=generator)
    print(tok.decode(out[len(ids) :].tolist()))
    return 0


__all__ = ["Job", "run", "UsageError"]
