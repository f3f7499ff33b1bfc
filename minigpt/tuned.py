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

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import CheckpointError, HubError, LensError
from .model import GPT, GPTConfig

if TYPE_CHECKING:
    import tiktoken

    from .tuned_train import TunedEvaluation

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

    It is a decoder value (the Decoder protocol): `name`, `check(model)`, `decode(model, h, row)`,
    `logits(model, h, row)`, `spec()`. Make one with `TunedLens.fit`, `TunedLens.load`, or
    `TunedLens.from_model` (an untrained one).
    """

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        *,
        kind: Kind = "tuned",
        bias: bool = True,
        base_model_name_or_path: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise LensError(f"unknown lens kind {kind!r}; choose 'tuned' or 'probe'")
        for field, value in (("d_model", d_model), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LensError(f"{field} must be a positive integer, got {value!r}")
        self.kind: Kind = kind
        self.d_model = d_model
        self.num_layers = num_layers
        self.bias = bias
        self.base_model_name_or_path = base_model_name_or_path
        # Other tuned-lens config keys read from a file (base_model_revision, unembed_hash), kept on save.
        self.extra_config = dict(extra_config or {})
        self.source: str | None = None  # where `load` found it
        self.fit_losses: list[list[float]] = []  # after `fit`: per step, per trained map, the loss in nats
        self.fit_config: dict[str, Any] | None = None  # after `fit`: the run's settings (TrainConfig)
        n = num_layers + 1 if kind == "probe" else num_layers
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model, bias=bias) for _ in range(n))
        for t in self.translators:  # zero: the untrained lens is the logit lens
            nn.init.zeros_(t.weight)
            if t.bias is not None:
                nn.init.zeros_(t.bias)

    @classmethod
    def from_model(cls, model: GPT, kind: Kind = "tuned", *, bias: bool = True) -> TunedLens:
        """An untrained (zero) lens for `model`, on its device: it decodes exactly as the logit lens does."""
        lens = cls(model.config.n_embd, model.config.n_layer, kind=kind, bias=bias)
        return lens.to(model.device)

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
        source = f", source={self.source!r}" if self.source else ""
        return (
            f"TunedLens(kind={self.kind!r}, d_model={self.d_model}, layers={self.num_layers}, "
            f"maps={len(self.translators)}{source})"
        )

    # -- decoding

    def check(self, config: GPTConfig | GPT) -> None:
        """Raise LensError unless this lens was made for a model of this width and depth (a config or a model)."""
        c = config.config if isinstance(config, GPT) else config
        if (c.n_embd, c.n_layer) != (self.d_model, self.num_layers):
            base = f", base model {self.base_model_name_or_path}" if self.base_model_name_or_path else ""
            raise LensError(
                f"this {self.kind} lens was made for a model with {self.num_layers} layers and n_embd "
                f"{self.d_model}{base}, but the model has {c.n_layer} layers and n_embd {c.n_embd}: load the "
                "lens made for this model, or train one (TunedLens.fit, or `minigpt tune`)"
            )

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
        ln = model.ln_f
        return F.layer_norm(h, (h.shape[-1],), ln.weight, ln.bias, ln.eps)  # (..., T, C), as the model's own ln_f

    def logits(self, model: GPT, h: Tensor, row: RowLike | int) -> Tensor:
        """decode, then the tied unembedding: h (..., T, C) -> (..., T, V)."""
        from .lens.decoders import decoder_logits

        return decoder_logits(model, self, h, row)

    # -- files

    def config_dict(self, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> dict[str, Any]:
        """config.json's content: tuned-lens' keys (plus "kind" and "format" in minigpt's format)."""
        config = {
            "base_model_name_or_path": self.base_model_name_or_path, "d_model": self.d_model,
            "num_hidden_layers": self.num_layers, "bias": self.bias,
            "base_model_revision": self.extra_config.get("base_model_revision"),
            "unembed_hash": self.extra_config.get("unembed_hash"), "lens_type": LENS_TYPE,
        }  # fmt: skip
        if format == "minigpt":
            config.update(kind=self.kind, format="minigpt")
        return config

    def state_tensors(self) -> dict[str, Tensor]:
        """The maps as float32 CPU tensors, keyed as in tuned-lens' params.pt: "{i}.weight" (C, C), "{i}.bias" (C,)."""
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.translators.state_dict().items()}

    def save(self, directory: str | os.PathLike, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> Path:
        """Write the lens into `directory`: lens.safetensors + config.json, or (format="tuned-lens")
        tuned-lens' config.json + params.pt, which tuned-lens' `TunedLens.from_model_and_pretrained` reads.

        Only one format per folder, since `load` tells them apart by which file is there.
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
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tensors = self.state_tensors()
            if format == "minigpt":
                _atomic(directory / ours, lambda p: save_file(tensors, p, metadata={"format": "pt", "kind": self.kind}))
            else:
                _atomic(directory / ours, lambda p: torch.save(tensors, p))
            config = json.dumps(self.config_dict(format), indent=2)
            _atomic(directory / CONFIG_FILE, lambda p: Path(p).write_text(config + "\n", encoding="utf-8"))
        except OSError as e:
            raise LensError(f"cannot write the lens into {directory}: {e}; choose another folder") from e
        return directory

    @classmethod
    def load(cls, path_or_id: str | os.PathLike, model: GPT) -> TunedLens:
        """Read a lens for `model`: a folder in minigpt's format (lens.safetensors + config.json) or in
        tuned-lens' (config.json + params.pt), or a name on the tuned-lens Space ("gpt2", "gpt2-xl",
        "openai-community/gpt2", ...), fetched through the Hugging Face cache. An existing path always wins.

        The lens is checked against the model (width, layer count) and moved to its device.
        """
        files = resolve_lens(path_or_id)
        config = read_lens_config(files.config)
        lens = cls._from_config(config, files.config)
        lens.source = str(path_or_id)
        lens.check(model)  # before reading the weights: a lens for another model fails fast
        state = read_safetensors_lens(files.weights) if files.weights.name == LENS_FILE else read_params_pt(files.weights)
        lens._load_tensors(state, files.weights)
        return lens.to(model.device)

    @classmethod
    def _from_config(cls, config: dict[str, Any], path: Path) -> TunedLens:
        kind = config.get("kind", "tuned")
        if kind not in KINDS:
            raise CheckpointError(f"{path}: unknown lens kind {kind!r}; minigpt knows 'tuned' and 'probe'")
        lens_type = config.get("lens_type", LENS_TYPE)
        if lens_type != LENS_TYPE:
            raise CheckpointError(f"{path}: lens_type {lens_type!r} is not supported; minigpt reads {LENS_TYPE!r} lenses")
        for key in ("d_model", "num_hidden_layers"):
            value = config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CheckpointError(f"{path}: {key} must be a positive integer, got {value!r}; is this a tuned lens config?")
        bias = config.get("bias", True)
        if not isinstance(bias, bool):
            raise CheckpointError(f"{path}: bias must be true or false, got {bias!r}")
        base = config.get("base_model_name_or_path")
        extra = {k: config[k] for k in ("base_model_revision", "unembed_hash") if config.get(k) is not None}
        return cls(config["d_model"], config["num_hidden_layers"], kind=kind, bias=bias,
                   base_model_name_or_path=base if isinstance(base, str) else None, extra_config=extra)  # fmt: skip

    def _load_tensors(self, state: dict[str, Any], path: Path) -> None:
        """Copy a file's tensors into the maps, strictly: every key, the right shapes, floating point."""
        expected = {k: tuple(v.shape) for k, v in self.translators.state_dict().items()}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        not_tensors = [k for k in expected if k in state and not isinstance(state[k], Tensor)]
        wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
                 if k in state and isinstance(state[k], Tensor) and tuple(state[k].shape) != expected[k]]  # fmt: skip
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
        if unexpected:
            problems.append("unexpected " + ", ".join(map(str, unexpected[:6])) + (" ..." if len(unexpected) > 6 else ""))
        if not_tensors:
            problems.append("not tensors: " + ", ".join(not_tensors[:6]))
        if wrong:
            problems.append("wrong shape " + "; ".join(wrong[:6]))
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
    ) -> TunedLens:
        """Train a lens on `corpus` for `model` (see `minigpt.tuned_train.fit` for every option).

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


def _atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename it, so an interrupted save leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Reading the files


@dataclass(frozen=True)
class LensFiles:
    """Where a lens's two files are: config.json and lens.safetensors or params.pt."""

    config: Path
    weights: Path


def local_lens_files(folder: Path) -> LensFiles:
    """A folder's lens files, in whichever format it holds."""
    if folder.is_file():  # a path to one of the files: use its folder
        folder = folder.parent
    ours, theirs, config = folder / LENS_FILE, folder / PARAMS_FILE, folder / CONFIG_FILE
    if ours.is_file() and theirs.is_file():
        raise CheckpointError(
            f"{folder} holds both {LENS_FILE} and {PARAMS_FILE}; keep one lens per folder (the format is told by its file)"
        )
    weights = ours if ours.is_file() else theirs if theirs.is_file() else None
    if weights is None:
        raise CheckpointError(
            f"{folder} holds no lens: expected {LENS_FILE} + {CONFIG_FILE} (minigpt's format, written by lens.save) "
            f"or {CONFIG_FILE} + {PARAMS_FILE} (tuned-lens' format); train one with `minigpt tune` or give a hub name like 'gpt2'"
        )
    if not config.is_file():
        raise CheckpointError(f"{folder} has {weights.name} but no {CONFIG_FILE}; a lens needs both (copy its config.json beside it)")
    return LensFiles(config, weights)


def read_lens_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}; it should be the lens's JSON config") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; it should be the lens's config")
    return config


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
    """An existing path, else a name on the tuned-lens Space (downloaded into the HF cache)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return local_lens_files(path)
    name = str(path_or_id)
    if not LENS_NAME.match(name) or name.endswith((".pt", ".safetensors", ".json")):
        raise LensError(
            f"no lens at {name!r}: it is not an existing folder, nor a name on the tuned-lens Space "
            "(e.g. 'gpt2', 'gpt2-xl', 'openai-community/gpt2'); train one with `minigpt tune` and pass its folder"
        )
    return hub_lens_files(lens_id(name))


def hub_lens_files(resource: str) -> LensFiles:
    """Fetch `lens/<resource>/` of the tuned-lens Space into the standard HF cache, or find it there.

    The same rules as checkpoints (minigpt.load.hub_download): HF_HUB_OFFLINE, HF_ENDPOINT and
    HF_HOME are honoured, and when the hub does not answer a quick probe only the cache is read.
    config.json comes first: its "format" says which weights file to fetch.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .load import hub_reachable

    repo_id, repo_type = space_repo()
    folder = f"{SPACE_FOLDER}/{resource}"
    where = f"{folder}/ of the {repo_type} {repo_id}"
    offline = constants.HF_HUB_OFFLINE
    cache_only = offline or not hub_reachable()

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, filename, subfolder=folder, repo_type=repo_type,
                                        local_files_only=cache_only))  # fmt: skip
        except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
            raise HubError(f"the hub has no accessible {repo_type} {repo_id!r} ({type(e).__name__}); check TUNED_LENS_REPO_ID") from e
        except LocalEntryNotFoundError as e:
            why = "HF_HUB_OFFLINE is set" if offline else f"the hub ({constants.ENDPOINT}) cannot be reached"
            raise HubError(
                f"cannot get {filename} of {where}: {why} and it is not in the cache; on a machine with network, "
                f"download https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{folder} (config.json and "
                "params.pt) and pass their folder instead of the name, or set HF_ENDPOINT to a mirror"
            ) from e
        except EntryNotFoundError as e:
            raise HubError(
                f"there is no lens {resource!r} ({where} has no {filename}); see "
                f"https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{SPACE_FOLDER} for the published ones, "
                "or train one with `minigpt tune`"
            ) from e
        except OSError as e:  # a network error mid-download, a full disk, ...
            raise HubError(f"downloading {filename} of {where} failed: {e}; try again, or pass a local folder") from e

    config = fetch(CONFIG_FILE)
    weights_name = LENS_FILE if read_lens_config(config).get("format") == "minigpt" else PARAMS_FILE
    return LensFiles(config, fetch(weights_name))
