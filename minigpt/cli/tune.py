"""`minigpt tune`: a tuned lens (or an input probe) for a model, then its held-out table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..settings import group, resume_clashes, setting
from .args import CommandError, UsageError, positive_float, positive_int
from .groups import ModelSource, Text
from .io import note, plural, read_text

DESCRIPTION = """\
Train a tuned lens (one affine translator per row, tuned-lens' recipe) or an input probe
on a text file, then compare it with the logit lens on the held-out end of the text."""

EPILOG = """\
what it trains:
  --kind tuned (default): one affine translator per row below the last, so that ln_f(h + h Wᵀ + b)
  matches the model's output distribution (KL(final || lens), tuned-lens' recipe: SGD, Nesterov
  momentum 0.9, lr 0.1, weight decay 1e-3, linear decay to 0, gradient clip 1.0).
  --kind probe: one map per row, the top one included, trained to name the *input* token
  (cross-entropy through the unembedding); its table shows how long each row still names it.

  The last --val-fraction of the text's tokens is held out; the per-row table at the end compares
  the lens with the logit lens on it (also written to DIR/eval.json). DIR gets lens.safetensors +
  config.json (use it with --lens DIR) and the state --resume continues from.

cost: the defaults (100 steps x 2048 tokens) take minutes for a small model on a CPU. A gpt2-small
  lens needs about 2.1 GFLOP per token, 25-190 tokens/s on a CPU: the defaults take 1-3 hours for
  gpt2 on 2 cores, seconds on a GPU. tuned-lens' published recipe (65.5M tokens) is a GPU job:
  --steps 250 --tokens-per-step 262144 --device cuda.

examples:
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2 --resume --steps 200
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2-probe --kind probe
  torchrun --standalone --nproc-per-node 8 -m minigpt tune --text-file corpus.txt --model gpt2-xl \\
      --out lenses/gpt2-xl --device cuda --steps 250 --tokens-per-step 262144
"""


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt tune`. None: the library's default (or, on --resume, the saved run's)."""

    text: Text = group(Text, "input", only=("text_file", "window", "val_fraction"), changes={
        "text_file": {"required": True, "help": "the training text, UTF-8 ('-' for stdin)"},
        "window": {"fixed": True, "help": "tokens per sequence (default: the model's context)"},
    })  # fmt: skip
    model: ModelSource = group(ModelSource, "the model")
    out: Path = setting(None, "--out", parse=Path, metavar="DIR", required=True, help="folder for the lens and its training state")
    kind: str | None = setting(None, "--kind", choices=("tuned", "probe"), fixed=True, help="what to train (default: tuned)")
    steps: int | None = setting(None, "--steps", parse=positive_int, metavar="N",
                                help="optimizer steps; the schedule spans them (default: 100)")
    tokens_per_step: int | None = setting(None, "--tokens-per-step", parse=positive_int, metavar="N", fixed=True,
                                          help="tokens per step, rounded up to whole windows (default: 2048)")
    lr: float | None = setting(None, "--lr", parse=positive_float, metavar="X", fixed=True,
                               help="learning rate, in PyTorch's terms (default: 0.1)")
    seed: int | None = setting(None, "--seed", parse=int, metavar="N", fixed=True,
                               help="seed of the data order; the same seed gives the same lens (default: 0)")
    resume: bool = setting(False, "--resume", action="store_true", help="continue the run saved in --out DIR, exactly")
    save_every: int = setting(10, "--save-every", parse=positive_int, metavar="N", help="save the run every N steps, and at the end")
    batch_size: int | None = setting(None, "--batch-size", parse=positive_int, metavar="N",
                                     help="windows per forward pass (memory, not maths; default: about 1024 tokens' worth)")


def saved_run(out: Path) -> dict | None:
    """The settings of the run saved in `out` (train_state.json), or None."""
    from ..tuned_train import STATE_JSON

    try:
        return dict(json.loads((out / STATE_JSON).read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(job: Job, given: frozenset[str]) -> int:
    from . import load, load_config
    from .. import distributed
    from ..tuned import TunedLens
    from ..tuned_train import STATE_JSON, corpus_ids, evaluate, split_holdout
    from .args import check_settings

    out = job.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the lens")
    has_run = (out / STATE_JSON).is_file()
    if job.resume and not has_run:
        raise CommandError(f"--resume: {out} holds no saved run ({STATE_JSON}); drop --resume to start one")
    if not job.resume and has_run:
        raise CommandError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if job.resume:
        values = {"kind": job.kind, "tokens_per_step": job.tokens_per_step, "lr": job.lr, "seed": job.seed,
                  "window": job.text.window}  # fmt: skip
        differ = resume_clashes(Job, saved_run(out) or {}, values)  # the fields marked fixed, --window included
        if differ:
            raise UsageError(f"--resume continues the run in {out} as it was set up: drop " + ", ".join(differ))
    name = job.model.name()
    config = load_config(name)
    check_settings(job, config)
    device = distributed.local_device(job.model.torch_device())
    text = read_text(None, job.text.text_file)
    distributed.init_from_env(device)

    model, tok = load(name, device)
    ids = corpus_ids(text, tok, model.config.vocab_size)
    train, held_out = split_holdout(ids, job.text.val_fraction)
    if distributed.is_main():
        note(f"tune: {plural(len(ids), 'token')}: training on {len(train):,}, holding out {len(held_out):,}"
             + (f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""))  # fmt: skip
    fitted = TunedLens.fit(
        model, train, kind=job.kind, steps=job.steps, tokens_per_step=job.tokens_per_step, seed=job.seed,
        window=job.text.window, lr=job.lr, batch_size=job.batch_size, out=out, resume=out if job.resume else None,
        save_every=job.save_every, base_model_name_or_path=name, progress=True,
    )  # fmt: skip
    lens, report = fitted  # the lens, and the run's losses and settings
    window = report.settings["window"]
    if distributed.is_main():
        note(f"tune: wrote {out} (use it with --lens {out})")
    if not len(held_out):
        note("tune: --val-fraction 0 holds nothing out, so there is no held-out table")
    else:
        result = evaluate(lens, model, held_out, window=window, batch_size=job.batch_size, progress=True)
        if distributed.is_main():
            (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
            print(result.table())
    return 0
