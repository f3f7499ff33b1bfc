"""The learned and patched decoders a command loads: --lens (as --lens-kind says) and --patchscope."""

from __future__ import annotations

from typing import Any

from .io import note


def load_lens(spec: str, model: Any, kind: str = "tuned") -> Any:
    """A --lens, as --lens-kind says: a tuned lens (or probe), or a Jacobian lens."""
    if kind == "jacobian":
        from ..lens.jacobian import JacobianLens

        lens: Any = JacobianLens.load(spec, model)
    else:
        from ..tuned import TunedLens

        lens = TunedLens.load(spec, model)
    note(f"lens: {lens.title}, from {spec}")
    return lens


def patchscope(tok: Any) -> Any:
    """The patchscope of --patchscope: the paper's token-identity target prompt."""
    from ..lens.patchscope import Patchscope

    return Patchscope(tokenizer=tok)
