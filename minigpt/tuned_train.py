"""Training a tuned lens or an input probe, and the held-out comparison with the logit lens.

The recipe is tuned-lens' (its `train` command), so that a lens trained here means what theirs
means: SGD with Nesterov momentum 0.9, lr 0.1 in PyTorch terms (their "effective" 1.0, since
momentum multiplies steps by 1 / (1 - 0.9)), weight decay 1e-3, the learning rate decaying
linearly to 0 over `steps` with no warm-up, and the gradients' global norm clipped at 1.0.

Per step: one global batch of `tokens_per_step` tokens (whole windows), the same windows however
many processes share it. For every micro-batch the model runs once (no gradients), p_final is
computed once, then each row's map runs and gets its own backward pass, so only one row's
(tokens, V) activations are alive at a time: this is what lets gpt2-xl's 48 translators train
on short windows within 24 GB. The loss is the mean over tokens, summed over rows.

Defaults for a CPU. A gpt2-small lens costs about 2.1 GFLOP per token (12 rows, each a forward and
a backward through the 768 x 50257 unembedding), i.e. 25-190 tokens/s on 2-16 CPU cores. tuned-lens'
250 steps x 2^18 tokens (65.5M tokens) is a GPU job there; the defaults here, 100 steps x 2048 tokens
(0.2M tokens), take minutes for a small model and 1-3 hours for gpt2 on a 2-core CPU (gpt2 there
is a benchmark, not the target), and already beat the logit lens at every row of a small trained model. For the published recipe pass
steps=250, tokens_per_step=2**18 on a GPU. The window defaults to the model's context (1024 for
GPT-2, as in tuned-lens), and each step is rounded up to whole windows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import distributed
from .progress import progress_bar
from .errors import CheckpointError, InputError, LensError
from .lens import LnF, evaluate_lens
from .lens._frozen import frozen
from .model import GPT
from .tokenizer import EOT_ID
from .files import atomic_write, check_writable
from .interrupt import Interrupted, save_on_interrupt
from .tuned_files import CONFIG_FILE, KINDS, Kind, read_lens_config

if TYPE_CHECKING:
    import tiktoken

    from .tuned import TunedLens  # for the types only: TunedLens.fit calls in here, so this file never imports it

logger = logging.getLogger(__name__)
STATE_FILE = "train_state.safetensors"  # momentum buffers and the data order
STATE_JSON = "train_state.json"  # the step, the run's settings, the corpus fingerprint, the losses
MICRO_BATCH_TOKENS = 1024  # tokens per forward pass by default: a few (tokens, V) float tensors stay under 1 GB
LN2 = math.log(2.0)


@dataclass(frozen=True)
class TrainConfig:
    """The settings that define a run; saved with it, and held fixed when it is resumed (except `steps`)."""

    kind: str = "tuned"
    steps: int = 100
    tokens_per_step: int = 2048
    window: int | None = None  # None: the model's context
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-3
    clip: float = 1.0
    seed: int = 0


DEFAULTS = TrainConfig()


# ----------------------------------------------------------------------------
# The corpus


def corpus_ids(corpus: str | Tensor | Sequence[int] | Sequence[str], tokenizer: tiktoken.Encoding | None,
               vocab_size: int) -> Tensor:  # fmt: skip
    """A corpus as one stream of token ids (N,) int64.

    A text needs `tokenizer`; an iterable of texts (documents) is joined with <|endoftext|> (50256)
    between them; token ids are taken as they are.
    """
    if isinstance(corpus, str):
        if tokenizer is None:
            raise LensError("a text corpus needs a tokenizer: pass tokenizer=minigpt.load_tokenizer(...)")
        ids = torch.tensor(tokenizer.encode_ordinary(corpus), dtype=torch.int64)
    elif isinstance(corpus, (Tensor, np.ndarray)):
        ids = torch.as_tensor(corpus)
    else:
        items = list(corpus)
        if items and all(isinstance(x, str) for x in items):
            if tokenizer is None:
                raise LensError("a corpus of texts needs a tokenizer: pass tokenizer=minigpt.load_tokenizer(...)")
            stream: list[int] = []
            for i, text in enumerate(items):
                stream += ([EOT_ID] if i else []) + tokenizer.encode_ordinary(text)
            ids = torch.tensor(stream, dtype=torch.int64)
        else:
            try:
                ids = torch.tensor(items, dtype=torch.int64)
            except (TypeError, ValueError, RuntimeError) as e:
                raise InputError(f"the corpus must be a text, token ids, or texts; got {type(corpus).__name__} ({e})") from None
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise InputError(f"token ids must be one sequence (N,) of integers, got shape {tuple(ids.shape)} {ids.dtype}")
    if ids.numel() == 0:
        raise InputError("the corpus is empty: give it at least one window of tokens")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        raise InputError(f"token id {hi if hi >= vocab_size else lo} is outside the vocabulary [0, {vocab_size}); "
                         "was the corpus encoded with this model's tokenizer?")  # fmt: skip
    return ids.long()


def split_holdout(ids: Tensor, val_fraction: float) -> tuple[Tensor, Tensor]:
    """(train, held out): the last `val_fraction` of the tokens is held out, the rest trains."""
    if not 0.0 <= val_fraction < 1.0:
        raise LensError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class WindowOrder:
    """Which training windows each step reads: all of them in a random order, then a new order.

    The generator's state, the current order and the cursor are saved with a run, so a resumed
    run reads exactly the windows the uninterrupted one would have.
    """

    def __init__(self, n_windows: int, seed: int) -> None:
        self.n = n_windows
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n_windows, generator=self.generator)
        self.cursor = 0
        self.epoch = 0

    def take(self, k: int) -> Tensor:
        """The next k window indices (k,), starting a new epoch whenever the order runs out."""
        out = []
        while k > 0:
            if self.cursor == self.n:
                self.order = torch.randperm(self.n, generator=self.generator)
                self.cursor, self.epoch = 0, self.epoch + 1
            got = self.order[self.cursor : self.cursor + k]
            out.append(got)
            self.cursor += len(got)
            k -= len(got)
        return torch.cat(out)

    def tensors(self) -> dict[str, Tensor]:
        return {"data.rng_state": self.generator.get_state(), "data.order": self.order.clone()}

    def restore(self, tensors: dict[str, Tensor], cursor: int, epoch: int) -> None:
        self.generator.set_state(tensors["data.rng_state"])
        self.order = tensors["data.order"].clone()
        self.cursor, self.epoch = cursor, epoch


# ----------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class FitReport:
    """What a fit did, kept beside the lens (a lens is a value: nothing is stuck on it)."""

    losses: list[list[float]]  # per step, per trained map: the loss in nats (KL for "tuned", CE for "probe")
    settings: dict[str, Any]  # the run's settings (TrainConfig as a dict): kind, steps, window, lr, ...


class Fitted(NamedTuple):
    """`TunedLens.fit`'s answer: `lens, report = TunedLens.fit(...)`."""

    lens: TunedLens
    report: FitReport


def fit(
    lens_class: type[TunedLens],
    model: GPT,
    corpus: str | Tensor | Sequence[int] | Sequence[str],
    *,
    tokenizer: tiktoken.Encoding | None = None,
    kind: Kind | None = None,
    steps: int | None = None,
    tokens_per_step: int | None = None,
    seed: int | None = None,
    window: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    clip: float | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    save_every: int | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    autocast: bool | None = None,
    base_model_name_or_path: str | None = None,
) -> Fitted:
    """Train a tuned lens (kind="tuned") or an input probe (kind="probe") for `model` on all of `corpus`.

    Call it as `TunedLens.fit(model, corpus, ...)`; `lens_class` is the class whose lens it trains.

    corpus: a text (with `tokenizer=`), token ids, or an iterable of texts. It is cut into
      consecutive windows of `window` tokens (default: the model's context); a shorter tail is left
      out. To hold some out, split first (`split_holdout`) and `evaluate` on the rest.
    steps, tokens_per_step: the schedule spans `steps`; each step reads ceil(tokens_per_step / window)
      windows in a random order fixed by `seed` (defaults 100 x 2048 on a CPU; see the module docstring).
    lr, momentum, weight_decay, clip: tuned-lens' recipe by default (0.1, 0.9 Nesterov, 1e-3, 1.0).
    batch_size: windows per forward pass (default: about 1024 tokens' worth). It changes memory and
      float rounding, not the maths.
    out: a folder to save into (rank 0 only): the lens (lens.safetensors + config.json) and, beside
      it, what resuming needs (train_state.safetensors + train_state.json). Saved every `save_every`
      steps and at the end.
    resume: a folder saved by an earlier run: continue it exactly (same weights, momentum, step and
      data order). Its settings hold; `steps` may grow. `out` defaults to it.
    stop_after: stop after this many steps in all, the schedule still spanning `steps` (a run in parts).
    progress: a progress bar on stderr (default: when stderr is a terminal).
    autocast: bf16 autocast for the forward passes and the maps, on any device, as tuned-lens does
      (default: on CUDA only; on a CPU without bf16 units it is slow).
    base_model_name_or_path: the model's name, recorded in config.json as tuned-lens does.

    Returns `Fitted(lens, report)`: the lens, and beside it (never on it) the run's per-step losses
    and settings. `lens, report = TunedLens.fit(...)`.

    Under torchrun (a process group is active), each step's windows are split across the ranks
    and the gradients summed once per step; 1 and N processes train the same lens.
    """
    config, saved = _resolve_config(model, resume, kind=kind, steps=steps, tokens_per_step=tokens_per_step,
                                    seed=seed, window=window, lr=lr, momentum=momentum,
                                    weight_decay=weight_decay, clip=clip)  # fmt: skip
    if stop_after is not None and not (isinstance(stop_after, int) and stop_after >= 1):
        raise LensError(f"stop_after must be a positive integer, got {stop_after!r}")
    if save_every is not None and not (isinstance(save_every, int) and save_every >= 1):
        raise LensError(f"save_every must be a positive integer, got {save_every!r}")
    W = config.window
    if batch_size is None:
        batch_size = max(1, MICRO_BATCH_TOKENS // W)
    elif not (isinstance(batch_size, int) and batch_size >= 1):
        raise LensError(f"batch_size must be a positive integer, got {batch_size!r}")
    out = Path(out) if out is not None else (Path(resume) if resume is not None else None)
    if out is not None and out.exists() and not out.is_dir():
        raise LensError(f"cannot save the lens into {out}: it is a file; give a folder")
    if out is not None and distributed.is_main():
        check_writable(out, LensError, "the lens")  # before the first step, not after the last

    ids = corpus_ids(corpus, tokenizer, model.config.vocab_size)
    n_windows = len(ids) // W
    if n_windows == 0:
        raise InputError(f"the corpus has {len(ids)} tokens, fewer than one window of {W}; give more text or a smaller window")
    windows = ids[: n_windows * W].view(n_windows, W)  # (N, W): the tail shorter than a window is left out
    fingerprint = {"n_tokens": n_windows * W, "sha256": hashlib.sha256(windows.numpy().tobytes()).hexdigest()}

    if saved is not None and base_model_name_or_path is None:  # a resumed run keeps the base model's name
        base_model_name_or_path = read_lens_config(Path(resume) / CONFIG_FILE).get("base_model_name_or_path")  # type: ignore[arg-type]
    lens = lens_class.from_model(model, config.kind, base_model_name_or_path=base_model_name_or_path)
    params = [p for p in lens.parameters()]
    for p in params:
        p.grad = torch.zeros_like(p)  # every rank sums real tensors, even one whose share of a step is empty
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)  # fmt: skip
    order = WindowOrder(n_windows, config.seed)
    start, losses = 0, []
    if saved is not None:
        start, losses = _restore(saved, Path(resume), model, lens, opt, order, fingerprint)  # type: ignore[arg-type]

    stop = min(stop_after or config.steps, config.steps)
    per_step = math.ceil(config.tokens_per_step / W)
    use_autocast = model.device.type == "cuda" if autocast is None else autocast
    if start and distributed.is_main():
        logger.info("resuming at step %d of %d", start, config.steps)
    bar = progress_bar(range(start, stop), show=progress, desc=f"fit {config.kind} lens", total=stop, initial=start)
    with save_on_interrupt() as interrupted:
        for step in bar:
            if _stop_requested(interrupted(), model.device):  # after a whole step: save it, then stop
                if out is not None:
                    _save_run(out, lens, opt, order, config, step, fingerprint, losses)
                saved = f"saved the lens and its training state in {out}; continue it with resume={str(out)!r}"
                raise Interrupted(f"interrupted after step {step} of {config.steps}: "
                                  + (saved if out is not None else "nothing saved (no out= folder)"),
                                  step=step, total=config.steps, out=out)  # fmt: skip
            _fit_step(lens, model, params, opt, order, windows, per_step, W, config, step, batch_size, use_autocast,
                      losses, bar)  # fmt: skip
            if out is not None and save_every is not None and (step + 1) % save_every == 0 and step + 1 < stop:
                _save_run(out, lens, opt, order, config, step + 1, fingerprint, losses)
    if out is not None:
        _save_run(out, lens, opt, order, config, max(stop, start), fingerprint, losses)
    return Fitted(lens, FitReport(losses=losses, settings=asdict(config)))


def _stop_requested(pressed: bool, device: torch.device) -> bool:
    """Whether to stop now: Ctrl-C here, or on any rank under torchrun (all ranks stop at the same step)."""
    if distributed.world_size() == 1:
        return pressed
    flag = torch.tensor([float(pressed)], device=device)
    return bool(distributed.all_reduce_sum(flag).item() > 0)


def _fit_step(lens: TunedLens, model: GPT, params: list, opt: torch.optim.Optimizer, order: WindowOrder,
              windows: Tensor, per_step: int, W: int, config: TrainConfig, step: int, batch_size: int,
              use_autocast: bool, losses: list, bar: Any) -> None:  # fmt: skip
    """One step of tuned-lens' recipe: this rank's share of the step's windows, summed gradients, clip, SGD."""
    step_windows = order.take(per_step)  # (per_step,): the same on every rank
    mine = step_windows[distributed.shard(per_step)]
    row_loss = _accumulate_step(lens, model, windows[mine], per_step * W, config.kind, batch_size, use_autocast)
    distributed.all_reduce_grads(params)
    distributed.all_reduce_sum(row_loss)
    torch.nn.utils.clip_grad_norm_(params, config.clip)  # once per step, after every row's backward
    for group in opt.param_groups:
        group["lr"] = config.lr * (1 - step / config.steps)  # linear decay to 0, no warm-up
    opt.step()
    opt.zero_grad(set_to_none=False)
    losses.append([round(float(x), 6) for x in row_loss])
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{float(row_loss.sum()):.4f}")


def _accumulate_step(lens: TunedLens, model: GPT, windows: Tensor, n_global: int, kind: str, batch_size: int,
                     use_autocast: bool) -> Tensor:  # fmt: skip
    """Run this rank's windows (n, W) through the model and every map, adding each row's gradient.

    Each row's loss is its sum over these tokens divided by the step's token count over all ranks,
    so that after the all-reduce the gradient is that of the global mean. Returns the rows' losses
    (R,) float64, this rank's share.
    """
    device = model.device
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
    rows = range(len(lens.translators))  # tuned: resid[0..L-1]; probe: resid[0..L]
    row_loss = torch.zeros(len(rows), dtype=torch.float64, device=device)
    with frozen(model):  # the model is not trained: no gradients into ln_f or W_E
        for b0 in range(0, len(windows), batch_size):
            ids = windows[b0 : b0 + batch_size].to(device)  # (B, W)
            V = model.config.vocab_size
            with torch.no_grad(), amp:
                out = model(ids)
                if kind == "tuned":  # p_final once per micro-batch, shared by every row
                    logp_final = torch.log_softmax(out.logits.float(), dim=-1).view(-1, V)  # (B W, V)
                    p_final = logp_final.exp()  # (B W, V)
                    entropy = -(p_final * logp_final).sum()  # H(p_final), summed over the tokens
                    del logp_final
            resid = out.resid  # (L + 1, B, W, C)
            del out
            for i in rows:
                with amp:
                    h = resid[i].to(lens.translators[i].weight.dtype)  # (B, W, C)
                    logits = model.unembed(lens.decode(model, h, i)).float().view(-1, V)  # (B W, C) @ (C, V) -> (B W, V)
                if kind == "tuned":
                    # KL(p_final ‖ p_lens) = CE(p_final, p_lens) - H(p_final), and H(p_final) does not depend
                    # on the lens: cross-entropy with p_final as soft targets has the KL's gradient, in one
                    # fused step. (Beware F.kl_div(input, target): it computes KL(target ‖ input).)
                    ce = F.cross_entropy(logits, p_final, reduction="sum")
                    (ce / n_global).backward()
                    row_loss[i] += (ce.detach().double() - entropy.double()) / n_global
                else:  # the probe: cross-entropy against the current input token
                    ce = F.cross_entropy(logits, ids.view(-1), reduction="sum")
                    (ce / n_global).backward()
                    row_loss[i] += ce.detach().double() / n_global
    return row_loss


# ----------------------------------------------------------------------------
# Saving and resuming a run


def _resolve_config(model: GPT, resume: str | os.PathLike | None, **given: Any) -> tuple[TrainConfig, dict | None]:
    """The run's settings: the defaults (or the resumed run's), overridden by what was passed."""
    given = {k: v for k, v in given.items() if v is not None}
    saved = None
    if resume is not None:
        saved = _read_state_json(Path(resume))
        base = TrainConfig(**{f.name: saved["config"][f.name] for f in fields(TrainConfig)})
        clashes = [f"{k}={v!r} (the run has {getattr(base, k)!r})" for k, v in given.items()
                   if k != "steps" and v != getattr(base, k)]  # fmt: skip
        if clashes:
            raise LensError(
                f"cannot resume {resume} with other settings: {', '.join(clashes)}; leave them out to keep the "
                "run's, or start a new run in another folder"
            )
        config = replace(base, **given)
        if config.steps < saved["step"]:
            raise LensError(f"{resume} has done {saved['step']} steps already; resume with steps >= {saved['step']}")
    else:
        config = replace(DEFAULTS, **given)
        if config.window is None:
            config = replace(config, window=model.config.n_positions)
    _check_config(config, model)
    return config, saved


def _check_config(c: TrainConfig, model: GPT) -> None:
    if c.kind not in KINDS:
        raise LensError(f"unknown lens kind {c.kind!r}; choose 'tuned' (KL to the output) or 'probe' (the input token)")
    for name in ("steps", "tokens_per_step", "window"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LensError(f"{name} must be a positive integer, got {value!r}")
    if c.window > model.config.n_positions:
        raise LensError(f"window {c.window} exceeds the model's context of {model.config.n_positions}; use a smaller window")
    if not (isinstance(c.lr, (int, float)) and c.lr > 0):
        raise LensError(f"lr must be a positive number, got {c.lr!r}")
    if not 0 <= c.momentum < 1 or c.weight_decay < 0 or c.clip <= 0:
        raise LensError(f"need 0 <= momentum < 1, weight_decay >= 0 and clip > 0; got {c.momentum}, {c.weight_decay}, {c.clip}")
    if not isinstance(c.seed, int):
        raise LensError(f"seed must be an integer, got {c.seed!r}")


def _save_run(out: Path, lens: TunedLens, opt: torch.optim.Optimizer, order: WindowOrder, config: TrainConfig,
              step: int, fingerprint: dict, losses: list) -> None:  # fmt: skip
    """The lens, and beside it everything a resume needs. Rank 0 writes; the others have the same numbers."""
    if not distributed.is_main():
        return
    lens.save(out)
    names = {p: k for k, p in lens.translators.named_parameters()}
    tensors = {f"momentum.{names[p]}": s["momentum_buffer"].detach().cpu().contiguous()
               for p, s in opt.state.items() if s.get("momentum_buffer") is not None}  # fmt: skip
    tensors.update(order.tensors())
    state = {
        "format": "minigpt-tune-state", "version": 1, "config": asdict(config), "step": step,
        "data": {"cursor": order.cursor, "epoch": order.epoch}, "corpus": fingerprint,
        "world_size": distributed.world_size(), "losses": losses,
    }  # fmt: skip
    try:
        atomic_write(out / STATE_FILE, lambda p: save_file(tensors, p))
        atomic_write(out / STATE_JSON, lambda p: Path(p).write_text(json.dumps(state) + "\n", encoding="utf-8"))
    except OSError as e:
        raise LensError(f"cannot write the training state into {out}: {e}") from e


def _read_state_json(folder: Path) -> dict:
    path = folder / STATE_JSON
    if not path.is_file():
        raise LensError(
            f"cannot resume from {folder}: it has no {STATE_JSON} (a run saved by TunedLens.fit(out=...) or "
            "`minigpt tune --out` has one); start without resume"
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        assert state.get("format") == "minigpt-tune-state" and isinstance(state["step"], int)
        _ = [state["config"][f.name] for f in fields(TrainConfig)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AssertionError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a training state minigpt wrote ({e!r}); start a new run") from e
    return state


def _restore(saved: dict, folder: Path, model: GPT, lens: TunedLens, opt: torch.optim.Optimizer,
             order: WindowOrder, fingerprint: dict) -> tuple[int, list]:  # fmt: skip
    """Put a saved run back: the maps, the momentum buffers and the data order. Returns (step, losses)."""
    if saved["corpus"] != fingerprint:
        raise LensError(
            f"cannot resume {folder}: the corpus differs from the run's ({fingerprint['n_tokens']} training tokens "
            f"now, {saved['corpus']['n_tokens']} then, or the same count with other tokens); use the same text, "
            "tokenizer, window and val_fraction"
        )
    loaded = type(lens).load(folder, model)
    if loaded.kind != lens.kind:
        raise LensError(f"{folder} holds a {loaded.kind} lens, but its training state says {lens.kind}")
    lens.load_state_dict(loaded.state_dict())
    try:
        tensors = load_file(str(folder / STATE_FILE))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {folder / STATE_FILE} ({e}); the run cannot be resumed exactly") from e
    names = dict(lens.translators.named_parameters())
    for key, value in tensors.items():
        if key.startswith("momentum."):
            p = names[key.removeprefix("momentum.")]
            opt.state[p]["momentum_buffer"] = value.to(p.device, p.dtype).clone()
    order.restore(tensors, saved["data"]["cursor"], saved["data"]["epoch"])
    return saved["step"], list(saved.get("losses", []))


# ----------------------------------------------------------------------------
# Held-out evaluation


@dataclass
class TunedEvaluation:
    """A lens beside the logit lens on held-out windows, per row (bottom to top): `evaluate_lens`'s numbers
    for the two decoders, and a table of the ones that matter for this kind of lens.

    `metrics[name][metric]` has one value per row, name being "logit" and the lens's ("tuned" or
    "probe"), as in `evaluate_lens(...).to_dict()["metrics"]`: `kl` = mean KL(p_final ‖ p_row), `ce`
    against the next token (each window's last position left out), `ce_input` against the input
    token, in bits per token (`*_se`: standard errors over positions); `top1_agreement`,
    `top1_accuracy` and `top1_input` are fractions. For a probe, the next-token numbers mean nothing:
    it is trained to name the input token.
    """

    kind: str
    labels: list[str]
    n_tokens: int
    window: int
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": self.labels, "n_tokens": self.n_tokens, "window": self.window,
                "metrics": self.metrics}  # fmt: skip

    def __repr__(self) -> str:
        return f"TunedEvaluation(kind={self.kind!r}, rows={len(self.labels)}, n_tokens={self.n_tokens})"

    def table(self) -> str:
        """The per-row comparison as text: KL in bits for a tuned lens, input top-1 and CE for a probe."""
        logit, mine = self.metrics["logit"], self.metrics[self.kind]
        head = f"held out: {self.n_tokens:,} tokens in windows of {self.window}"
        if self.kind == "tuned":
            lines = [head + "; mean KL(final ‖ row) in bits per token",
                     f"{'row':<10}{'logit lens':>12}{'tuned lens':>12}{'tuned/logit':>13}"]  # fmt: skip
            for r, label in enumerate(self.labels):
                a, b = logit["kl"][r], mine["kl"][r]
                ratio = f"{b / a:.3f}" if a > 1e-9 else "-"
                lines.append(f"{label:<10}{a:>12.4f}{b:>12.4f}{ratio:>13}")
            return "\n".join(lines)
        lines = [head + "; how well each row names its input token",
                 f"{'row':<10}{'top-1 input':>24}{'CE input (bits)':>26}",
                 f"{'':<10}{'logit lens':>12}{'probe':>12}{'logit lens':>13}{'probe':>13}"]  # fmt: skip
        for r, label in enumerate(self.labels):
            lines.append(f"{label:<10}{logit['top1_input'][r]:>12.4f}{mine['top1_input'][r]:>12.4f}"
                         f"{logit['ce_input'][r]:>13.4f}{mine['ce_input'][r]:>13.4f}")  # fmt: skip
        lines.append("(next-token KL and cross-entropy mean nothing for the probe: it is trained to name the "
                     "input token, not to predict the next one)")  # fmt: skip
        return "\n".join(lines)


def evaluate(
    lens: TunedLens, model: GPT, corpus: str | Tensor | Sequence[int] | Sequence[str], *,
    tokenizer: tiktoken.Encoding | None = None, window: int | None = None, batch_size: int | None = None,
    progress: bool | None = None,
) -> TunedEvaluation:  # fmt: skip
    """`lens` and the logit lens on `corpus`, per row, through `evaluate_lens` (windows of `window` tokens,
    default the model's context; under torchrun each rank takes its share of the windows)."""
    result = evaluate_lens(model, corpus, tokenizer=tokenizer, decoders=[LnF(), lens], window=window,
                           batch_size=batch_size, progress=progress).to_dict()  # fmt: skip
    metrics = {name: {m: v for m, v in ms.items() if m != "depth_hist"} for name, ms in result["metrics"].items()}
    return TunedEvaluation(lens.kind, result["labels"], result["n_tokens"], result["window"], metrics)
