"""Draw an `Attribution`: a head × block heatmap for one position, and a bar chart of its top components.

matplotlib only, through its object API (no pyplot state); `import minigpt` imports neither this module
nor matplotlib.

>>> from minigpt.plot_attribution import plot_attribution
>>> plot_attribution(minigpt.attribute(model, text, tokenizer=tok, target=" Paris")).savefig("att.png")
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np

from .attribution import Attribution
from .display import display_token
from .errors import LensError

__all__ = ["plot_attribution"]

View = Literal["both", "heads", "bars"]


def plot_attribution(att: Attribution, view: View = "both", *, position: int | None = None, k: int = 12, title: str | None = None):
    """One position of `att` (absolute; default the last): `view` "heads" (head × block heatmap, red
    writes the target up, blue down; needs by="head" or "neuron"), "bars" (the top k components by
    |value|, with the total and the gap) or "both" side by side. Returns the matplotlib Figure."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    if view not in ("both", "heads", "bars"):
        raise LensError(f"unknown view {view!r}; choose 'both', 'heads' or 'bars'")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise LensError(f"k must be a positive integer, got {k!r}")
    col = att.column(position)
    heads = [(c.block, c.head, i) for i, c in enumerate(att.components) if c.kind == "attn_head"]
    if view == "heads" and not heads:
        raise LensError(f"this attribution is by={att.by!r}, which has no heads: use attribute(..., by='head') or view='bars'")
    panels = (["heads"] if heads and view != "bars" else []) + (["bars"] if view != "heads" else [])

    fig = Figure(figsize=(6.2 * len(panels), max(3.6, 0.32 * k + 1.4)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vals = att.values[:, col]
    for ax, panel in zip(axes, panels):
        if panel == "heads":
            L, H = max(b for b, _, _ in heads) + 1, max(h for _, h, _ in heads) + 1
            grid = np.zeros((L, H))
            for b, h, i in heads:
                grid[b, h] = vals[i]
            lim = float(np.abs(grid).max()) or 1.0
            im = ax.imshow(grid, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), origin="lower", aspect="auto")
            ax.set_xlabel("head", fontsize=10)
            ax.set_ylabel("block", fontsize=10)
            ax.set_xticks(range(H))
            ax.set_yticks(range(L))
            ax.tick_params(labelsize=9)
            ax.set_title(f"each head's share ({att.heads} heads)", fontsize=10)
            fig.colorbar(im, ax=ax, label="logit units", shrink=0.85)
        else:
            top = att.top(k, att.start + col)[::-1]  # largest at the top of the chart
            labels, values = [c.label for c, _ in top], [v for _, v in top]
            ax.barh(range(len(top)), values, color=["#b2182b" if v >= 0 else "#2166ac" for v in values])
            ax.set_yticks(range(len(top)), labels, fontsize=9, fontfamily="monospace")
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_xlabel("share of the logit (logit units)", fontsize=10)
            note = "exact" if att.exact else "linearised: does not sum"
            ax.set_title(f"top {len(top)} components: total {att.total[col]:+.3f}, gap {att.gap[col]:+.1e} ({note})", fontsize=10)
            ax.tick_params(axis="x", labelsize=9)
    target = att.target_text(col)
    token = display_token(att.id_text.get(int(att.token_ids[col]), f"#{int(att.token_ids[col])}")) if att.id_text else f"#{int(att.token_ids[col])}"
    first = title or "Direct logit attribution"
    fig.suptitle(f"{first}: {target} at position {att.start + col} (input {token}), row {att.row.label}", fontsize=11)
    return fig
