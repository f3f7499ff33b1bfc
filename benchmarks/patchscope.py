"""The patchscope's cost against the naive way, on the shipped model and on the gpt2 shape (random weights).

Ours: the target prompt's keys and values once, then every (row, position) is one position through the
blocks above its row, batched over positions. Naive (the paper's notebook): for each (row, position), the
whole target prompt through the whole model, with the vector written over the stream at the last position.
A second naive variant batches the positions but still runs the whole prompt. Prints the median seconds of
each and the ratios, beside the CPU.

    python benchmarks/patchscope.py [--tokens 64] [--gpt2-tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import host_line, interleaved  # noqa: E402

import minigpt  # noqa: E402
from minigpt import GPT, GPTConfig  # noqa: E402
from minigpt.lens import Patchscope, Row  # noqa: E402
from minigpt.testing import random_state  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def naive_logits(model: GPT, target: torch.Tensor, h: torch.Tensor, resid_index: int, batched: bool) -> torch.Tensor:
    """(N, V): the whole target prompt, the vector written over its last position at resid[resid_index]."""

    def run(vectors: torch.Tensor) -> torch.Tensor:  # (n, C) -> (n, V)
        x = model.embed(target.expand(len(vectors), -1)).clone()  # (n, T0, C)
        if resid_index == 0:
            x[:, -1] = vectors
        for block, parts in enumerate(model.walk(x)):
            x = parts.out
            if block + 1 == resid_index:
                x[:, -1] = vectors  # in place: the walk's next block reads this very tensor
        return model.unembed(model.ln_f(x[:, -1]))

    return run(h) if batched else torch.cat([run(v[None]) for v in h])


def ours_logits(model: GPT, scope: Patchscope, h: torch.Tensor, resid_index: int) -> torch.Tensor:
    return model.unembed(scope.decode(model, h, Row.of_resid(resid_index, model.config.n_layer)))


def bench(name: str, model: GPT, tok, source_ids: torch.Tensor, repeats: int) -> None:
    scope = Patchscope(tokenizer=tok)
    target = torch.tensor([scope.ids])
    L = model.config.n_layer
    with torch.inference_mode():
        resid = model(source_ids[None]).resid[:, 0]  # (L + 1, T, C)
        worst = max((ours_logits(model, scope, resid[i], i) - naive_logits(model, target, resid[i], i, True)).abs().max().item()
                    for i in range(L + 1))  # fmt: skip
        times = interleaved({
            "ours": lambda: [ours_logits(model, scope, resid[i], i) for i in range(L + 1)],
            "naive, batched": lambda: [naive_logits(model, target, resid[i], i, True) for i in range(L + 1)],
            "naive, one pass per (row, position)": lambda: [naive_logits(model, target, resid[i], i, False) for i in range(L + 1)],
        }, repeats)  # fmt: skip
    T, T0 = len(source_ids), len(scope.ids)
    passes = T * sum(L - i for i in range(L + 1))  # single-position block passes: rows x positions x blocks above
    print(f"{name}: {L + 1} rows x {T} positions, target prompt of {T0} tokens; max |ours - naive| = {worst:.2e}")
    print(f"  ours: {T * (L + 1)} vectors = {passes} one-position block passes (+ the prefix once); "
          f"naive: {T * (L + 1)} x {T0} positions x {L} blocks")  # fmt: skip
    for label, s in times.items():
        print(f"  {label:38s} {s * 1e3:9.1f} ms   {s / times['ours']:6.1f}x ours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--gpt2-tokens", type=int, default=16, help="the one-pass-per-vector naive way is slow on gpt2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(host_line())
    tok = minigpt.load_tokenizer("shakespeare")
    ids = torch.tensor(tok.encode_ordinary(CORPUS.read_text()[:4000])[: args.tokens])
    bench("shakespeare (shipped, 4 blocks, C=128)", GPT.from_pretrained("shakespeare"), tok, ids, args.repeats)
    gpt2 = GPT(GPTConfig())
    gpt2.load_state_dict(random_state(GPTConfig(), seed=0))
    bench("gpt2 shape (random weights, 12 blocks, C=768)", gpt2.eval(), tok, ids[: args.gpt2_tokens], 1)


if __name__ == "__main__":
    main()
