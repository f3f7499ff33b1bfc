"""minigpt's forward pass against transformers' GPT2LMHeadModel, same random weights, same threads.

    python benchmarks/forward.py [--repeats 5] [--lengths 128 1024]

Both models get the gpt2-small shape and identical weights; the two are run in turn
(interleaved) and the median of each is reported, with minigpt's time as a ratio of the
reference's. Needs the test extras (transformers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved  # noqa: E402

from minigpt import GPT, GPTConfig  # noqa: E402
from minigpt.testing import random_state  # noqa: E402


def build(config: GPTConfig):
    from transformers import GPT2Config, GPT2LMHeadModel

    state = random_state(config, seed=0)
    ours = GPT(config)
    ours.load_state_dict(state)
    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, attn_implementation="eager",
    )  # fmt: skip
    ref = GPT2LMHeadModel(hf_config)
    missing, unexpected = ref.transformer.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or "masked_bias" in k for k in missing), (missing, unexpected)
    return ours.eval(), ref.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    args = parser.parse_args()

    config = GPTConfig()  # gpt2 (small)
    ours, ref = build(config)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, gpt2-small shape, fp32, "
          f"median of {args.repeats} interleaved runs")  # fmt: skip
    print("| T | minigpt (s) | transformers eager (s) | ratio |\n|---:|---:|---:|---:|")
    for T in args.lengths:
        ids = torch.randint(0, config.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
        with torch.inference_mode():
            diff = (ours(ids).logits - ref(ids).logits).abs().max().item()
            t = interleaved({"minigpt": lambda: ours(ids), "transformers": lambda: ref(ids)}, args.repeats)
        print(f"| {T} | {t['minigpt']:.3f} | {t['transformers']:.3f} | {t['minigpt'] / t['transformers']:.2f}x |"
              f"  (max |Δ logits| {diff:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
