"""The logit lens's time and memory against the bare unembedding matmuls and the naive approach.

    python benchmarks/lens.py [--shapes gpt2 gpt2-xl] [--tokens 1024] [--repeats 3]

For each shape (random weights), in fresh processes so that peak memory is each one's own:
  - lens: `minigpt.logit_lens` with every statistic over all rows, full vocabulary, given the
    residual stream (`resid=`; the forward pass is timed by benchmarks/forward.py);
  - lens with `matmul="onednn"`: its matmuls through oneDNN (mkldnn tensors and F.linear);
  - lens with `matmul="bf16"` (with --bf16): bf16 matmuls for the rows, fp32 statistics;
  - floor: the same unembedding matmuls alone, R x ([T, C] @ [C, V]), with torch's default
    `mm` and with oneDNN (`torch._C._nn.mkldnn_linear`, the kernel behind `torch.utils.mkldnn`);
  - naive: materialise every row's logits (R, T, V), then log_softmax and the same statistics.
    Where that cannot fit in memory (gpt2-xl), its size is computed instead of run.
Memory: the lens's extra memory is its peak RSS minus the peak after loading and the forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import GB, host_line, interleaved, peak_rss_since_reset, reset_peak_rss, run_child, timed  # noqa: E402

from minigpt import GPT, PRESETS, logit_lens  # noqa: E402


def make_model(shape: str) -> GPT:
    torch.manual_seed(0)
    return GPT(PRESETS[shape]).eval()


def floor_fns(model: GPT, normed: torch.Tensor) -> dict:
    """R x ([T, C] @ [C, V]) with torch's default mm, and with oneDNN."""
    W = model.wte.weight
    W_onednn = W.detach().to_mkldnn()
    out = torch.empty(normed.shape[1], W.shape[0])

    def mm() -> None:
        for h in normed:
            torch.mm(h, W.T, out=out)

    def onednn() -> None:
        for h in normed:
            torch._C._nn.mkldnn_linear(h.to_mkldnn(), W_onednn, None).to_dense()

    return {"floor_mm": mm, "floor_onednn": onednn}


def naive_lens(model: GPT, resid: torch.Tensor, ids: torch.Tensor, k: int = 5) -> None:
    """All rows' logits at once, then the statistics: what a lens without streaming does."""
    z = model.ln_f(resid) @ model.wte.weight.T  # (R, T, V)
    logp = torch.log_softmax(z, dim=-1)  # (R, T, V)
    p = logp.exp()  # (R, T, V)
    final_logp, final_p = logp[-1], p[-1]
    (final_p * (final_logp - logp)).sum(-1)  # KL(final || row)
    (p * (logp - final_logp)).sum(-1)  # KL(row || final)
    (p * (logp - logp[0])).sum(-1), (p[0] * (logp[0] - logp)).sum(-1)  # vs the input row
    -(p * logp).sum(-1)  # entropy
    z.topk(k, dim=-1)
    target = z[-1].argmax(-1)  # (T,)
    zt = z.gather(-1, target.expand(z.shape[0], -1)[..., None])
    (z > zt).sum(-1)  # ranks


def child(shape: str, T: int, repeats: int, mode: str, bf16: bool = False) -> dict:
    torch.set_grad_enabled(False)
    model = make_model(shape)
    ids = torch.randint(0, model.config.vocab_size, (T,), generator=torch.Generator().manual_seed(1))
    resid = model(ids[None]).resid[:, 0]  # (L + 1, T, C)
    after_forward = peak_rss_since_reset()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    result: dict = {"shape": shape, "T": T, "weights_gb": weights / GB, "peak_after_forward_gb": after_forward / GB}
    if mode == "lens":
        reset_peak_rss()
        logit_lens(model, ids, resid=resid)  # also the warm-up
        peak = peak_rss_since_reset()
        result.update(
            lens_peak_gb=peak / GB, lens_extra_gb=(max(peak, after_forward) - after_forward) / GB,
            lens_above_weights_gb=(peak - weights) / GB,
        )  # fmt: skip
        fns = {
            "lens": lambda: logit_lens(model, ids, resid=resid),
            "lens_onednn": lambda: logit_lens(model, ids, resid=resid, matmul="onednn"),
            **floor_fns(model, model.ln_f(resid)),
        }
        if bf16:
            fns["lens_bf16"] = lambda: logit_lens(model, ids, resid=resid, matmul="bf16")
        result.update({f"{name}_s": t for name, t in interleaved(fns, repeats).items()})
        result["rows"] = resid.shape[0]
    else:
        reset_peak_rss()
        result["naive_s"] = timed(lambda: naive_lens(model, resid, ids))
        peak = peak_rss_since_reset()
        result.update(naive_peak_gb=peak / GB, naive_extra_gb=(max(peak, after_forward) - after_forward) / GB)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["gpt2", "gpt2-xl"], choices=list(PRESETS))
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time matmul='bf16' (slow on CPUs without bf16 units)")
    parser.add_argument("--child", choices=["lens", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.shapes[0], args.tokens, args.repeats, args.child, args.bf16)))
        return

    me = [str(Path(__file__).resolve())]
    print(host_line())
    print(f"T={args.tokens}, fp32, random weights")
    rows = []
    for shape in args.shapes:
        extra = ["--bf16"] if args.bf16 else []
        lens = run_child(me + ["--child", "lens", "--shapes", shape, "--tokens", str(args.tokens), "--repeats", str(args.repeats)] + extra)
        cfg = PRESETS[shape]
        naive_bytes = 3 * lens["rows"] * args.tokens * cfg.vocab_size * 4  # logits, log-probs, probs
        if naive_bytes < 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"):
            naive = run_child(me + ["--child", "naive", "--shapes", shape, "--tokens", str(args.tokens)])
            naive_txt = f"{naive['naive_s']:.1f} s, +{naive['naive_extra_gb']:.1f} GB"
        else:
            naive_txt = f"not run: needs ≥ {naive_bytes / GB:.0f} GB (3 x R x T x V floats)"
        rows.append((shape, lens, naive_txt))
        print(json.dumps(lens), file=sys.stderr)
    print("| shape | rows | lens (s) | floor mm (s) | lens / floor mm | lens matmul=onednn (s) | floor oneDNN (s) "
          "| lens onednn / floor oneDNN | lens extra peak (GB) | peak above weights (GB) | naive |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for shape, r, naive_txt in rows:
        print(f"| {shape} | {r['rows']} | {r['lens_s']:.2f} | {r['floor_mm_s']:.2f} | {r['lens_s'] / r['floor_mm_s']:.2f}x "
              f"| {r['lens_onednn_s']:.2f} | {r['floor_onednn_s']:.2f} | {r['lens_onednn_s'] / r['floor_onednn_s']:.2f}x "
              f"| {r['lens_extra_gb']:.2f} | {r['lens_above_weights_gb']:.2f} | {naive_txt} |")  # fmt: skip
        if "lens_bf16_s" in r:
            print(f"  {shape}: lens matmul=bf16 {r['lens_bf16_s']:.2f} s = {r['lens_bf16_s'] / r['lens_s']:.2f}x the exact lens")


if __name__ == "__main__":
    main()
