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

Files. minigpt writes `lens.safetensors` + `config.json` (tuned-lens' keys plus "kind" and
"format": "minigpt"). It also reads and writes tuned-lens' own `config.json` + `params.pt`,
which is the one exception to "weights load only from safetensors": `params.pt` is a pickle, so
it is read with `torch.load(weights_only=True)` only, the restricted unpickler that builds
tensors and plain containers and refuses anything that would run code.
Training and evaluation live in `tuned_train.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import CheckpointError, LensError
from .files import atomic_write, read_json_object, state_problems
from .model import GPT, GPTConfig
from .sources import split_revision

if TYPE_CHECKING:
    import tiktoken

    from .tuned_train import Fitted, TunedEvaluation

Kind = Literal["tuned", "probe"]
KINDS: tuple[Kind, ...] = ("tuned", "probe")
LENS_FILE = "lens.safetensors"  # minigpt's format
PARAMS_FILE = "params.pt"  # tuned-lens' format (a torch.save pickle)
CONFIG_FILE = "config.json"
# tuned-lens' TunedLensConfig fields, in its order; minigpt adds "kind" and "format".
TUNED_LENS_KEYS = ("base_model_name_or_path", "d_model", "num_hidden_layers", "bias",
                   "base_model_revision", "unembed_hash", "lens_type")  # fmt: skip
LENS_TYPE = "linear_tuned_lens"

# The published lenses: the Hugging Face *Space* AlignmentResearch/tuned-lens, folder lens/<model id>/
# (e.g. lens/gpt2/config.json + params.pt). TUNED_LENS_REPO_ID and TUNED_LENS_REPO_TYPE override
# the repo, as in tuned-lens' own loader.
SPACE_REPO_ID = "AlignmentResearch/tuned-lens"
SPACE_REPO_TYPE = "space"
SPACE_FOLDER = "lens"
# Names that the Space files under another id: the OpenAI checkpoints predate the
# openai-community/ organisation, so their lenses sit under the bare names.
LENS_IDS = {
    "openai-community/gpt2": "gpt2", "openai-community/gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-large": "gpt2-large", "openai-community/gpt2-xl": "gpt2-xl",
    "distilbert/distilgpt2": "distilgpt2",
}  # fmt: skip
LENS_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class RowLike(Protocol):
    """What `decode` needs of a lens row (minigpt.lens.Row has it): its site and residual index."""

    site: str

    @property
    def resid_index(self) -> int | None: ...


# ----------------------------------------------------------------------------
# The lens


@dataclass(frozen=True)
class TunedLensConfig:
    """A lens's config.json: tuned-lens' `TunedLensConfig` keys, in its order, plus minigpt's `kind`."""

    base_model_name_or_path: str | None
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None  # tuned-lens' hash of W_E (see `unembed_hash`); None: not recorded
    lens_type: str = LENS_TYPE
    kind: Kind = "tuned"  # minigpt's: "probe" files hold L + 1 maps and exist in minigpt's format only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LensError(f"unknown lens kind {self.kind!r}; choose 'tuned' or 'probe'")
        for key in ("d_model", "num_hidden_layers"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LensError(f"{key} must be a positive integer, got {value!r}")
        if not isinstance(self.bias, bool):
            raise LensError(f"bias must be true or false, got {self.bias!r}")
        if self.lens_type != LENS_TYPE:
            raise LensError(f"lens_type {self.lens_type!r} is not supported; minigpt reads {LENS_TYPE!r} lenses")

    def to_dict(self, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> dict[str, Any]:
        """config.json's content: tuned-lens' keys, plus "kind" and "format" in minigpt's format."""
        config = {key: getattr(self, key) for key in TUNED_LENS_KEYS}
        if format == "minigpt":
            config.update(kind=self.kind, format="minigpt")
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | str = "config.json") -> TunedLensConfig:
        """Read a parsed config.json (either format), naming the file in every error."""
        base = data.get("base_model_name_or_path")
        fields = {key: data[key] for key in TUNED_LENS_KEYS[1:] if data.get(key) is not None}
        try:
            return cls(base if isinstance(base, str) else None, **{"d_model": None, "num_hidden_layers": None, **fields},
                       kind=data.get("kind", "tuned"))  # fmt: skip
        except (LensError, TypeError) as e:
            raise CheckpointError(f"{path}: {e}; is this a tuned lens config?") from e


def unembed_hash(model: GPT) -> str:
    """tuned-lens' `Unembed.unembedding_hash`: sha256 of W_E (V, C) as float32, printed by numpy to 1 decimal.

    numpy prints a large array as its corners only, so this is cheap. It is the same for minigpt's
    `wte.weight` and transformers' `lm_head.weight` (tied). The print options are pinned to numpy's
    defaults, which tuned-lens relies on.
    """
    W = model.wte.weight.detach().to("cpu", torch.float32).numpy()
    with np.printoptions(precision=1, threshold=1000, edgeitems=3, linewidth=75, suppress=False,
                         floatmode="maxprec", sign="-", legacy=False):  # fmt: skip
        return hashlib.sha256(np.array_str(W, precision=1).encode()).hexdigest()


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
    def fit(
        cls,
        model: GPT,
        corpus: str | Tensor | Sequence[int] | Sequence[str],
        *,
        tokenizer: tiktoken.Encoding | None = None,
        kind: Kind | None = None,
        steps: int | None = None,
        tokens_per_step: int | None = None,
        seed: int | None = None,
        window: int | None = None,
        lr: float | None = None,
        **options: Any,
    ) -> Fitted:
        """Train a lens on `corpus` for `model` (see `minigpt.tuned_train.fit` for every option).

        Returns the lens with a separate report of the run: `lens, report = TunedLens.fit(...)`
        (`report.losses` per step and map, `report.settings` the run's settings).

        kind "tuned" minimises KL(p_final ‖ p_lens), averaged over tokens and summed over rows;
        "probe" the cross-entropy against the input token. tuned-lens' recipe: SGD with Nesterov
        momentum 0.9, lr 0.1, weight decay 1e-3, linear decay to 0 without warm-up, grad-norm clip 1.0.
        """
        from .tuned_train import fit

        return fit(model, corpus, tokenizer=tokenizer, kind=kind, steps=steps, tokens_per_step=tokens_per_step,
                   seed=seed, window=window, lr=lr, **options)  # fmt: skip

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


# ----------------------------------------------------------------------------
# Reading the files


@dataclass(frozen=True)
class LensFiles:
    """Where a lens's two files are: config.json and lens.safetensors or params.pt."""

    config: Path
    weights: Path


def lens_files_in(folder: Path) -> LensFiles | None:
    """The lens files a folder holds, in whichever format; None if it holds no lens at all."""
    ours, theirs, config = folder / LENS_FILE, folder / PARAMS_FILE, folder / CONFIG_FILE
    if ours.is_file() and theirs.is_file():
        raise CheckpointError(
            f"{folder} holds both {LENS_FILE} and {PARAMS_FILE}; keep one lens per folder (the format is told by its file)"
        )
    weights = ours if ours.is_file() else theirs if theirs.is_file() else None
    if weights is None:
        return None
    if not config.is_file():
        raise CheckpointError(f"{folder} has {weights.name} but no {CONFIG_FILE}; a lens needs both (copy its config.json beside it)")
    return LensFiles(config, weights)


def no_lens_message(folder: Path) -> str:
    return (
        f"{folder} holds no lens: expected {LENS_FILE} + {CONFIG_FILE} (minigpt's format, written by lens.save) "
        f"or {CONFIG_FILE} + {PARAMS_FILE} (tuned-lens' format); train one with `minigpt tune` or give a hub name like 'gpt2'"
    )


def read_lens_config(path: Path) -> dict[str, Any]:
    return read_json_object(path, "the lens's JSON config", CheckpointError)


def read_safetensors_lens(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}); it may be truncated: save or copy it again") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def read_params_pt(path: Path) -> dict[str, Any]:
    """tuned-lens' params.pt, through torch's restricted unpickler only.

    `weights_only=True` is passed explicitly: it exists since torch 1.13 (minigpt needs 2.1), and
    its default was False before torch 2.6. The restricted unpickler builds tensors and plain
    containers only; a file that asks for anything else (a function to call, a class to build)
    raises UnpicklingError before any of it runs.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        called = re.search(r"GLOBAL ([\w.]+)", str(e))
        if called:
            raise CheckpointError(
                f"refusing {path}: its pickle asks to call {called.group(1)}, i.e. to run code, not just to hold "
                "tensors. minigpt reads params.pt only with torch.load(weights_only=True), which refused it; "
                "get the lens from a source you trust, or ask its author for lens.safetensors"
            ) from e
        raise CheckpointError(
            f"{path} is not a tensor file the restricted loader can read ({_last_line(e)}): it may be corrupt "
            "or hold more than tensors; download or save it again"
        ) from e
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:  # a truncated zip (RuntimeError or EINVAL), an empty file
        raise CheckpointError(f"{path} is truncated or corrupt ({_last_line(e)}); download or save it again") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not the state dict tuned-lens saves "
            "({'0.weight': tensor, '0.bias': tensor, ...}); is it a tuned-lens params.pt?"
        )
    return state


def _last_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


# ----------------------------------------------------------------------------
# Names on the hub


def lens_id(name: str) -> str:
    """The folder name of a model's lens on the tuned-lens Space: minigpt's presets and their hub ids map
    to the bare OpenAI names ("openai-community/gpt2" -> "gpt2"); other ids are used as they are."""
    return LENS_IDS.get(name, name)


def space_repo() -> tuple[str, str]:
    """The repo holding the published lenses: (repo_id, repo_type), honouring tuned-lens' two variables."""
    return (os.environ.get("TUNED_LENS_REPO_ID") or SPACE_REPO_ID, os.environ.get("TUNED_LENS_REPO_TYPE") or SPACE_REPO_TYPE)


def resolve_lens(path_or_id: str | os.PathLike) -> LensFiles:
    """A lens's files: a local folder (or one of its files) that holds a lens, else a name on the tuned-lens Space.

    As in tuned-lens, a local folder wins only if it holds the lens files: a folder named like a
    hub name that holds something else (a `./gpt2` checkpoint, say) is passed over for the hub.
    A name shaped like a path (`./lenses/x`, `/tmp/x`, `~/x`, `x.pt`) that does not exist is named as such.
    """
    path = Path(path_or_id).expanduser()
    name = str(path_or_id)
    if path.is_file():
        if path.name not in (LENS_FILE, PARAMS_FILE, CONFIG_FILE):
            raise LensError(
                f"{name} is a file, not a lens: pass the folder that holds {CONFIG_FILE} and {LENS_FILE} "
                f"(or {PARAMS_FILE}), or a hub name like 'gpt2'"
            )
        path = path.parent
    if path.is_dir():
        files = lens_files_in(path)
        if files is not None:
            return files
        if path_shaped(name) or not LENS_NAME.match(name):
            raise CheckpointError(no_lens_message(path))
    elif path_shaped(name):
        raise LensError(f"{name} does not exist (nothing at {path.absolute()}); give the folder of a lens "
                        "(written by `minigpt tune` or lens.save), or a hub name like 'gpt2'")  # fmt: skip
    base, revision = split_revision(name) if "@" in name else (name, None)
    if not LENS_NAME.match(base):
        raise LensError(
            f"no lens at {name!r}: it is not an existing folder, nor a name on the tuned-lens Space "
            "(e.g. 'gpt2', 'gpt2-xl', 'openai-community/gpt2'); train one with `minigpt tune` and pass its folder"
        )
    return hub_lens_files(base, revision)


def path_shaped(name: str) -> bool:
    """Whether a lens name was meant as a local path (a hub name never starts with '.', '/' or '~')."""
    return name.startswith((".", "/", "~", "\\")) or "\\" in name or name.endswith((".pt", ".safetensors", ".json"))


def hub_lens_files(name: str, revision: str | None = None) -> LensFiles:
    """Fetch `lens/<name>/` of the tuned-lens Space into the standard HF cache, or find it there.

    The name goes to the hub as given, except minigpt's preset hub ids, which the Space files under
    the bare OpenAI names (`lens_id`); a missing folder says so. config.json comes first: its
    "format" says which weights file to fetch.
    """
    from .sources import hub_file, hub_offline, hub_reachable

    repo_id, repo_type = space_repo()
    resource = lens_id(name)
    folder = f"{SPACE_FOLDER}/{resource}"
    mapped = f" (minigpt looks for {name!r} under {folder}/, the Space's folder for that model)" if resource != name else ""
    cache_only = hub_offline() or not hub_reachable()
    offline_hint = (
        f"{mapped.strip() + '; ' if mapped else ''}on a machine with network, download https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{folder} "
        "(config.json and params.pt) and pass their folder instead of the name"
    )
    missing_hint = (
        f"there is no lens {name!r}{mapped}; see https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{SPACE_FOLDER} "
        "for the published ones, or train one with `minigpt tune` (check TUNED_LENS_REPO_ID if you set it)"
    )

    def fetch(filename: str) -> Path:
        return hub_file(repo_id, filename, repo_type=repo_type, revision=revision, subfolder=folder,
                        cache_only=cache_only, offline_hint=offline_hint, missing_hint=missing_hint)  # type: ignore[return-value]

    config = fetch(CONFIG_FILE)
    weights_name = LENS_FILE if read_lens_config(config).get("format") == "minigpt" else PARAMS_FILE
    return LensFiles(config, fetch(weights_name))
