"""The settings groups that several commands share: the model, the text, the decoding and the output.

Each option is declared once, here; a command picks the fields it shows (`group(..., only=...)`)
and may reword one (`changes=`). Nothing here imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import setting
from .args import CommandError, UsageError, fraction_below_one, positive_int
from .io import note
from .names import DECODER_CHOICES, DEVICES, MATMULS, PRESETS, SHIPPED

LENS_KINDS = ("tuned", "jacobian")  # what a --lens is (minigpt.TunedLens, minigpt.JacobianLens)

if TYPE_CHECKING:
    from ..lens import Decoder
    from ..model import GPTConfig

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def device_spec(text: str) -> str:
    """'cpu', 'cuda', 'cuda:1' or 'mps' (torch knows 20 more device types; minigpt runs on these)."""
    if not DEVICE.match(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use {DEVICES}")
    return text.strip()


# ----------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class ModelSource:
    """Which checkpoint, on which device. One rule for every command: the device defaults to cpu."""

    model: str | None = setting(
        None, "--model", "-m", metavar="NAME_OR_PATH",
        help=f"a preset ({', '.join(PRESETS)}, {SHIPPED}), a hub id, a folder or a .safetensors file "
        f"(default: gpt2 when it is in the Hugging Face cache, else {SHIPPED}, which ships with minigpt)",
    )  # fmt: skip
    device: str | None = setting(None, "--device", metavar="DEVICE", parse=device_spec,
                                 help=f"{DEVICES} (default: cpu)")  # fmt: skip

    def name(self) -> str:
        """The checkpoint to use: the one given, or the default (said on stderr)."""
        if self.model is not None:
            return self.model
        name = default_model()
        note(f"minigpt: no --model given: using {name}" + ("" if name == "gpt2" else " (gpt2 is not in the Hugging Face cache)"))
        return name

    def torch_device(self) -> str:
        """The device, checked against this machine before anything loads."""
        import torch

        spec = self.device or "cpu"
        if spec.startswith("cuda") and not torch.cuda.is_available():
            raise CommandError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        if spec == "mps" and not torch.backends.mps.is_available():
            raise CommandError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
        return spec


def default_model() -> str:
    """gpt2 when its weights are in the Hugging Face cache (no network needed), else the shipped model."""
    try:
        from huggingface_hub import try_to_load_from_cache

        from ..sources import HUB_REPOS

        if isinstance(try_to_load_from_cache(HUB_REPOS["gpt2"], "model.safetensors"), str):
            return "gpt2"
    except Exception:  # a cache we cannot read is a cache without gpt2
        pass
    return SHIPPED


# ----------------------------------------------------------------------------
# The text


def check_window(window: int, config: GPTConfig) -> None:
    # The library checks the window inside evaluate_lens and fit, against a loaded model; this is
    # the same bound, read from config.json before the weights load.
    if window > config.n_positions:
        raise ValueError(f"window {window} exceeds the context of {config.n_positions}")


@dataclass(frozen=True)
class Text:
    """What to read: a text, a file of it (or of lines), how much of it, in which windows."""

    text: str | None = setting(None, positional="TEXT", optional=True, help="the text to read (or use --text-file)")
    text_file: str | None = setting(None, "--text-file", metavar="PATH",
                                    help="read the text from a UTF-8 file ('-' for stdin); one trailing newline is dropped")  # fmt: skip
    lines: bool = setting(False, "--lines", action="store_true",
                          help="each non-empty line is a document (joined with <|endoftext|>)")
    tokens: int | None = setting(None, "--tokens", metavar="N", parse=positive_int, help="use the first N tokens only")
    window: int | None = setting(None, "--window", metavar="N", parse=positive_int, check=check_window,
                                 says="the model's context is {config.n_positions} tokens; use at most that",
                                 help="tokens per window (default: the model's context)")  # fmt: skip
    val_fraction: float = setting(0.1, "--val-fraction", metavar="F", parse=fraction_below_one,
                                  help="the last F of the tokens is held out for the table at the end")
    truncate: bool = setting(False, "--truncate", action="store_true",
                             help="keep the last tokens that fit the context of a text longer than it")

    def check(self, *, required: bool = True) -> None:
        if self.text is not None and self.text_file is not None:
            raise UsageError("give the text either as an argument or with --text-file, not both")
        if required and self.text is None and self.text_file is None:
            raise UsageError("give a TEXT argument or --text-file PATH")


# ----------------------------------------------------------------------------
# How rows are decoded


def check_last_blocks(k: int, config: GPTConfig) -> None:
    from ..lens import LastBlocks

    LastBlocks(k).check(config)


@dataclass(frozen=True)
class Decoding:
    """The decoders (built-in names and learned lenses), the rows and the unembedding's precision."""

    decoder: tuple[str, ...] = setting((), "--decoder", action="append", choices=DECODER_CHOICES,
                                       help="a decoder to evaluate; repeat for several (default: logit, the model's own ln_f)")  # fmt: skip
    last_blocks: int | None = setting(None, "--last-blocks", metavar="K", parse=positive_int, check=check_last_blocks,
                                      says="the model has {config.n_layer} blocks; use 1 to {config.n_layer}",
                                      help="K for --decoder last_blocks: run the last K blocks before ln_f (a row at or "
                                      "above block L-K runs only the blocks above it, so the top row is the model's output)")  # fmt: skip
    lens: tuple[str, ...] = setting((), "--lens", action="append", metavar="DIR_OR_ID",
                                    help="a tuned lens or probe (a folder from `minigpt tune`, or a name on the tuned-lens "
                                    "Space such as gpt2), labelled by what you give here; repeat for several")  # fmt: skip
    lens_kind: str = setting("tuned", "--lens-kind", choices=LENS_KINDS,
                             help="what each --lens is: a tuned lens or probe (tuned, the default), or a Jacobian lens "
                             "(jacobian: a .pt file in the reference format, or gpt2 for the published one)")  # fmt: skip
    patchscope: bool = setting(False, "--patchscope", action="store_true",
                               help="add a patchscope: each row read through the paper's token-identity prompt")
    sub_blocks: bool = setting(False, "--sub-blocks", action="store_true", help="add a row after each attention (h.N.resid_mid)")
    matmul: str = setting("exact", "--matmul", choices=MATMULS,
                          help="the unembedding's matmuls: exact, onednn, or bf16 (fast only with bf16 units)")

    def names(self) -> list[str]:
        """The built-in decoders asked for, by their canonical names (default: logit unless only lenses are given)."""
        given = [self.decoder] if isinstance(self.decoder, str) else list(self.decoder or ())
        if not given:  # --last-blocks K alone asks for that decoder
            return ["last_blocks"] if self.last_blocks is not None else ["logit"]
        return [{"ln_f": "logit"}.get(n, n) for n in given]

    def lenses(self) -> list[str]:
        return [self.lens] if isinstance(self.lens, str) else list(self.lens)

    def check(self, *, lens_is_the_decoder: bool) -> None:
        """What the options say of each other (before any file is read)."""
        names = self.names()
        if self.last_blocks is not None and "last_blocks" not in names:
            raise UsageError(f"--last-blocks goes with --decoder last_blocks, not --decoder {names[0]}")
        if self.last_blocks is not None and not self.decoder and not lens_is_the_decoder:
            raise UsageError("--last-blocks goes with --decoder last_blocks: name the decoders to compare")
        if lens_is_the_decoder and self.lenses() and (self.decoder or self.last_blocks is not None):
            raise UsageError("give --lens or --decoder, not both: a tuned lens (or probe) is itself the decoder")
        if self.lenses() and self.sub_blocks:
            raise UsageError("--sub-blocks with --lens: a tuned lens has no maps for sub-block rows (tuned-lens declines "
                             "them too); drop --sub-blocks, or use a --decoder")  # fmt: skip
        twice = sorted({n for n in names if names.count(n) > 1} | {s for s in self.lenses() if self.lenses().count(s) > 1})
        if twice:
            flag = "--decoder" if twice[0] in names else "--lens"
            raise UsageError(f"{flag} {twice[0]} is given twice (ln_f and logit are one decoder); give each once")

    def built(self) -> dict[str, Decoder]:
        """The built-in decoders, by label."""
        from ..lens import as_decoder

        k = self.last_blocks if self.last_blocks is not None else 1
        return {n: as_decoder(n, k if n == "last_blocks" else None) for n in self.names()}

    def check_lenses(self, config: GPTConfig) -> None:
        """Each --lens against the model's shape, from the lens's own file (a tuned lens: its config.json alone)."""
        import torch

        from ..errors import LensError
        from ..tuned import TunedLens, TunedLensConfig, read_lens_config, resolve_lens

        if self.lens_kind == "jacobian":
            from ..lens.jacobian import JacobianLens, resolve_lens_file

            for spec in self.lenses():
                lens = JacobianLens.read(resolve_lens_file(spec))  # a missing file fails here, at run time (exit 1)
                try:
                    lens.check(config)
                except LensError as e:
                    raise UsageError(f"--lens {spec}: {e}") from None
            return
        for spec in self.lenses():
            files = resolve_lens(spec)  # a missing lens fails here, at run time (exit 1)
            with torch.device("meta"):  # the lens's own check, on its shape without its memory
                lens = TunedLens(config=TunedLensConfig.from_dict(read_lens_config(files.config), files.config))
            try:
                lens.check(config)
            except LensError:
                raise UsageError(f"--lens {spec}: a {lens.kind} lens for a model of {lens.num_layers} blocks and width "
                                 f"{lens.d_model}, but this model has {config.n_layer} blocks and width {config.n_embd}; "
                                 "give the lens made for it, or make one with `minigpt tune`") from None  # fmt: skip


# ----------------------------------------------------------------------------
# The output


def dpi_value(text: str) -> int:
    # Below about 20 dpi matplotlib's text layout fails inside savefig; refuse it here, in one line.
    value = positive_int(text)
    if value < MIN_DPI:
        raise argparse.ArgumentTypeError(f"expected a resolution of at least {MIN_DPI} dpi, got {text!r}")
    return value


MIN_DPI = 20


@dataclass(frozen=True)
class Output:
    """Where the results go: a figure (or report), JSON, and the figure's title and resolution."""

    output: Path | None = setting(None, "-o", "--output", parse=Path, metavar="PATH",
                                  help="the figure to write (.png, .svg, .pdf, ...)")
    json: Path | None = setting(None, "--json", parse=Path, metavar="PATH",
                                help="every statistic as JSON (NaN as null); '-' for stdout")
    title: str | None = setting(None, "--title", help="the figure's title")
    dpi: int = setting(150, "--dpi", parse=dpi_value, metavar="N", help=f"image resolution, at least {MIN_DPI}")


__all__ = ["ModelSource", "Text", "Decoding", "Output", "device_spec", "replace"]
