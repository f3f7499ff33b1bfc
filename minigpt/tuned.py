"""The tuned lens and the input probe: decoders with one learned affine map per row.

The logit lens decodes every row with the model's own `ln_f` and unembedding. An early row can
look far from the output only because its basis differs from the last one's. The tuned lens
(Belrose et al. 2023, arXiv:2303.08112; the `tuned-lens` package) learns, for row i, a translator

    h ↦ h + h @ W_iᵀ + b_i        W_i (C, C) in nn.Linear's out × in layout, b_i (C,)

and then decodes as the logit lens does: `logits_i = ln_f(h + h W_iᵀ + b_i) @ W_Eᵀ`. W and b start
at 0, so an untrained lens *is* the logit lens. The map is residual, so weight decay pulls it towards
the identity, not towards 0.

Rows and translators (tuned-lens' translator i reads HF `hidden_states[i]`, which is minigpt's `resid[i]`):

    translator i (0 <= i < L)  reads  resid[i]: "embed" for i = 0, "h.{i-1}" after that
    no translator              for    resid[L] = "h.{L-1}", the model's output (the lens decodes it as is)

The easy off-by-one is to give translator i to the row "h.i". The input probe (`kind="probe"`) has
L + 1 maps, the top row's included, and is trained to name the *current* input token instead of
matching the model's output (see `TunedLens` for why it reads through the unembedding).

Files (minigpt's lens.safetensors, tuned-lens' params.pt, the Space) are read and written through
`tuned_files.py`; training and evaluation live in `tuned_train.py`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from .errors import CheckpointError, LensError
from .files import atomic_write, state_problems
from .model import GPT, GPTConfig

if TYPE_CHECKING:
    import tiktoken

    from .tuned_train import Fitted, TunedEvaluation

# Re-exported: their home is tuned_files.py, and code written against 0.2 imports them from here.
from .tuned_files import (  # noqa: E402, F401
    CONFIG_FILE, KINDS, LENS_FILE, LENS_IDS, LENS_TYPE, PARAMS_FILE, SPACE_FOLDER, SPACE_REPO_ID, SPACE_REPO_TYPE,
    TUNED_LENS_KEYS, Kind, LensFiles, TunedLensConfig, lens_id, read_lens_config, read_params_pt,
    read_safetensors_lens, resolve_lens, space_repo, unembed_hash,
)  # fmt: skip


class RowLike(Protocol):
    """What `decode` needs of a lens row (minigpt.lens.Row has it): its site and residual index."""

    site: str

    @property
    def resid_index(self) -> int | None: ...


# ----------------------------------------------------------------------------
# The lens


class TunedLens(nn.Module):
    """A learned decoder: per row, `h ↦ ln_f(h + h Wᵀ + b)`, read by the tied unembedding.

    kind="tuned": L translators, trained to match the model's output distribution
      (KL(p_final ‖ p_lens)); the top row has none, so it decodes to the model's own logits.
    kind="probe": L + 1 maps, the top row's included, trained with cross-entropy against the
      *input* token (tuned-lens' `--loss ce --token_shift 0`): how long each row still names
      its input. Next-token statistics of a probe mean nothing.

    Why the probe reads through the unembedding rather than a separate linear classifier:
    GPT-2's unembedding is its embedding (tied), so `W_E` already scores "which token is this"
    and the untrained probe is exactly the logit lens, whose input views (`rank_input`, `kl_input`)
    it improves on and can be compared with row by row. A classifier of its own would need
    C × V + V parameters per row (38.6M for gpt2, 65× a C × C translator) and would learn the
    token identities from scratch instead of measuring what the model's own read-out can recover.

    It is a decoder value (the Decoder protocol): `name`, `params`, `check(config)`, `decode(model, h, row)`,
    plus `logits(model, h, row)`. Its settings are a frozen `TunedLensConfig` (`lens.config`); nothing
    is set on a lens after it is made. Make one with `TunedLens.fit`, `TunedLens.load`, or
    `TunedLens.from_model` (an untrained one).
    """

    def __init__(
        self,
        d_model: int | None = None,
        num_layers: int | None = None,
        *,
        kind: Kind = "tuned",
        bias: bool = True,
        base_model_name_or_path: str | None = None,
        config: TunedLensConfig | None = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = TunedLensConfig(base_model_name_or_path, d_model, num_layers, bias=bias, kind=kind)  # type: ignore[arg-type]
        elif d_model is not None or num_layers is not None:
            raise LensError("give either config= or d_model and num_layers, not both")
        self.config = config
        n = config.num_hidden_layers + 1 if config.kind == "probe" else config.num_hidden_layers
        C = config.d_model
        self.translators = nn.ModuleList(nn.Linear(C, C, bias=config.bias) for _ in range(n))
        for t in self.translators:  # zero: the untrained lens is the logit lens
            nn.init.zeros_(t.weight)
            if t.bias is not None:
                nn.init.zeros_(t.bias)

    @classmethod
    def from_model(cls, model: GPT, kind: Kind = "tuned", *, bias: bool = True,
                   base_model_name_or_path: str | None = None) -> TunedLens:  # fmt: skip
        """An untrained (zero) lens for `model`, on its device: it decodes exactly as the logit lens does.

        Like tuned-lens, it records the hash of the model's unembedding, so a file saved from it
        warns when it is later loaded for another model of the same shape.
        """
        c = model.config
        config = TunedLensConfig(base_model_name_or_path, c.n_embd, c.n_layer, bias=bias, kind=kind,
                                 unembed_hash=unembed_hash(model))  # fmt: skip
        return cls(config=config).to(model.device)

    # the config's fields, read-only: a lens is a value
    kind = property(lambda self: self.config.kind)
    d_model = property(lambda self: self.config.d_model)
    num_layers = property(lambda self: self.config.num_hidden_layers)
    bias = property(lambda self: self.config.bias)
    base_model_name_or_path = property(lambda self: self.config.base_model_name_or_path)

    # -- what it is

    @property
    def name(self) -> str:
        """The decoder's name: "tuned" or "probe" (the key in evaluate_lens(...).to_dict()["metrics"])."""
        return self.kind

    @property
    def title(self) -> str:
        what = "tuned lens" if self.kind == "tuned" else "input probe"
        return f"the {what} ({len(self.translators)} learned maps), then ln_f"

    @property
    def params(self) -> dict[str, Any]:
        """What tells this lens apart, JSON-able (not the weights: those are in the lens's files)."""
        return {
            "kind": self.kind, "d_model": self.d_model, "num_hidden_layers": self.num_layers, "bias": self.bias,
            "base_model_name_or_path": self.base_model_name_or_path,
        }  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"TunedLens(kind={self.kind!r}, d_model={self.d_model}, layers={self.num_layers}, "
            f"maps={len(self.translators)})"
        )

    # -- decoding

    def check(self, config: GPTConfig | GPT) -> None:
        """Raise LensError unless this lens was made for a model of this width and depth.

        Given the model itself (not just its config), also compare the hash of its unembedding with
        the one the lens recorded, and warn (a UserWarning, as tuned-lens does) when they differ.
        """
        c = config.config if isinstance(config, GPT) else config
        if (c.n_embd, c.n_layer) != (self.d_model, self.num_layers):
            base = f", base model {self.base_model_name_or_path}" if self.base_model_name_or_path else ""
            raise LensError(
                f"this {self.kind} lens was made for a model with {self.num_layers} layers and n_embd "
                f"{self.d_model}{base}, but the model has {c.n_layer} layers and n_embd {c.n_embd}: load the "
                "lens made for this model, or train one (`minigpt tune`)"
            )
        if isinstance(config, GPT) and self.config.unembed_hash and unembed_hash(config) != self.config.unembed_hash:
            warnings.warn(
                "the model's unembedding hash does not match the lens' unembed_hash: this lens may have been "
                "trained for another model of the same shape", UserWarning, stacklevel=2,
            )  # fmt: skip

    def index(self, row: RowLike | int) -> int | None:
        """The map that decodes `row` (a Row or a residual index 0..L, resid[i]); None for the tuned top row."""
        L = self.num_layers
        if isinstance(row, bool) or not isinstance(row, int):
            site = getattr(row, "site", None)
            if site == "resid_mid":
                raise LensError(
                    f"the {self.kind} lens has no map for the sub-block row {getattr(row, 'label', site)}: like "
                    "tuned-lens, it learns one per block output; use sub_blocks=False, or a built-in decoder"
                )
            if site not in ("embed", "resid_post"):
                raise LensError(f"the {self.kind} lens decodes the residual stream (embed, h.l); it cannot decode {row!r}")
            row = row.resid_index
        if not isinstance(row, int) or not -(L + 1) <= row <= L:
            raise LensError(f"row {row!r} is out of range: the residual stream has rows 0..{L} (resid[0] = embed)")
        i = row % (L + 1)
        return None if (self.kind == "tuned" and i == L) else i

    def translate(self, h: Tensor, i: int) -> Tensor:
        """Map i applied to the stream: h (..., C) -> h + h @ W_iᵀ + b_i (..., C)."""
        t = self.translators[i]
        if t.weight.device != h.device:
            raise LensError(f"the lens is on {t.weight.device} but the stream is on {h.device}: move it with lens.to(...)")
        weight = t.weight.to(h.dtype)  # a no-op for float32; a bf16 model decodes in bf16
        bias = None if t.bias is None else t.bias.to(h.dtype)
        return h + F.linear(h, weight, bias)  # (..., C) + (..., C) @ (C, C)ᵀ

    def decode(self, model: GPT, h: Tensor, row: RowLike | int) -> Tensor:
        """What the tied unembedding reads for the stream h (..., T, C) at `row`: ln_f(h + h Wᵀ + b), (..., T, C)."""
        if not isinstance(h, Tensor) or h.dim() < 1 or h.shape[-1] != self.d_model:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise LensError(f"the {self.kind} lens decodes vectors of width {self.d_model}, got {got}")
        i = self.index(row)
        if i is not None:
            h = self.translate(h, i)  # (..., T, C)
        return model.ln_f(h)  # (..., T, C): then the model's own decoder

    def logits(self, model: GPT, h: Tensor, row: RowLike | int) -> Tensor:
        """decode, then the tied unembedding: h (..., T, C) -> (..., T, V)."""
        from .lens.decoders import decoder_logits

        return decoder_logits(model, self, h, row)

    # -- files

    def config_dict(self, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> dict[str, Any]:
        """config.json's content (see `TunedLensConfig.to_dict`)."""
        return self.config.to_dict(format)

    def state_tensors(self) -> dict[str, Tensor]:
        """The maps as float32 CPU tensors, keyed as in tuned-lens' params.pt: "{i}.weight" (C, C), "{i}.bias" (C,)."""
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.translators.state_dict().items()}

    def save(self, directory: str | os.PathLike, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> Path:
        """Write the lens into `directory`: lens.safetensors + config.json, or (format="tuned-lens")
        tuned-lens' config.json + params.pt, which tuned-lens' `TunedLens.from_model_and_pretrained` reads.

        Only one format per folder, since `load` tells them apart by which file is there. A lens
        without biases is written to tuned-lens' format with zero biases (and "bias": true), since
        tuned-lens 0.2.0 fails on a file without them; it decodes the same.
        """
        if format not in ("minigpt", "tuned-lens"):
            raise LensError(f"unknown format {format!r}; use 'minigpt' (safetensors) or 'tuned-lens' (params.pt)")
        if format == "tuned-lens" and self.kind == "probe":
            raise LensError(
                "tuned-lens' format holds L translators and no 'kind', so it cannot hold a probe's L + 1 maps; "
                "save the probe in minigpt's format (lens.save(directory))"
            )
        directory = Path(directory)
        ours, other = (LENS_FILE, PARAMS_FILE) if format == "minigpt" else (PARAMS_FILE, LENS_FILE)
        if (directory / other).exists():
            raise LensError(
                f"{directory} already holds {other}, a lens in the other format; save into an empty folder "
                "(a folder holds one lens, and `load` tells the formats apart by their files)"
            )
        tensors, config = self.state_tensors(), self.config
        if format == "tuned-lens" and not config.bias:
            # tuned-lens 0.2.0 cannot build a lens without biases (it zeroes `translator.bias`, which is then
            # None), so its format gets zero biases instead: the same maps, in a file that it loads.
            tensors.update({f"{i}.bias": torch.zeros(self.d_model) for i in range(len(self.translators))})
            config = replace(config, bias=True)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if format == "minigpt":
                atomic_write(directory / ours, lambda p: save_file(tensors, p, metadata={"format": "pt", "kind": self.kind}))
            else:
                atomic_write(directory / ours, lambda p: torch.save(tensors, p))
            text = json.dumps(config.to_dict(format), indent=2)
            atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))
        except OSError as e:
            raise LensError(f"cannot write the lens into {directory}: {e}; choose another folder") from e
        return directory

    @classmethod
    def load(cls, path_or_id: str | os.PathLike, model: GPT) -> TunedLens:
        """Read a lens for `model`: a folder in minigpt's format (lens.safetensors + config.json) or in
        tuned-lens' (config.json + params.pt), or a name on the tuned-lens Space ("gpt2", "gpt2-xl",
        "openai-community/gpt2", "gpt2@<revision>", ...), fetched through the Hugging Face cache.
        A local folder wins only if it holds a lens (as in tuned-lens): a stray ./gpt2 checkpoint
        folder does not hide the hub's gpt2 lens.

        The lens is checked against the model (width, layer count) and moved to its device; a lens
        whose recorded unembed_hash differs from the model's warns (UserWarning), as tuned-lens does.
        """
        files = resolve_lens(path_or_id)
        lens = cls(config=TunedLensConfig.from_dict(read_lens_config(files.config), files.config))
        lens.check(model)  # before reading the weights: a lens for another model fails fast
        state = read_safetensors_lens(files.weights) if files.weights.name == LENS_FILE else read_params_pt(files.weights)
        lens._load_tensors(state, files.weights)
        return lens.to(model.device)

    def _load_tensors(self, state: dict[str, Any], path: Path) -> None:
        """Copy a file's tensors into the maps, strictly: every key, the right shapes, floating point."""
        expected = {k: tuple(v.shape) for k, v in self.translators.state_dict().items()}
        problems = state_problems(state, expected, shown=6)
        if problems:
            n = len(self.translators)
            raise CheckpointError(
                f"{path} does not hold the {n} maps its config.json describes ({n} x '{{i}}.weight' "
                f"[{self.d_model}, {self.d_model}]{' and {i}.bias' if self.bias else ''}): " + " | ".join(problems)
                + ". Check that config.json belongs to this file"
            )
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                raise CheckpointError(f"{path}: {k} has dtype {v.dtype}; a lens's weights are floating point")
        # Published files may hold float16: the maps are kept (and trained) in float32.
        self.translators.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})

    # -- training and evaluation (tuned_train.py)

    @classmethod
    def fit(cls, model: GPT, corpus: str | Tensor | Sequence[int] | Sequence[str], **options: Any) -> Fitted:
        """Train a lens on `corpus` for `model`; `options` are `minigpt.tuned_train.fit`'s (tokenizer, kind,
        steps, tokens_per_step, seed, window, lr, out, resume, ...).

        kind "tuned" minimises KL(p_final ‖ p_lens), averaged over tokens and summed over rows;
        "probe" the cross-entropy against the input token. tuned-lens' recipe: SGD with Nesterov
        momentum 0.9, lr 0.1, weight decay 1e-3, linear decay to 0 without warm-up, grad-norm clip 1.0.
        Returns the lens with a separate report of the run: `lens, report = TunedLens.fit(...)`
        (`report.losses` per step and map, `report.settings` the run's settings).
        """
        from .tuned_train import fit

        return fit(cls, model, corpus, **options)

    def evaluate(
        self,
        model: GPT,
        corpus: str | Tensor | Sequence[int] | Sequence[str],
        *,
        tokenizer: tiktoken.Encoding | None = None,
        **options: Any,
    ) -> TunedEvaluation:
        """Per-row held-out statistics of this lens beside the logit lens's (see `minigpt.tuned_train.evaluate`)."""
        from .tuned_train import evaluate

        return evaluate(self, model, corpus, tokenizer=tokenizer, **options)
