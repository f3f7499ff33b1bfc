"""Training a tuned lens: throughput (tokens/s) and peak memory, against the floor of its matmuls.

    python benchmarks/tuned.py [--shape gpt2] [--layers N] [--window 256] [--tokens-per-step 1024] [--steps 3]

A random model of the given shape (random weights change nothing about the cost), random token ids.
After one warm-up step, `TunedLens.fit` runs `--steps` steps of `--tokens-per-step` tokens, timed.
The floor is the same step's matmuls alone, timed on the same shapes: the model's forward pass
(which is its matmuls, plus p_final's unembedding) and, per row, the translator (n, C) @ (C, C), the
unembedding (n, C) @ (C, V), its backward to the input (n, V) @ (V, C), and the translator's weight
gradient (C, n) @ (n, C). Everything else (log-softmax, the loss, clipping, SGD) is the overhead.
Memory: the peak RSS during fit, above the RSS with the model loaded (Linux only).

On this project's 2-core CI machines gpt2-small costs ~2.1 GFLOP per token: run a short smoke test,
e.g. `--layers 2 --window 128 --tokens-per-step 256 --steps 1`, and the full shape on a bigger machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import GB, current_rss_bytes, interleaved, peak_rss_since_reset, reset_peak_rss, timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minigpt import GPT, PRESETS, TunedLens  # noqa: E402


def cpu_description() -> str:
    """The CPU model and the vector extensions that decide fp32/bf16 GEMM speed."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return f"{name}; {os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}; " + \
        " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)  # fmt: skip


def floor_step(model: GPT, n_tokens: int, window: int, rows: int) -> float:
    """Seconds of one step's matmuls alone (see the module docstring)."""
    C, V = model.config.n_embd, model.config.vocab_size
    ids = torch.randint(0, V, (max(1, n_tokens // window), window))
    h, W, T = torch.randn(n_tokens, C), model.wte.weight.detach(), torch.randn(C, C)
    g = torch.randn(n_tokens, V)

    def forward() -> None:
        with torch.no_grad():
            model(ids)

    def lens_matmuls() -> None:
        for _ in range(rows):
            h @ T.T  # translator
            h @ W.T  # unembedding
            g @ W  # its backward, to the normalised input
            h.T @ h  # the translator's weight gradient (C, n) @ (n, C)

    times = interleaved({"forward": forward, "lens": lens_matmuls}, repeats=2)
    return times["forward"] + times["lens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2", choices=list(PRESETS))
    parser.add_argument("--layers", type=int, help="override n_layer (a short smoke run)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--tokens-per-step", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--kind", default="tuned", choices=("tuned", "probe"))
    args = parser.parse_args()

    config = PRESETS[args.shape]
    if args.layers:
        config = replace(config, n_layer=args.layers)
    torch.manual_seed(0)
    model = GPT(config).eval()
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    rows = L if args.kind == "tuned" else L + 1
    n = args.tokens_per_step
    ids = torch.randint(0, V, (max(4 * n, 2 * args.window),))
    print(f"CPU: {cpu_description()}")
    print(f"shape {args.shape} (L={L}, C={C}, V={V}), {rows} maps, window {args.window}, {n} tokens/step, {args.steps} steps")

    TunedLens.fit(model, ids, kind=args.kind, steps=1, tokens_per_step=n, window=args.window)  # warm-up
    base = current_rss_bytes()
    measured = reset_peak_rss()
    seconds = timed(lambda: TunedLens.fit(model, ids, kind=args.kind, steps=args.steps, tokens_per_step=n,
                                          window=args.window))  # fmt: skip
    extra = peak_rss_since_reset() - base if measured else float("nan")
    tokens = args.steps * n
    floor = args.steps * floor_step(model, n, args.window, rows)
    flops_per_token = 2 * 12 * L * C * C + 2 * C * V + rows * (4 * C * V + 4 * C * C)  # model, logits, lens
    result = {
        "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 2), "floor_s": round(floor, 2),
        "over_floor": round(seconds / floor, 2), "gflop_per_token": round(flops_per_token / 1e9, 3),
        "gflop_per_s": round(flops_per_token * tokens / seconds / 1e9, 1), "extra_peak_gb": round(extra / GB, 3),
    }  # fmt: skip
    print(f"fit: {result['tokens_per_s']} tokens/s ({seconds:.2f} s for {tokens} tokens); the matmuls alone take "
          f"{floor:.2f} s: {result['over_floor']}x the floor; {result['gflop_per_token']} GFLOP/token, "
          f"{result['gflop_per_s']} GFLOP/s; peak RSS {result['extra_peak_gb']} GB above the loaded model")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
