"""`minigpt generate`: continue a prompt (greedy, temperature, top-k) with the KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..settings import group, setting
from .args import UsageError, non_negative_float, non_negative_int, positive_int
from .groups import Decoding, ModelSource, Output, Text
from .io import check_output, is_report, keep_last, note, read_text
from .lenses import load_lens, patchscope
from .lens import TOP_K_SAYS, check_top_k

if TYPE_CHECKING:
    from ..model import GPTConfig

DESCRIPTION = ("Sample a continuation of PROMPT and print it (the prompt itself is not repeated). With -o, also "
               "the lens while the model writes: each new position decoded as it is made.")
EPILOG = """\
examples:
  minigpt generate "ROMEO:" --model shakespeare -n 60 --temperature 0.8 --top-k 50 --seed 1
  minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
  minigpt generate --text-file prompt.txt --model gpt2 -n 60 --top-k 40 --seed 1
  minigpt generate "ROMEO:" --model shakespeare -n 40 --temperature 0.8 --top-k 50 --seed 1 -o run.html
  minigpt generate "ROMEO:" --model shakespeare -n 20 --decoder logit --patchscope -o run.png   (two lenses)
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
    output: Output = group(Output, "the lens during generation", only=("output", "title", "dpi"), changes={
        "output": {"help": "also write the lens over the generated tokens: .html (an interactive page with a lens "
                   "toggle), .png (the grid) or .json"},
    })  # fmt: skip
    decoding: Decoding = group(Decoding, "which lenses (with -o)", only=("decoder", "lens", "lens_kind", "patchscope"))


def run(job: Job, given: frozenset[str]) -> int:
    import torch

    from . import load, load_config
    from ..errors import InputError
    from ..generate import generate
    from .args import check_settings

    job.text.check()
    check_lens_output(job)
    device = job.model.torch_device()
    prompt = read_text(job.text.text, job.text.text_file)
    if not prompt:
        raise InputError("the prompt is empty: give at least one token to continue")
    name = job.model.name()
    config = load_config(name)
    check_settings(job, config)
    job.decoding.check_lenses(config)
    model, tok = load(name, device)
    ids = tok.encode_ordinary(prompt)
    n_ctx = config.n_positions
    room = n_ctx - job.n  # prompt tokens that fit beside the new ones
    ids = torch.tensor(keep_last(ids, room, job.text.truncate, "generate",
                                 f"a prompt of {len(ids)} tokens plus {job.n} new ones exceeds the context of {n_ctx} "
                                 f"positions; pass --truncate to keep the last {room} prompt tokens, or ask for fewer with -n"))  # fmt: skip
    generator = None if job.seed is None else torch.Generator(device=model.device).manual_seed(job.seed)
    if job.output.output is None:
        out = generate(model, ids, job.n, temperature=job.temperature, top_k=job.top_k, generator=generator)
        print(tok.decode(out[len(ids) :].tolist()))
        return 0
    run_ = generate_with_lenses(job, model, tok, ids, generator)
    print(tok.decode(run_.ids[len(ids) :].tolist()))
    return 0


def check_lens_output(job: Job) -> None:
    """Before any weights load: -o's format, and the decoders the lens during generation can use."""
    path = job.output.output
    if path is None:
        if job.decoding.decoder or job.decoding.lenses() or job.decoding.patchscope:
            raise UsageError("--decoder, --lens and --patchscope choose the lenses written with -o: give -o run.html, .png or .json")
        return
    if path.suffix.lower() not in (".html", ".png", ".json"):
        raise UsageError(f"-o {path}: the lens during generation is written as .html, .png or .json")
    check_output(path, "-o")
    if "last_blocks" in job.decoding.names():
        raise UsageError("--decoder last_blocks reads the whole sequence, so it cannot decode one new position at a "
                         "time; choose logit, ln_f_no_bias or norm_only")  # fmt: skip


def generate_with_lenses(job: Job, model, tok, ids, generator):  # noqa: ANN001, ANN201
    """generate_lens with the chosen decoders, then the file -o names."""
    from ..lens.generation import generate_lens

    decoders = dict(job.decoding.built()) if job.decoding.decoder or not (job.decoding.lenses() or job.decoding.patchscope) else {}
    for spec in job.decoding.lenses():
        decoders[spec] = load_lens(spec, model, job.decoding.lens_kind)
    if job.decoding.patchscope:
        decoders["patchscope"] = patchscope(tok)
    run_ = generate_lens(model, ids, job.n, tokenizer=tok, decoders=decoders, temperature=job.temperature,
                         top_k=job.top_k, generator=generator)  # fmt: skip
    path = job.output.output
    if is_report(path):
        from ..report import generation_html

        path.write_text(generation_html(run_, title=job.output.title), encoding="utf-8")
    elif path.suffix.lower() == ".png":
        from ..plot import plot_generation

        plot_generation(run_, title=job.output.title).savefig(path, dpi=job.output.dpi, bbox_inches="tight")
    else:
        run_.to_json(path)
    note(f"generate: wrote {path} ({', '.join(decoders)})")
    return run_


__all__ = ["Job", "run", "UsageError"]
