"""How the lens does its unembedding matmuls: the precision knob `matmul=` (private).

    "exact"   torch's own matmul in the model's dtype (default): the top row is bit-identical
              to the model's logits.
    "onednn"  oneDNN's fp32 GEMM through torch's public mkldnn tensors (float32 CPU models):
              faster where torch's default BLAS is slow (AMD); logits differ by float rounding.
    "bf16"    the rows' matmuls in bfloat16, statistics in float32. The two references (the final
              and the input distribution) stay in the model's dtype, so the top row's KL stays 0.
              Fast only on hardware with bf16 matrix units (AVX-512 BF16 or AMX on x86, recent GPUs):
              on AVX2-only CPUs it is many times slower, and a warning says so.

Shape legend: m vectors to unembed, C n_embd, V vocab.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..errors import LensError
from ..model import GPT

Matmul = Literal["exact", "onednn", "bf16"]
MATMULS: tuple[Matmul, ...] = ("exact", "onednn", "bf16")


class SlowMatmulWarning(UserWarning):
    """The chosen `matmul=` is likely slower than the default on this hardware."""


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> dict[str, object]:
    """The CPU's model name and the flags that decide matmul speed (read on Linux; elsewhere the flags are None)."""
    info: dict[str, object] = {"model": platform.processor() or platform.machine(), "avx2": None,
                               "avx512_bf16": None, "amx_bf16": None}  # fmt: skip
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    fields: dict[str, str] = {}
    for line in lines:  # the first processor's entries are enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    info["model"] = fields.get("model name", info["model"])
    info.update(avx2="avx2" in flags, avx512_bf16="avx512_bf16" in flags, amx_bf16="amx_bf16" in flags)
    return info


def bf16_is_fast(device: torch.device) -> bool | None:
    """Whether this device has bf16 matrix units (True / False), or None when it cannot tell."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return None
    caps = cpu_capabilities()
    if caps["avx512_bf16"] is None:
        return None
    return bool(caps["avx512_bf16"] or caps["amx_bf16"])


def resolve_matmul(matmul: str, model: GPT) -> Matmul:
    """Check the knob against the model; warn about the slow bf16 case."""
    if matmul not in MATMULS:
        raise LensError(f"unknown matmul {matmul!r}; choose one of {', '.join(MATMULS)}")
    W = model.wte.weight
    if matmul == "onednn" and (W.device.type != "cpu" or W.dtype != torch.float32 or not torch.backends.mkldnn.is_available()):
        raise LensError("matmul='onednn' needs a float32 model on the CPU, and a torch built with oneDNN; use matmul='exact'")
    if matmul == "bf16" and bf16_is_fast(W.device) is False:
        caps = cpu_capabilities() if W.device.type == "cpu" else {"model": torch.cuda.get_device_name(W.device)}
        warnings.warn(
            f"matmul='bf16' on {caps['model']}, which has no bf16 matrix units (AVX-512 BF16 or AMX): "
            "its bf16 matmuls are emulated and run many times slower than fp32; use matmul='exact'",
            SlowMatmulWarning, stacklevel=3,
        )  # fmt: skip
    return matmul  # type: ignore[return-value]


class Unembedding:
    """The tied unembedding for one lens call: vectors (m, C) -> logits (m, V) float32.

    `__call__(h, n_exact)`: the first n_exact vectors (the references) always go through the
    model's own matmul; the rest through the chosen backend.
    """

    def __init__(self, model: GPT, matmul: Matmul, max_rows: int) -> None:
        self.mode = matmul
        self.W = model.wte.weight.detach()  # (V, C)
        self.V = self.W.shape[0]
        if matmul == "onednn":
            self.W_onednn = self.W.to_mkldnn()  # oneDNN's own layout, made once per call
            return
        dtype = self.W.dtype if matmul == "exact" else torch.float32
        self.out = torch.empty(max_rows, self.V, device=self.W.device, dtype=dtype)  # reused by every chunk
        if matmul == "bf16":
            # bf16 keeps 8 bits of mantissa, so a bf16 matmul's *output* rounds a logit z to about |z| / 256.
            # GPT-2's logits share a large offset at each position (around -100), which softmax ignores;
            # the mean row of W_E carries it. Unembedding with W_E minus its mean row leaves only the
            # small, informative part to round; the offset h . mean is added back in float32.
            W = self.W.float()
            self.mean = W.mean(dim=0)  # (C,)
            self.W_centred = (W - self.mean).to(torch.bfloat16)  # (V, C)

    def __call__(self, h: Tensor, n_exact: int = 0) -> Tensor:
        if self.mode == "onednn":
            return torch.nn.functional.linear(h.float().contiguous().to_mkldnn(), self.W_onednn).to_dense()  # (m, V)
        out = self.out[: len(h)]  # (m, V)
        if self.mode == "exact":
            return torch.mm(h, self.W.T, out=out).float()  # (m, C) @ (C, V) -> (m, V)
        if n_exact:  # the references, in the model's own dtype
            out[:n_exact] = h[:n_exact] @ self.W.T  # (n_exact, V)
        rest = h[n_exact:].float()  # (m - n_exact, C)
        out[n_exact:] = rest.to(torch.bfloat16) @ self.W_centred.T  # (m - n_exact, V), widened to float32
        out[n_exact:] += (rest @ self.mean)[:, None]  # the common offset, in float32
        return out
