"""`minigpt jlens`: fit a Jacobian lens (the reference estimator) for a model on a text, and save it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import group, setting
from .args import UsageError, non_negative_int, positive_int
from .groups import ModelSource, Text
from .io import check_output, note, read_text

DESCRIPTION = ("Fit a Jacobian lens: J_l = E[∂h_final/∂h_l] per block output, averaged over prompts cut from a "
               "text (each with <|endoftext|> first), and save it in the reference .pt format.")  # fmt: skip
EPILOG = """\
examples:
  minigpt jlens --text-file ../shared/data/tinyshakespeare/input.txt --model shakespeare -o jlens.pt --n-prompts 20
  minigpt eval --text-file examples/abstract.txt --model shakespeare --lens-kind jacobian --lens jlens.pt
"""


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt jlens`."""

    text: Text = group(Text, "the text", only=("text_file",), changes={"text_file": {"required": True}})
    model: ModelSource = group(ModelSource, "the model")
    out: Path = setting(None, "-o", "--out", parse=Path, metavar="PATH", required=True, help="the .pt file to write")
    n_prompts: int = setting(100, "--n-prompts", parse=positive_int, metavar="N", help="prompts to average over")
    seq_len: int = setting(128, "--seq-len", parse=positive_int, metavar="T", help="tokens per prompt (<|endoftext|> included)")
    skip_first: int = setting(16, "--skip-first", parse=non_negative_int, metavar="K",
                              help="source positions left out at the start of each prompt, as the reference does")
    seed: int = setting(0, "--seed", parse=int, metavar="N", help="which prompts are drawn")


def run(job: Job, given: frozenset[str]) -> int:
    from . import load, load_config
    from .. import distributed
    from ..lens.jacobian import JacobianLens

    if job.out.suffix != ".pt":
        raise UsageError(f"-o {job.out}: a J-lens file is a .pt file (the reference format)")
    check_output(job.out, "-o")
    name = job.model.name()
    config = load_config(name)
    if job.seq_len > config.n_positions:
        raise UsageError(f"--seq-len {job.seq_len}: the model's context is {config.n_positions} tokens")
    if job.skip_first + 2 > job.seq_len:
        raise UsageError(f"--skip-first {job.skip_first} leaves no source position in prompts of {job.seq_len} tokens")
    text = read_text(None, job.text.text_file)
    device = distributed.local_device(job.model.torch_device())
    distributed.init_from_env(device)  # under torchrun: each rank fits its share of the prompts
    model, tok = load(name, device)
    lens = JacobianLens.fit(model, text, tokenizer=tok, n_prompts=job.n_prompts, seq_len=job.seq_len,
                            skip_first=job.skip_first, seed=job.seed, progress=True)  # fmt: skip
    if distributed.is_main():
        lens.save(job.out)
        note(f"jlens: wrote {job.out} (use it with --lens-kind jacobian --lens {job.out})")
    return 0
