"""`minigpt train`: a GPT-2 from scratch on a text file, written as a checkpoint with its model card.

The run's settings are `minigpt.train.TrainSettings`, whose fields carry their flags: the parser,
the checks, the resume check and the card's reproduce command all come from them.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from ..settings import flag_names, group, resume_clashes, setting
from ..train import TrainSettings
from .args import UsageError
from .groups import ModelSource, Text
from .io import note

DESCRIPTION = "Train a GPT-2 from scratch on a UTF-8 text file and write it as a checkpoint."

EPILOG = """\
what it does:
  Reads TEXT_FILE as GPT-2 BPE tokens, holds out the last --val-fraction of them, and trains a
  fresh GPT-2 on random windows of --context tokens (--batch-size windows per step): AdamW with
  weight decay 0.1, a linear warm-up over the first 10% of the steps, then cosine decay to lr/10,
  gradient-norm clipping at 1.0; bf16 autocast on a GPU. Every --eval-every steps it reports the
  held-out loss beside a unigram baseline (the training split's token frequencies), and the mean
  training loss over the steps since the previous report.

what it writes:
  DIR/config.json, model.safetensors, vocab.json and merges.txt, the official GPT-2 layout that
  minigpt (--model DIR) and transformers load, and at the end DIR/README.md, a model card with the
  settings, losses, samples and the command that reproduces the run. Every --save-every steps it
  also saves DIR.train-state/ (model, AdamW state, step, data RNG) beside DIR: --resume continues
  from it. It is not part of the model (and is three times its size): ship DIR alone.

note: --layers here is the number of blocks to build; `minigpt lens --layers` picks rows to show.

examples:
  minigpt train input.txt --out weights/mine --steps 300
  minigpt train input.txt --out weights/mine --resume          (continue an interrupted run)
  minigpt train input.txt --out weights/tiny --layers 2 --embd 64 --context 64 --steps 150
  minigpt train input.txt --out weights/mine --device cuda     (the device defaults to cpu)
"""


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt train`: the text, where to write, the run's `TrainSettings`, the device."""

    text: Text = group(Text, "input", only=("text_file",), changes={
        "text_file": {"names": (), "positional": "TEXT_FILE", "help": "the UTF-8 text to train on"}})  # fmt: skip
    out: Path = setting(None, "--out", parse=Path, metavar="DIR", required=True, help="where to write the checkpoint")
    settings: TrainSettings = group(TrainSettings, "the model and the run (with --resume: the saved run's, unless given)")
    model: ModelSource = group(ModelSource, "the device", only=("device",))
    resume: bool = setting(False, "--resume", action="store_true", help="continue the run saved in DIR.train-state/")
    data_licence: str | None = setting(None, "--data-licence", metavar="TEXT", help="the text's licence, for the model card")


def run(job: Job, given: frozenset[str]) -> int:
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm  # log lines above a terminal's bar, not through it

    from ..errors import TrainError
    from ..train import check_out_dir, saved_settings, train, train_state_dir

    names = {**flag_names(TrainSettings), "resume": "--resume"}  # messages name the flags
    mine = {f.name for f in dataclasses.fields(TrainSettings)} & given
    values = {k: getattr(job.settings, k) for k in mine}
    saved = saved_settings(job.out) if job.resume else None
    if saved is not None:
        differ = resume_clashes(TrainSettings, dataclasses.asdict(saved), values)
        if differ:
            raise UsageError(f"--resume continues the run in {job.out} as it was set up: drop " + ", ".join(differ))
    settings = dataclasses.replace(saved or TrainSettings(), **values)
    try:
        settings.check(names=names)
    except TrainError as e:
        raise UsageError(str(e)) from None
    device = job.model.torch_device()
    check_out_dir(job.out, train_state_dir(job.out), job.resume, names)  # before the text is read

    log = logging.getLogger("minigpt.train")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("train: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[log]):
            result = train(job.text.text_file, job.out, settings, device=device, resume=job.resume,
                           data_licence=job.data_licence, names=names, progress=True)  # fmt: skip
    finally:
        log.removeHandler(handler)
    note(f"train: val loss {result.val_loss:.3f} nats (unigram baseline {result.unigram_loss:.3f}) after "
         f"{result.step} steps, {result.elapsed_s / 60:.1f} min; wrote {result.out_dir}")  # fmt: skip
    print(result.out_dir)
    return 0
