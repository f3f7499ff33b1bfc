"""The model card (README.md) that `minigpt train` writes beside a checkpoint.

What the model is, the data and its licence, every setting, the time and the machine, the held-out
loss against the unigram baseline, what the logit lens shows, greedy samples, and the exact command
that makes the run again.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .model import GPT
from .settings import command_line
from .lens._matmul import cpu_capabilities
from .tokenizer import bundled_gpt2

if TYPE_CHECKING:  # types only: train.py calls in here, so this file never imports it
    from .train import Corpus, TrainResult, TrainSettings


def machine() -> str:
    cpu = cpu_capabilities()["model"]  # the one /proc/cpuinfo reader
    return (f"{cpu}, {os.cpu_count()} CPU cores visible, {torch.get_num_threads()} torch threads; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}")  # fmt: skip


SAMPLE_PROMPT = 8  # tokens of held-out text each sample starts from
SAMPLE_TOKENS = 40


def cell(text: str) -> str:
    """Text for one markdown table cell: line breaks shown as ↵, pipes escaped."""
    return text.replace("|", "\\|").replace("\n", "↵ ")


def reproduce_command(settings: TrainSettings, device: torch.device, text_path: str, out_dir: str,
                      data_licence: str | None = None) -> str:
    """The `minigpt train` command line that makes this run again: every setting the run recorded,
    spelled with the flag its field carries (`minigpt.settings`)."""
    args = ["minigpt", "train", text_path, "--out", out_dir, *command_line(settings), "--device", device.type]
    if data_licence:
        args += ["--data-licence", data_licence]
    return shlex.join(str(a) for a in args)


def model_card(result: TrainResult, corpus: Corpus, sizes: tuple[int, int], device: torch.device,
               data_licence: str | None, model: GPT, prompts: Tensor, recipe: dict[str, Any]) -> str:  # fmt: skip
    """README.md for the checkpoint: what it is, how it was made, how good it is, and how to remake it.

    prompts: held-out windows (n, context) whose starts the samples continue. recipe: what the run
    used beyond its settings (betas, weight_decay, grad_clip, warmup_fraction, min_lr_fraction, lens_windows).
    """
    from .generate import generate

    s, tok = result.settings, bundled_gpt2()
    n_params = sum(p.numel() for p in model.parameters())
    n_train, n_val = sizes
    nats, bits = result.saved_val_loss, result.saved_val_loss / math.log(2)
    rounded = f", with the {s.save_dtype} weights of this folder" if s.save_dtype != "float32" else ""
    as_trained = (f" As trained (float32), before rounding to {s.save_dtype}: {result.val_loss:.4f} nats."
                  if s.save_dtype != "float32" else "")  # fmt: skip
    history = "\n".join(f"| {e.step} | {e.train_loss:.3f} | {e.val_loss:.3f} |" for e in result.history)
    lens = result.lens
    lens_rows = "\n".join(
        f"| `{label}` | {kl:.3f} | {kl / math.log(2):.3f} | {agree:.1%} |"
        for label, kl, agree in zip(lens["labels"], lens["kl_final"], lens["top1_agreement"])
    )
    kl = lens["kl_final"]
    drops = [a - b for a, b in zip(kl, kl[1:])]
    jump = (f"KL(final ‖ row) falls from {kl[0]:.2f} nats at `embed` to {kl[1]:.2f} at `{lens['labels'][1]}`, a drop of "
            f"{drops[0]:.2f} nats" + (f", {drops[0] / max(drops[1:]):.0f}x the largest drop after it" if len(drops) > 1
                                      and max(drops[1:]) > 0 else ""))  # fmt: skip
    agree = lens["top1_agreement"]
    jump += (f"; the row's top-1 is the final top-1 at {agree[0]:.0%} of the positions at `embed` and "
             f"{agree[1]:.0%} at `{lens['labels'][1]}`")  # fmt: skip
    samples = []
    model.eval()
    n_new = min(SAMPLE_TOKENS, s.context - SAMPLE_PROMPT)
    rng = torch.Generator(device=model.device).manual_seed(s.seed)
    for window in prompts:  # from the held-out text
        prompt = window[:SAMPLE_PROMPT].to(model.device)
        greedy = generate(model, prompt, n_new, temperature=0)[SAMPLE_PROMPT:]
        sampled = generate(model, prompt, n_new, temperature=0.8, top_k=40, generator=rng)[SAMPLE_PROMPT:]
        samples.append(f"Prompt: `{tok.decode(prompt.tolist())!r}`\n\n| greedy | sampled (temperature 0.8, top-k 40) |\n"
                       f"|---|---|\n| {cell(tok.decode(greedy.tolist()))} | {cell(tok.decode(sampled.tolist()))} |\n")  # fmt: skip
    stored = s.save_dtype if s.save_dtype == "float32" else f"{s.save_dtype}; minigpt upcasts it to float32 on load"
    precision = "bf16 autocast (weights and AdamW in float32)" if device.type == "cuda" else "float32"
    licence = data_licence or "not recorded: add the text's licence here before sharing this model"
    n_bytes = len(corpus.text.encode("utf-8"))
    source = f"`{corpus.path}` ({n_bytes:,} bytes)" if corpus.path else f"A text of {n_bytes:,} bytes"
    return f"""# {result.out_dir.name}: a small GPT-2 trained with `minigpt train`

A {s.n_layer}-block GPT-2 ({n_params / 1e6:.2f} M parameters, n_embd {s.n_embd}, {s.n_head} heads,
context {s.context}) with GPT-2's full 50,257-token BPE vocabulary, trained from scratch. It is a
teaching model: small enough to train on a laptop and to look inside with the logit lens.

```python
model = minigpt.GPT.from_pretrained("{result.out_dir}")        # or transformers.GPT2LMHeadModel
```
```
minigpt lens "Now is the winter of our discontent" --model {result.out_dir} -o lens.png
```

## Files
`config.json`, `model.safetensors` ({stored}; no mask
buffers), `vocab.json` + `merges.txt` (GPT-2's tokenizer) and this card: the official GPT-2 layout.

## Data
{source}, sha256 `{corpus.sha256}`. GPT-2 BPE tokens (`encode_ordinary`): {n_train:,} for training,
and the last {n_val:,} ({s.val_fraction:g}) held out for validation.
Licence of the data: {licence}.

## Training
| setting | value |
|---|---|
| steps × batch × context | {s.steps} × {s.batch_size} windows × {s.context} tokens ({s.steps * s.batch_size * s.context:,} tokens, {s.steps * s.batch_size * s.context / n_train:.2g} epochs) |
| optimizer | AdamW, betas {tuple(recipe["betas"])}, weight decay {recipe["weight_decay"]} on matrices and embeddings (none on biases, LayerNorm), grad-norm clip {recipe["grad_clip"]} |
| learning rate | peak {s.lr:g}; linear warm-up over the first {s.warmup_steps} steps ({recipe["warmup_fraction"]:.0%}), then cosine decay to {s.lr * recipe["min_lr_fraction"]:g} |
| seed | {s.seed} (initialisation and the random windows) |
| device, precision | {device.type}, {precision} |
| time | {result.elapsed_s / 60:.1f} min wall clock ({result.cpu_s / 60:.1f} CPU-minutes, all threads), evaluation and saving included |
| machine | {machine()} |

## Results
Validation loss on the held-out split{rounded}: **{nats:.3f} nats per token** ({bits:.3f} bits), against
**{result.unigram_loss:.3f}** for the unigram baseline (the training split's token frequencies,
add-one smoothed over 50,257 ids) on the same targets.{as_trained}

| step | train loss (mean since the previous row) | val loss |
|---:|---:|---:|
{history}

## What the logit lens shows
Over {lens['positions']} held-out positions (the last {recipe["lens_windows"]} windows of the validation split):
the mean KL(final ‖ row) and how often the row's top-1 token is the model's final top-1.

| row | KL nats | KL bits | top-1 = final top-1 |
|---|---:|---:|---:|
{lens_rows}

The jump after `embed`: {jump}.

## Samples
Continuations of {SAMPLE_TOKENS} tokens (↵ is a line break), prompts from the held-out text; the sampling is seeded.

{chr(10).join(samples)}

## Licence
The weights: MIT, like minigpt. The data: see above.

## Reproduce
```
{reproduce_command(s, device, corpus.path or "TEXT_FILE", str(result.out_dir), data_licence)}
```
Training is seeded: the same command with the same torch version and thread count on the same
kind of machine gives the same weights. Elsewhere floating-point sums round differently, so expect
close, not identical, losses.
"""
