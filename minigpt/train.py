"""Train a GPT-2 from scratch on a text, and write it as a checkpoint that minigpt and transformers load.

    result = minigpt.train("input.txt", "weights/shakespeare", steps=300)
    result.val_loss, result.unigram_loss  # nats per token on the held-out text

What a run does, in the order of the code below:
  data     the text as GPT-2 BPE ids (the bundled tokenizer); the last `val_fraction` of the ids
           is held out, the rest is the training split
  batches  `batch_size` windows of `context + 1` ids at random offsets into the training split,
           drawn from a seeded generator whose state is saved, so that a resumed run draws the same
  a step   the cross-entropy of every next-token prediction; backward; the gradient norm clipped
           to 1.0; AdamW (betas 0.9, 0.95; weight decay 0.1 on matrices and embeddings, none on
           biases and LayerNorm gains); bf16 autocast on a GPU, plain float32 on the CPU
  lr       linear warm-up over the first 10% of the steps, then cosine decay to lr / 10
  eval     the mean loss over every full window of the held-out split, beside a unigram baseline
           (training-split token counts, add-one smoothed over all 50257 ids) on the same targets
  saving   every `save_every` steps and at the end: the checkpoint in `out_dir` (config.json,
           model.safetensors, vocab.json, merges.txt, and at the end a README.md model card), and
           what a resumed run needs (model, AdamW moments, step, data-RNG state) beside it in
           `<out_dir>.train-state/`, outside the folder one ships (the AdamW state is twice the model)

Nothing is pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import InputError, TrainError
from .files import atomic_write
from .model import GPT, GPTConfig
from .progress import progress_bar
from .settings import flags, setting
from .tokenizer import bundled_gpt2, write_tokenizer_files

logger = logging.getLogger(__name__)

VOCAB_SIZE = 50257  # GPT-2's BPE: the ids stay GPT-2's, so any text can be read
WARMUP_FRACTION = 0.1  # of the steps, linear from lr / warmup to lr
MIN_LR_FRACTION = 0.1  # the cosine ends at lr * this
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STATE_FORMAT = 1


@dataclass(frozen=True)
class TrainSettings:
    """What a run is. The defaults are the shipped `shakespeare` model's shape.

    Each field carries its `minigpt train` flag (`minigpt.settings`): the command's parser, its
    resume check and the model card's reproduce command are made from these fields, so a new
    setting is one field here. `fixed=True`: a resumed run keeps the value it started with.
    """

    n_layer: int = setting(4, "--layers", metavar="N", parse=int, fixed=True,
                           help="number of blocks; not the same as lens --layers")
    n_head: int = setting(4, "--heads", metavar="N", parse=int, fixed=True,
                          help="attention heads per block; must divide --embd")
    n_embd: int = setting(128, "--embd", metavar="N", parse=int, fixed=True, help="residual width")
    context: int = setting(256, "--context", metavar="N", parse=int, fixed=True,
                           help="tokens per window, also the model's n_positions")
    steps: int = setting(300, "--steps", metavar="N", parse=int, fixed=True, help="optimizer steps")
    batch_size: int = setting(8, "--batch-size", metavar="N", parse=int, fixed=True,
                              help="windows (sequences) per step")
    lr: float = setting(3e-3, "--lr", metavar="X", parse=float, fixed=True, help="peak learning rate")
    seed: int = setting(0, "--seed", metavar="N", parse=int, fixed=True,
                        help="seeds the initialisation and the windows")
    val_fraction: float = setting(0.1, "--val-fraction", metavar="F", parse=float, fixed=True,
                                  help="the last F of the tokens are held out")
    eval_every: int = setting(100, "--eval-every", metavar="N", parse=int,
                              help="report the held-out loss every N steps, and at the end")
    save_every: int = setting(100, "--save-every", metavar="N", parse=int,
                              help="save the checkpoint and the training state every N steps")
    save_dtype: str = setting("float32", "--save-dtype", choices=tuple(SAVE_DTYPES),
                              help="dtype of model.safetensors; float16 halves it")  # float32: transformers reads it with no dtype argument

    def check(self, names: Mapping[str, str] | None = None) -> None:
        """Raise `TrainError` naming the first bad setting. `names`: how the caller spells each field."""
        name = (lambda f: names.get(f, f)) if names else (lambda f: f)
        for f in ("n_layer", "n_head", "n_embd", "context", "steps", "batch_size", "eval_every", "save_every"):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrainError(f"{name(f)} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            divisors = [h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0]
            below = [h for h in divisors if h < self.n_head][-1:]
            above = [h for h in divisors if h > self.n_head][:1]
            raise TrainError(
                f"{name('n_head')} {self.n_head} does not divide {name('n_embd')} {self.n_embd} (each head gets "
                f"n_embd / n_head dimensions); try {name('n_head')} {' or '.join(map(str, below + above))}"
            )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"{name('lr')} must be a positive number such as 3e-3, got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise TrainError(f"{name('seed')} must be an integer in [0, 2^63), got {self.seed!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise TrainError(
                f"{name('val_fraction')} is the share of the tokens held out, between 0 and 1 (e.g. 0.1); "
                f"got {self.val_fraction!r}"
            )
        if self.save_dtype not in SAVE_DTYPES:
            raise TrainError(f"{name('save_dtype')} must be one of {', '.join(SAVE_DTYPES)}, got {self.save_dtype!r}")

    @property
    def warmup_steps(self) -> int:
        return max(1, round(WARMUP_FRACTION * self.steps))

    def model_config(self) -> GPTConfig:
        return GPTConfig(
            vocab_size=VOCAB_SIZE, n_positions=self.context, n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head
        )


# Fields that decide a run's numbers (fixed on resume): a resumed run must have the same ones.
RUN_FIELDS = tuple(name for name, flag in flags(TrainSettings).items() if flag.fixed)


@dataclass(frozen=True)
class Eval:
    """One evaluation during a run."""

    step: int  # steps done when it was taken
    train_loss: float  # mean training loss since the previous evaluation (nats per token)
    val_loss: float  # mean loss on the held-out split (nats per token)


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns: where the checkpoint is, and how good it is."""

    out_dir: Path
    settings: TrainSettings
    step: int  # steps done (settings.steps when the run is complete)
    val_loss: float  # nats per token on the held-out split, the model as trained (float32)
    saved_val_loss: float  # the same for the weights as saved (rounded to save_dtype)
    unigram_loss: float  # the same targets under the training split's token frequencies
    elapsed_s: float  # wall time of the run, all sessions together
    cpu_s: float  # CPU time of the run (all threads), all sessions together
    history: tuple[Eval, ...] = field(repr=False)
    lens: dict = field(repr=False, default_factory=dict)  # the lens summary of the model card

    def __repr__(self) -> str:
        return (
            f"TrainResult(step {self.step}/{self.settings.steps}, val {self.val_loss:.3f} nats vs unigram "
            f"{self.unigram_loss:.3f}, {self.elapsed_s / 60:.1f} min, {str(self.out_dir)!r})"
        )


# ----------------------------------------------------------------------------
# The entry point


def train(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: TrainSettings | None = None,
    *,
    device: str | torch.device | None = None,
    resume: bool = False,
    progress: bool | None = None,
    data_licence: str | None = None,
    names: Mapping[str, str] | None = None,
    **overrides: object,
) -> TrainResult:
    """Train a GPT-2 on `data` and write it to `out_dir` (see the module docstring for the recipe).

    data: a UTF-8 text file, or the text itself (a str with a line break in it).
    settings: a `TrainSettings` (default: its defaults); `overrides` change its fields by name
      (`train(data, out, steps=300)`).
    device: default cuda when available, else cpu. progress: show progress on stderr (default: a
    bar when stderr is a terminal; True: plain lines when it is not). resume: continue the run saved
    beside `out_dir` (same settings and text). data_licence: the text's licence, for the model card.
    names: how the caller spells settings in messages (the CLI passes its flags).
    """
    try:
        settings = dataclasses.replace(settings or TrainSettings(), **overrides)
    except TypeError as e:  # an unknown keyword
        raise TrainError(f"{e}; the settings are {', '.join(f.name for f in dataclasses.fields(TrainSettings))}") from None
    started = time.perf_counter()  # this session's start; a resumed run adds the time saved before
    settings.check(names)
    device = pick_device(device)
    out_dir, state_dir = Path(out_dir), train_state_dir(out_dir)
    check_out_dir(out_dir, state_dir, resume, names)
    corpus = read_corpus(data)
    train_ids, val_ids = split(torch.tensor(bundled_gpt2().encode_ordinary(corpus.text)), settings)
    val_windows = windows(val_ids, settings.context)
    unigram = unigram_loss(train_ids, val_windows[:, 1:])

    model = init_model(settings).to(device)
    optimizer = make_optimizer(model, settings)
    data_rng = torch.Generator().manual_seed(settings.seed)
    run = load_train_state(state_dir, settings, corpus.sha256, model, optimizer, data_rng) if resume else Progress()
    # The run's time: every session that trained. Resuming a finished run (to rewrite its files) adds none.
    before, cpu_before, cpu_started = run.elapsed_s, run.cpu_s, time.process_time()
    trains = run.step < settings.steps
    clock = lambda: before + (time.perf_counter() - started if trains else 0.0)  # noqa: E731
    cpu_clock = lambda: cpu_before + (time.process_time() - cpu_started if trains else 0.0)  # noqa: E731

    def save() -> None:
        save_checkpoint(model, out_dir, SAVE_DTYPES[settings.save_dtype])
        save_train_state(state_dir, model, optimizer, data_rng, run, (clock(), cpu_clock()), settings, corpus.sha256)

    resume_name = (names or {}).get("resume", "resume=True")
    train_loop(model, optimizer, train_ids, val_windows, data_rng, run, settings, save, unigram, progress, resume_name)
    if not run.history or run.history[-1].step != run.step:  # resumed a run that had already finished
        run.history.append(evaluation(model, val_windows, run, settings))
    save()
    saved = as_saved(model, SAVE_DTYPES[settings.save_dtype])  # what model.safetensors holds, read back
    saved_loss = run.history[-1].val_loss if saved is model else val_loss(saved, val_windows, settings.batch_size)
    lens = lens_summary(saved, val_ids, settings.context)
    result = TrainResult(out_dir, settings, run.step, run.history[-1].val_loss, saved_loss, unigram, clock(),
                         cpu_clock(), tuple(run.history), lens)  # fmt: skip
    from .card import model_card

    recipe = dict(betas=BETAS, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, warmup_fraction=WARMUP_FRACTION,
                  min_lr_fraction=MIN_LR_FRACTION, lens_windows=LENS_WINDOWS)  # fmt: skip
    prompts = windows(val_ids, settings.context)[: 3 * 7 : 7]  # three held-out windows, spread out
    card = model_card(result, corpus, (len(train_ids), len(val_ids)), device, data_licence, saved, prompts, recipe)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return result


@dataclass
class Progress:
    """How far a run has come; saved with its training state."""

    step: int = 0  # steps done
    elapsed_s: float = 0.0  # wall time of the sessions saved before this one
    cpu_s: float = 0.0  # their CPU time
    losses: list[float] = field(default_factory=list)  # the training loss of every step
    history: list[Eval] = field(default_factory=list)


def train_loop(model: GPT, optimizer: torch.optim.AdamW, train_ids: Tensor, val_windows: Tensor,
               data_rng: torch.Generator, run: Progress, settings: TrainSettings, save, unigram: float,
               show: bool | None, resume_name: str = "resume=True") -> None:  # fmt: skip
    """Steps run.step .. settings.steps - 1; evaluate every `eval_every` and at the end; save every `save_every`."""
    saved = run.step
    bar = progress_bar(total=settings.steps, initial=run.step, show=show, desc="train", unit="step")
    try:
        for step in range(run.step, settings.steps):
            batch = sample_batch(train_ids, settings, data_rng, model.device)
            run.losses.append(train_step(model, optimizer, batch, step, settings))
            run.step = step + 1
            bar.update(1)
            bar.set_postfix_str(f"loss {run.losses[-1]:.3f}", refresh=False)
            if run.step % settings.eval_every == 0 or run.step == settings.steps:
                run.history.append(evaluation(model, val_windows, run, settings))
                last, since = run.history[-1], run.history[-2].step if len(run.history) > 1 else 0
                logger.info("step %d/%d: train loss %.3f (mean of steps %d-%d), val loss %.3f (unigram baseline %.3f)",
                            run.step, settings.steps, last.train_loss, since + 1, run.step, last.val_loss, unigram)  # fmt: skip
            if run.step % settings.save_every == 0 and run.step < settings.steps:
                save()
                saved = run.step
    except KeyboardInterrupt:
        # Nothing is saved now: the interrupt may have landed in the middle of an optimizer step.
        logger.warning("interrupted at step %d; the run was last saved at step %d: continue it with %s",
                       run.step, saved, resume_name)  # fmt: skip
        raise
    finally:
        bar.close()


# ----------------------------------------------------------------------------
# Data: the text, its two splits, random training windows, fixed held-out windows


class Corpus(NamedTuple):
    text: str
    path: str | None  # as the caller gave it (None for a text passed directly)
    sha256: str  # of the text's UTF-8 bytes


def read_corpus(data: str | os.PathLike) -> Corpus:
    """The text to train on, from a file or given directly."""
    if isinstance(data, str) and "\n" in data:
        text, given = data, None
    else:
        path = Path(data)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"no text file {path}: check the path (a file of UTF-8 text to train on)") from None
        except IsADirectoryError:
            raise InputError(f"{path} is a directory: give a file of UTF-8 text to train on") from None
        except UnicodeDecodeError as e:
            raise InputError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
        given = str(data)
    if not text.strip():
        raise InputError("the text is empty: give a text of at least a few thousand words to train on")
    return Corpus(text, given, hashlib.sha256(text.encode("utf-8")).hexdigest())


def split(ids: Tensor, settings: TrainSettings) -> tuple[Tensor, Tensor]:
    """The training ids, then the held-out last `val_fraction` of them."""
    n_val = int(len(ids) * settings.val_fraction)
    need = settings.context + 1  # one window in each split
    if n_val < need or len(ids) - n_val < need:
        least = math.ceil(need / min(settings.val_fraction, 1 - settings.val_fraction))
        raise InputError(
            f"the text is only {len(ids)} tokens: holding out {settings.val_fraction:g} of it must still leave "
            f"a window of context + 1 = {need} tokens in each split; give a longer text (at least {least} "
            "tokens) or a smaller context"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def sample_batch(ids: Tensor, settings: TrainSettings, rng: torch.Generator, device: torch.device) -> Tensor:
    """`batch_size` windows of context + 1 ids at random offsets: (B, T + 1)."""
    starts = torch.randint(0, len(ids) - settings.context, (settings.batch_size, 1), generator=rng)  # (B, 1)
    return ids[starts + torch.arange(settings.context + 1)].to(device)  # (B, 1) + (T + 1,) -> (B, T + 1)


def windows(ids: Tensor, context: int) -> Tensor:
    """Every full window of the held-out ids, side by side, each overlapping the next by one id: (N, T + 1).

    So each held-out token (but the first, and a last partial window's) is predicted exactly once.
    """
    return ids.unfold(0, context + 1, context)  # (N, T + 1)


# ----------------------------------------------------------------------------
# The model, the optimizer, one step


def init_model(settings: TrainSettings) -> GPT:
    """A fresh GPT-2 of the run's shape, initialised from the run's seed (the caller's RNG untouched).

    GPT-2's initialisation: weights N(0, 0.02), biases 0, LayerNorm gains 1 (the modules' own), and
    the two projections that write into the residual stream scaled by 1/sqrt(2 n_layer), so that
    the stream's variance does not grow with depth.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = GPT(settings.model_config())
        with torch.no_grad():
            for block in model.h:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.normal_(0.0, 0.02 / math.sqrt(2 * settings.n_layer))
    return model


def make_optimizer(model: GPT, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices and embeddings (2-D), none on biases and LayerNorm gains."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=BETAS)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to lr * MIN_LR_FRACTION at the last step."""
    warmup = settings.warmup_steps
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - 1 - warmup)  # 0 after warm-up, 1 at the last step
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # 1 -> 0
    return settings.lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (matmuls in bfloat16, the weights and optimizer in float32); none on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def next_token_loss(model: GPT, chunk: Tensor) -> Tensor:
    """Mean cross-entropy of predicting chunk[:, 1:] from chunk[:, :-1], in nats per token."""
    with autocast(chunk.device):
        logits = model(chunk[:, :-1]).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten())  # (B * T, V) vs (B * T,)


def train_step(model: GPT, optimizer: torch.optim.AdamW, chunk: Tensor, step: int, settings: TrainSettings) -> float:
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, settings)
    loss = next_token_loss(model, chunk)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return loss.item()


# ----------------------------------------------------------------------------
# Evaluation: held-out loss, the unigram baseline, the lens


@torch.no_grad()
def val_loss(model: GPT, val_windows: Tensor, batch_size: int) -> float:
    """Mean next-token loss over the held-out windows (N, T + 1), in nats per token."""
    model.eval()
    total = 0.0
    for batch in val_windows.split(batch_size):
        total += next_token_loss(model, batch.to(model.device)).item() * batch[:, 1:].numel()
    return total / val_windows[:, 1:].numel()


def unigram_loss(train_ids: Tensor, targets: Tensor) -> float:
    """The loss of predicting every target from the training split's token frequencies alone.

    Add-one smoothing over all 50257 ids, so that a token the training split lacks costs a finite loss.
    """
    counts = torch.bincount(train_ids, minlength=VOCAB_SIZE).double() + 1  # (V,)
    return float(-(counts / counts.sum()).log()[targets].mean())


def evaluation(model: GPT, val_windows: Tensor, run: Progress, settings: TrainSettings) -> Eval:
    since = run.history[-1].step if run.history else 0
    recent = run.losses[since:] or run.losses[-1:]
    train_loss = float(np.mean(recent)) if recent else float("nan")
    return Eval(run.step, train_loss, val_loss(model, val_windows, settings.batch_size))


LENS_WINDOWS = 4  # the held-out windows the model card's lens numbers are averaged over


@torch.no_grad()
def lens_summary(model: GPT, val_ids: Tensor, context: int) -> dict:
    """The logit lens on the last few held-out windows: per row, the mean KL(final ‖ row) and how often
    the row's top-1 is the final top-1 (the post's pattern: a big jump after `embed`, then a smooth fall)."""
    from .lens import logit_lens

    model.eval()
    tail = windows(val_ids, context)[-LENS_WINDOWS:, :-1]  # (N, T)
    results = [logit_lens(model, window.to(model.device), k=1) for window in tail]
    kl = np.concatenate([r.kl_final for r in results], axis=1)  # (R, N * T)
    top1 = np.concatenate([r.rank_final == 1 for r in results], axis=1)  # (R, N * T)
    return {"labels": results[0].labels, "positions": kl.shape[1], "kl_final": kl.mean(axis=1).tolist(),
            "top1_agreement": top1.mean(axis=1).tolist()}  # fmt: skip


# ----------------------------------------------------------------------------
# Files: the checkpoint (official layout), and the state a resumed run needs


def as_saved(model: GPT, dtype: torch.dtype) -> GPT:
    """The model with its weights rounded to `dtype` and back, as a checkpoint saved in `dtype` loads."""
    if dtype == torch.float32:
        return model
    saved = copy.deepcopy(model)
    with torch.no_grad():
        for p in saved.parameters():
            p.copy_(p.to(dtype))
    return saved


def train_state_dir(out_dir: str | os.PathLike) -> Path:
    """Where a run keeps its resumable state: beside the checkpoint, never inside it."""
    out_dir = Path(out_dir).absolute()
    return out_dir.with_name(out_dir.name + ".train-state")


def check_out_dir(out_dir: Path, state_dir: Path, resume: bool, names: Mapping[str, str] | None = None) -> None:
    """Refuse an output that is a file, a resume with nothing saved, or a new run over a saved one.

    names: how the caller spells `resume` and `save_every` (the CLI: its flags)."""
    name = {"resume": "resume=True", "save_every": "save_every", **(names or {})}
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainError(f"the output {out_dir} is a file; give a directory (it is created if needed)")
    if resume and not (state_dir / "state.json").is_file():
        raise TrainError(
            f"nothing to resume: {state_dir} holds no training state (a run saves it every {name['save_every']} "
            f"steps); start the run without {name['resume']}, or check the output directory"
        )
    if not resume and ((out_dir / "model.safetensors").exists() or state_dir.exists()):
        raise TrainError(
            f"{out_dir} already holds a model: continue its run with {name['resume']}, or choose another "
            "output directory (or delete it)"
        )


def save_checkpoint(model: GPT, out_dir: Path, dtype: torch.dtype) -> None:
    """config.json + model.safetensors + vocab.json + merges.txt in the official GPT-2 layout.

    No mask buffers (minigpt builds the mask itself; transformers too), metadata {"format": "pt"}
    as transformers expects, n_positions = the training context.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_dir / "model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    fields = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": config.activation_function,
        "vocab_size": config.vocab_size, "n_positions": config.n_positions, "n_ctx": config.n_positions,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.n_inner,
        "layer_norm_epsilon": config.layer_norm_epsilon, "bos_token_id": 50256, "eos_token_id": 50256,
        # minigpt trains without dropout; transformers would otherwise default to 0.1 when training further
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": str(dtype).removeprefix("torch."),
    }  # fmt: skip
    atomic_write(out_dir / "config.json", lambda p: p.write_text(json.dumps(fields, indent=2) + "\n"))
    write_tokenizer_files(out_dir)


def save_train_state(state_dir: Path, model: GPT, optimizer: torch.optim.AdamW, data_rng: torch.Generator,
                     run: Progress, times: tuple[float, float], settings: TrainSettings, text_sha256: str) -> None:  # fmt: skip
    """The model in float32, AdamW's moments, the data generator's state (safetensors), and the rest (JSON)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"data_rng": data_rng.get_state()}
    adam_steps = set()
    for name, p in model.named_parameters():
        tensors[f"model.{name}"] = p.detach().cpu().contiguous()
        state = optimizer.state.get(p)
        if state:  # empty before the first step
            tensors[f"exp_avg.{name}"] = state["exp_avg"].cpu().contiguous()
            tensors[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].cpu().contiguous()
            adam_steps.add(float(state["step"]))
    meta = {"format": STATE_FORMAT, "settings": dataclasses.asdict(settings), "text_sha256": text_sha256,
            "adam_step": adam_steps.pop() if adam_steps else 0.0, **dataclasses.asdict(run), "elapsed_s": times[0], "cpu_s": times[1]}  # fmt: skip
    atomic_write(state_dir / "state.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write(state_dir / "state.json", lambda p: p.write_text(json.dumps(meta) + "\n"))


def saved_settings(out_dir: str | os.PathLike) -> TrainSettings | None:
    """The settings of the run saved beside `out_dir`, or None when there is none."""
    try:
        meta = json.loads((train_state_dir(out_dir) / "state.json").read_text(encoding="utf-8"))
        return TrainSettings(**meta["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_train_state(state_dir: Path, settings: TrainSettings, text_sha256: str, model: GPT,
                     optimizer: torch.optim.AdamW, data_rng: torch.Generator) -> Progress:  # fmt: skip
    """Put a saved run back into `model`, `optimizer` and `data_rng`; return its progress."""
    try:
        meta = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(state_dir / "state.safetensors")
        saved = TrainSettings(**meta["settings"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise TrainError(f"cannot read the training state in {state_dir} ({e}); it is damaged: start a new run") from e
    differ = [f"{f} {getattr(saved, f)!r} (now {getattr(settings, f)!r})" for f in RUN_FIELDS
              if getattr(saved, f) != getattr(settings, f)]  # fmt: skip
    if differ:
        raise TrainError(
            "resume continues the saved run, whose settings differ: " + ", ".join(differ)
            + "; use the saved settings, or start a new run in another output directory"
        )
    if meta["text_sha256"] != text_sha256:
        raise TrainError("resume continues the saved run, but this text differs from the one it trained on")
    device = model.device
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[f"model.{name}"])
    if meta["adam_step"] > 0:
        step = torch.tensor(meta["adam_step"], dtype=torch.float32)  # AdamW keeps its step as a float tensor
        for name, p in model.named_parameters():
            optimizer.state[p] = {"step": step.clone(), "exp_avg": tensors[f"exp_avg.{name}"].to(device),
                                  "exp_avg_sq": tensors[f"exp_avg_sq.{name}"].to(device)}  # fmt: skip
    data_rng.set_state(tensors["data_rng"])
    logger.info("resuming %s at step %d of %d", state_dir, meta["step"], settings.steps)
    return Progress(meta["step"], meta["elapsed_s"], meta["cpu_s"], meta["losses"], [Eval(**e) for e in meta["history"]])


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise TrainError(f"unknown device {device!r} ({e}); use e.g. cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {device}: CUDA is not available on this machine; use cpu")
    return device
