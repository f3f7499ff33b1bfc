"""Small helpers shared by the benchmark scripts: timing, peak memory, subprocesses."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

GB = 1e9


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0), so later phases can be measured apart."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset() -> int:
    """VmHWM: the peak RSS since the last `reset_peak_rss` (or since start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (a, b, a, b, ...) after one warm-up each,
    so that drift in the machine's speed hits every contender alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def run_child(module_args: list[str]) -> dict[str, Any]:
    """Run `python <args>` in a fresh process (so its peak RSS is its own); it prints one JSON line last."""
    proc = subprocess.run([sys.executable, *module_args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {module_args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host_line() -> str:
    """The CPU and what decides matmul speed, for the head of every benchmark's output."""
    import torch

    from minigpt.lens import cpu_capabilities

    caps = cpu_capabilities()
    flag = lambda name: {True: "yes", False: "no", None: "?"}[caps[name]]  # noqa: E731
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"CPU {caps['model']} (avx2 {flag('avx2')}, avx512_bf16 {flag('avx512_bf16')}, amx_bf16 {flag('amx_bf16')}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}")  # fmt: skip
