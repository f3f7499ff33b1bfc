"""The corpus lens (`minigpt.evaluate_lens`): speed against its floor, bf16 against fp32, memory.

    python benchmarks/corpus.py speed  [--shape gpt2] [--tokens 8192] [--window 1024] [--repeats 3]
    python benchmarks/corpus.py bf16   [--shape gpt2] [--tokens 1024] [--repeats 3]
    python benchmarks/corpus.py memory [--shape gpt2] [--tokens 2048] [--window 1024] [--batch-size B]

speed: `evaluate_lens(model, ids, window=W)` (the default decoder, every row) against its floor:
  the blocks' forward pass over the same windows, batched as evaluate_lens batches them, plus R
  unembedding matmuls, timed two ways (one [T, C] @ [C, V] per row and window, or [1536, C] @ [C, V]
  over all rows, each into one reused buffer), the faster counting. The floor leaves out the
  model's own final unembedding: the lens's top row replaces it. Target: lens / floor <= 1.3.
bf16: `matmul="bf16"` against the exact default, for one sequence (`logit_lens`) and for the
  corpus, on gpt2-shaped random weights made "sharp" (logits spread like GPT-2's, around a shared
  offset of about -100): time, and the error (KL difference, top-1 flips, rank changes).
memory: peak RSS above the model and one forward pass (the blocks over one full batch), for N and
  10 N tokens, in fresh processes; N should be at least one batch (2048 tokens by default).

Every mode prints the CPU and its capabilities (avx2, avx512_bf16, amx) first: bf16 is fast only
with bf16 matrix units, and many times slower without.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import GB, host_line, interleaved, peak_rss_since_reset, run_child  # noqa: E402

from minigpt import GPT, PRESETS, evaluate_lens, logit_lens  # noqa: E402
from minigpt.lens import SlowMatmulWarning, lens_rows, row_streams  # noqa: E402
from minigpt.lens._stream import ROWS_PER_MATMUL  # noqa: E402
from minigpt.lens.corpus import POSITIONS_PER_BATCH  # noqa: E402
from minigpt.testing import random_state  # noqa: E402


def make_model(shape: str, sharp: bool = False) -> GPT:
    torch.manual_seed(0)
    config = PRESETS[shape]
    model = GPT(config).eval()
    if sharp:
        # Logits with GPT-2's spread (std ~3) around a shared offset of about -100, which
        # softmax ignores but float rounding does not: every wte row gets 10 u, and β gets -10 u.
        model.load_state_dict(random_state(config, seed=0, scale=0.1))
        u = torch.randn(config.n_embd, generator=torch.Generator().manual_seed(1))
        u = (u - u.mean()) / (u - u.mean()).norm()
        with torch.no_grad():
            model.wte.weight.add_(10.0 * u)
            model.ln_f.bias.add_(-10.0 * u)
    return model


def random_corpus(model: GPT, tokens: int) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(2))


# ----------------------------------------------------------------------------
# speed


def floor(model: GPT, ids: torch.Tensor, window: int, rows_per_mm: int | None = None) -> None:
    """The blocks over the same batches as evaluate_lens, plus the unembedding matmuls of every row:
    one [T, C] @ [C, V] per row and window, or (rows_per_mm) [m, C] @ [C, V] over all of a batch's rows."""
    rows = lens_rows(model.config.n_layer)
    W = model.wte.weight
    out = torch.empty(rows_per_mm or window, W.shape[0])
    batch = max(1, POSITIONS_PER_BATCH // window)
    n = len(ids) // window * window
    windows = ids[:n].view(-1, window)
    with torch.inference_mode():
        for b in range(0, len(windows), batch):
            streams = row_streams(model, windows[b : b + batch], rows)  # R x (B, T, C)
            if rows_per_mm is None:
                for s in range(streams[0].shape[0]):
                    for h in streams:
                        torch.mm(model.ln_f(h[s]), W.T, out=out)  # (T, C) @ (C, V)
            else:
                flat = torch.cat([model.ln_f(h).reshape(-1, h.shape[-1]) for h in streams])  # (R * N, C)
                for i in range(0, len(flat), rows_per_mm):
                    part = flat[i : i + rows_per_mm]
                    torch.mm(part, W.T, out=out[: len(part)])  # (m, C) @ (C, V)


def speed(args: argparse.Namespace) -> dict:
    model = make_model(args.shape)
    ids = random_corpus(model, args.tokens)
    fns = {
        "lens": lambda: evaluate_lens(model, ids, window=args.window),
        "floor_per_window": lambda: floor(model, ids, args.window),
        "floor_chunked": lambda: floor(model, ids, args.window, rows_per_mm=ROWS_PER_MATMUL),
    }
    t = interleaved(fns, args.repeats)
    best = min(t["floor_per_window"], t["floor_chunked"])  # the floor is the faster way to do the same matmuls
    return {"shape": args.shape, "tokens": args.tokens, "window": args.window, "rows": model.config.n_layer + 1,
            "lens_s": t["lens"], **{f"{k}_s": v for k, v in t.items() if k != "lens"}, "floor_s": best,
            "lens_tok_s": args.tokens / t["lens"], "floor_tok_s": args.tokens / best, "ratio": t["lens"] / best}  # fmt: skip


# ----------------------------------------------------------------------------
# bf16


def bf16(args: argparse.Namespace) -> dict:
    model = make_model(args.shape, sharp=True)
    T = min(args.tokens, model.config.n_positions)
    ids = random_corpus(model, args.tokens)
    warnings.simplefilter("ignore", SlowMatmulWarning)  # the host line says whether this CPU has bf16 units
    with torch.inference_mode():
        resid = model(ids[None, :T]).resid[:, 0]
    exact = logit_lens(model, ids[:T], resid=resid)
    fast = logit_lens(model, ids[:T], resid=resid, matmul="bf16")
    top_flip = (exact.top_ids[..., 0] != fast.top_ids[..., 0])[:-1]  # the top row is fp32 in both
    rank_changed = (exact.rank_final != fast.rank_final)[:-1]
    dkl = abs(exact.kl_final - fast.kl_final)[:-1]
    rel = dkl / torch.tensor(exact.kl_final[:-1]).clamp(min=1e-3).numpy()
    t = interleaved({
        "lens_exact": lambda: logit_lens(model, ids[:T], resid=resid),
        "lens_bf16": lambda: logit_lens(model, ids[:T], resid=resid, matmul="bf16"),
        "corpus_exact": lambda: evaluate_lens(model, ids, window=T),
        "corpus_bf16": lambda: evaluate_lens(model, ids, window=T, matmul="bf16"),
    }, args.repeats)  # fmt: skip
    corpus_exact = evaluate_lens(model, ids, window=T)
    corpus_bf16 = evaluate_lens(model, ids, window=T, matmul="bf16")
    dkl_corpus = abs(corpus_exact.metric("kl") - corpus_bf16.metric("kl"))
    return {
        "shape": args.shape, "T": T, "tokens": args.tokens, **{f"{k}_s": v for k, v in t.items()},
        "lens_speedup": t["lens_exact"] / t["lens_bf16"], "corpus_speedup": t["corpus_exact"] / t["corpus_bf16"],
        "kl_final_max_abs_diff": float(dkl.max()), "kl_final_mean_abs_diff": float(dkl.mean()),
        "kl_final_median_rel_diff": float(torch.tensor(rel).median()),
        "top1_flips": float(top_flip.mean()), "rank_final_changed": float(rank_changed.mean()),
        "rank_final_max_change": int(abs(exact.rank_final - fast.rank_final).max()),
        "top_row_kl_max": float(abs(fast.kl_final[-1]).max()), "corpus_kl_max_abs_diff_bits": float(dkl_corpus.max()),
    }  # fmt: skip


# ----------------------------------------------------------------------------
# memory


def memory_child(args: argparse.Namespace) -> dict:
    model = make_model(args.shape)
    ids = random_corpus(model, args.tokens)
    batch = args.batch_size or max(1, POSITIONS_PER_BATCH // args.window)
    one_batch = torch.randint(0, model.config.vocab_size, (batch, args.window), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        row_streams(model, one_batch, lens_rows(model.config.n_layer))
    base = peak_rss_since_reset()  # the model and one forward pass (the blocks over one full batch)
    evaluate_lens(model, ids, window=args.window, batch_size=batch)
    peak = peak_rss_since_reset()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"tokens": args.tokens, "base_gb": base / GB, "peak_gb": peak / GB, "extra_gb": (peak - base) / GB,
            "weights_gb": weights / GB}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "bf16", "memory"])
    parser.add_argument("--shape", default="gpt2", choices=list(PRESETS))
    parser.add_argument("--tokens", type=int, default=None, help="corpus tokens (default: 8192 speed, 1024 bf16, 2048 memory)")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: evaluate_lens's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.tokens = args.tokens or {"speed": 8192, "bf16": 1024, "memory": 2048}[args.mode]
    if args.child:
        print(json.dumps(memory_child(args)))
        return
    print(host_line())
    if args.mode == "speed":
        r = speed(args)
        print(json.dumps(r), file=sys.stderr)
        print("| shape | rows | tokens | window | lens (tok/s) | floor (tok/s) | lens / floor (time) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['shape']} | {r['rows']} | {r['tokens']} | {r['window']} | {r['lens_tok_s']:.0f} "
              f"| {r['floor_tok_s']:.0f} | {r['ratio']:.2f}x |")  # fmt: skip
    elif args.mode == "bf16":
        r = bf16(args)
        print(json.dumps(r), file=sys.stderr)
        print("| shape | T | logit_lens fp32 / bf16 (s) | speed-up | evaluate_lens fp32 / bf16 (s) | speed-up "
              "| max / mean abs ΔKL (nats) | top-1 flips | ranks changed (max change) | corpus max ΔKL (bits) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['shape']} | {r['T']} | {r['lens_exact_s']:.2f} / {r['lens_bf16_s']:.2f} | {r['lens_speedup']:.2f}x "
              f"| {r['corpus_exact_s']:.2f} / {r['corpus_bf16_s']:.2f} | {r['corpus_speedup']:.2f}x "
              f"| {r['kl_final_max_abs_diff']:.2g} / {r['kl_final_mean_abs_diff']:.2g} | {r['top1_flips']:.2%} "
              f"| {r['rank_final_changed']:.2%} ({r['rank_final_max_change']}) | {r['corpus_kl_max_abs_diff_bits']:.2g} |")
    else:
        me = [str(Path(__file__).resolve()), "memory", "--child", "--shape", args.shape, "--window", str(args.window)]
        if args.batch_size:
            me += ["--batch-size", str(args.batch_size)]
        small = run_child(me + ["--tokens", str(args.tokens)])
        large = run_child(me + ["--tokens", str(10 * args.tokens)])
        print(json.dumps([small, large]), file=sys.stderr)
        print("| shape | tokens | peak above model + one forward pass (GB) | total peak (GB) |")
        print("|---|---:|---:|---:|")
        for r in (small, large):
            print(f"| {args.shape} | {r['tokens']} | {r['extra_gb']:.3f} | {r['peak_gb']:.2f} |")
        print(f"growth for 10x the corpus: {(large['extra_gb'] - small['extra_gb']) * 1000:.1f} MB (flat: < 50 MB)")


if __name__ == "__main__":
    main()
