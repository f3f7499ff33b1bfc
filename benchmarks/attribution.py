"""Direct logit attribution against a forward pass, gpt2's shape, random weights, one run.

    python benchmarks/attribution.py [--length 1024] [--repeats 3]

speed:  attribute(model, ids, target=<one id>, by="head") at every position, against model(ids)
        (interleaved, medians); the issue asks for at most 1.5x.
memory: peak RSS of attribute(..., by="neuron") (default target: the final top-1 at every position)
        against that of model(ids), each in a fresh process, measured from after the model is built;
        the issue asks for at most +0.5 GB.
The head line names the CPU and its avx2 / avx512_bf16 flags, which decide the matmul speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import GB, current_rss_bytes, host_line, interleaved, peak_rss_since_reset, reset_peak_rss, run_child  # noqa: E402

import minigpt  # noqa: E402
from minigpt import GPT, GPTConfig  # noqa: E402
from minigpt.testing import random_state  # noqa: E402


def build() -> GPT:
    config = GPTConfig()  # gpt2 (small): 12 layers, 12 heads, 768 wide, M = 3072
    model = GPT(config)
    model.load_state_dict(random_state(config, seed=0), strict=False)
    return model.eval()


def ids_of(T: int) -> torch.Tensor:
    return torch.randint(0, 50257, (T,), generator=torch.Generator().manual_seed(T))


def child(kind: str, T: int) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    model, ids = build(), ids_of(T)
    reset_peak_rss()
    base = current_rss_bytes()
    with torch.inference_mode():
        if kind == "forward":
            model(ids[None])
        else:
            att = minigpt.attribute(model, ids, by="neuron")
            assert att.values.shape[1] == T
    print(json.dumps({"peak": peak_rss_since_reset() - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["forward", "neuron"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.length)

    T = args.length
    print(host_line())
    print(f"gpt2 shape (random weights), T = {T}, fp32, median of {args.repeats} interleaved runs")
    model, ids = build(), ids_of(T)
    with torch.inference_mode():
        t = interleaved({
            "forward": lambda: model(ids[None]),
            "head": lambda: minigpt.attribute(model, ids, target=464, by="head"),
            "head_default": lambda: minigpt.attribute(model, ids, by="head"),
        }, args.repeats)  # fmt: skip
    print("| what | seconds | × forward |\n|---|---:|---:|")
    for name, words in (("forward", "model(ids): logits + stream"), ("head", 'attribute(by="head"), one target, all positions'),
                        ("head_default", 'attribute(by="head"), target = final top-1 (needs the logits)')):  # fmt: skip
        print(f"| {words} | {t[name]:.3f} | {t[name] / t['forward']:.2f}x |")
    me = [str(Path(__file__).resolve()), "--length", str(T), "--child"]
    fwd, neu = run_child([*me, "forward"]), run_child([*me, "neuron"])
    print(f"peak RSS above the built model: forward {fwd['peak'] / GB:.3f} GB, "
          f'attribute(by="neuron") {neu["peak"] / GB:.3f} GB: {(neu["peak"] - fwd["peak"]) / GB:+.3f} GB over the forward pass')  # fmt: skip


if __name__ == "__main__":
    main()
