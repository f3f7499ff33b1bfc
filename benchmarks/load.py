"""Peak memory of loading a checkpoint, against the size of its file.

    python benchmarks/load.py [--shape gpt2-xl] [--dir /tmp/minigpt-load-bench] [--keep]

Writes a random checkpoint of the given shape in the official layout (mask buffers included),
then loads it with `minigpt.GPT.from_pretrained` in a fresh process and reports that process's
peak RSS, with and without the baseline of an `import minigpt` that loads nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import GB, peak_rss_bytes, run_child  # noqa: E402


def child(mode: str, directory: str, shape: str) -> dict:
    import torch

    import minigpt
    from minigpt.testing import random_checkpoint

    if mode == "write":
        random_checkpoint(directory, minigpt.PRESETS[shape], seed=0)
        return {}
    if mode == "baseline":
        return {"peak_gb": peak_rss_bytes() / GB}
    start = time.perf_counter()
    model = minigpt.GPT.from_pretrained(directory)
    seconds = time.perf_counter() - start
    with torch.inference_mode():  # touch every parameter, so that mapped pages count too
        total = sum(float(p.sum()) for p in model.parameters())
    return {"peak_gb": peak_rss_bytes() / GB, "load_s": seconds, "checksum": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2-xl")
    parser.add_argument("--dir", default="/tmp/minigpt-load-bench")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    parser.add_argument("--child", choices=["write", "baseline", "load"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.shape)))
        return

    me = [str(Path(__file__).resolve()), "--shape", args.shape, "--dir", args.dir]
    directory = Path(args.dir)
    try:
        run_child(me + ["--child", "write"])
        size = (directory / "model.safetensors").stat().st_size
        base = run_child(me + ["--child", "baseline"])["peak_gb"]
        load = run_child(me + ["--child", "load"])
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    print("| shape | file (GB) | peak RSS of loading (GB) | peak / file | peak above `import minigpt` (GB) | (above import) / file | load time (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    peak = load["peak_gb"]
    print(f"| {args.shape} | {size / GB:.2f} | {peak:.2f} | {peak / (size / GB):.2f}x | {peak - base:.2f} "
          f"| {(peak - base) / (size / GB):.2f}x | {load['load_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
