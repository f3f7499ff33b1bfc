"""J-lens fit time per prompt, on the shipped model and on the gpt2 shape (random weights), beside the CPU;
and the lens during generation against plain `generate`, per token.

The fit's cost per prompt is one forward pass of dim_batch copies plus C backward passes' worth of work
(C / dim_batch passes over dim_batch copies), so it grows with C x (blocks) x seq_len.

    python benchmarks/jacobian.py [--prompts 3] [--gpt2-prompts 0] [--seq-len 128] [--tokens 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import host_line, interleaved  # noqa: E402

import minigpt  # noqa: E402
from minigpt import GPT, GPTConfig, JacobianLens  # noqa: E402
from minigpt.lens import Patchscope  # noqa: E402
from minigpt.testing import random_state  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def fit_time(name: str, model: GPT, text: str, tok, n_prompts: int, seq_len: int, dim_batch: int) -> JacobianLens:
    start = time.perf_counter()
    lens = JacobianLens.fit(model, text, tokenizer=tok, n_prompts=n_prompts, seq_len=seq_len, dim_batch=dim_batch, progress=False)
    s = time.perf_counter() - start
    print(f"{name}: J-lens fit, {lens.n_prompts} prompts of {seq_len} tokens, dim_batch {dim_batch}: "
          f"{s:.1f} s, {s / lens.n_prompts:.2f} s per prompt")  # fmt: skip
    return lens


def fit_estimate(name: str, model: GPT, seq_len: int, dim_batch: int) -> None:
    """Per prompt, from its parts: the replicated forward pass, then one timed backward pass (of C / dim_batch)."""
    C, L = model.config.n_embd, model.config.n_layer
    ids = torch.randint(0, 50257, (1, seq_len), generator=torch.Generator().manual_seed(0))
    for p in model.parameters():
        p.requires_grad_(False)
    start = time.perf_counter()
    x = model.embed(ids).expand(dim_batch, -1, -1).clone().requires_grad_(True)
    sources, h = [x], x
    for parts in model.walk(x, start=1):
        h = parts.out
        sources.append(h)
    forward = time.perf_counter() - start
    cotangent = torch.zeros_like(h)
    cotangent[torch.arange(dim_batch), 16:-1, torch.arange(dim_batch)] = 1.0
    backward = []
    for _ in range(2):
        start = time.perf_counter()
        torch.autograd.grad(h, sources[:-1], cotangent, retain_graph=True)
        backward.append(time.perf_counter() - start)
    passes = -(-C // dim_batch)
    total = forward + passes * min(backward)
    print(f"{name}: J-lens fit per prompt of {seq_len} tokens, dim_batch {dim_batch}, from its parts: forward {forward:.2f} s "
          f"+ {passes} backward passes x {min(backward):.2f} s = {total:.0f} s per prompt (estimate)")  # fmt: skip


def generation_overhead(model: GPT, tok, jlens: JacobianLens, n: int, repeats: int) -> None:
    prompt = "ROMEO:\n"
    plain = lambda: minigpt.generate(model, prompt, n, tokenizer=tok, generator=torch.Generator().manual_seed(0))  # noqa: E731
    runs = {
        "generate": plain,
        "generate_lens, logit": lambda: minigpt.generate_lens(model, prompt, n, tokenizer=tok, generator=torch.Generator().manual_seed(0)),
        "generate_lens, 4 lenses": lambda: minigpt.generate_lens(
            model, prompt, n, tokenizer=tok, generator=torch.Generator().manual_seed(0),
            decoders=["logit", minigpt.TunedLens.from_model(model), jlens, Patchscope(tokenizer=tok)]),
    }  # fmt: skip
    times = interleaved(runs, repeats)
    base = times["generate"] / n
    print(f"generation, {n} tokens on the shipped model (median of {repeats}):")
    for label, s in times.items():
        per = s / n
        print(f"  {label:26s} {per * 1e3:7.2f} ms per token   overhead {(per - base) * 1e3:+7.2f} ms per token ({per / base:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--gpt2-prompts", type=int, default=0,
                        help="prompts for a full gpt2-shape fit; 0 (default) times its parts instead (minutes per prompt on 2 cores)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dim-batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(host_line(), flush=True)
    tok = minigpt.load_tokenizer("shakespeare")
    text = CORPUS.read_text()[:200_000]
    model = GPT.from_pretrained("shakespeare")
    jlens = fit_time("shakespeare (shipped, 4 blocks, C=128)", model, text, tok, args.prompts, args.seq_len, args.dim_batch)
    generation_overhead(model, tok, jlens, args.tokens, args.repeats)
    gpt2 = GPT(GPTConfig())
    gpt2.load_state_dict(random_state(GPTConfig(), seed=0))
    name = "gpt2 shape (random weights, 12 blocks, C=768)"
    if args.gpt2_prompts:
        fit_time(name, gpt2.eval(), text, tok, args.gpt2_prompts, args.seq_len, args.dim_batch)
    else:
        fit_estimate(name, gpt2.eval(), args.seq_len, args.dim_batch)


if __name__ == "__main__":
    main()
