"""minigpt: a compact, readable GPT-2 that returns its residual stream, with the logit lens.

>>> import minigpt
>>> model = minigpt.GPT.from_pretrained("gpt2")
>>> tok = minigpt.load_tokenizer("gpt2")
>>> lens = minigpt.logit_lens(model, "The dog", tokenizer=tok)

The names below are imported when first used (PEP 562), so that `import minigpt` and the
`minigpt` command's `--help` do not import torch until something needs it.
"""

import importlib as _importlib
import sys as _sys
import types as _types
from importlib import metadata as _metadata

from .errors import (
    CheckpointError,
    ConfigError,
    HubError,
    InputError,
    LensError,
    MinigptError,
    ModelNameError,
    PickleCheckpointError,
    TokenizerError,
    TrainError,
)

# Public name -> the module that defines it.
_LAZY = {
    "AttentionPatterns": ".attention", "attention_patterns": ".attention",
    "Attribution": ".attribution", "attribute": ".attribution",
    "generate": ".generate",
    "DECODERS": ".lens", "CorpusResult": ".lens", "Decoder": ".lens", "LensResult": ".lens", "ResidualParts": ".lens",
    "Row": ".lens", "evaluate_lens": ".lens", "logit_lens": ".lens", "residual_parts": ".lens",
    "JacobianLens": ".lens", "generate_lens": ".lens", "GenerationLens": ".lens",
    "download": ".load", "load_model": ".load",
    "GPT": ".model", "PRESETS": ".model", "GPTConfig": ".model", "GPTOutput": ".model", "KVCache": ".model",
    "load_tokenizer": ".tokenizer",
    "TrainResult": ".train", "TrainSettings": ".train", "train": ".train",
    "TunedLens": ".tuned",
}  # fmt: skip
# Functions named like their module: `minigpt.train` and `minigpt.generate` stay the functions, as they
# always were, even after `import minigpt.train` (which would otherwise set the attribute to the module).
_FUNCTIONS_NAMED_LIKE_MODULES = ("train", "generate")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # found once; later lookups are plain attribute reads
        return value
    try:  # a submodule not imported yet (minigpt.lens, minigpt.report, ...)
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, _types.ModuleType):
            return  # the import system binding the submodule: keep the function (found through __getattr__)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

try:  # the version lives in pyproject.toml alone
    __version__ = _metadata.version("minigpt-lens")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "GPT", "GPTConfig", "GPTOutput", "KVCache", "PRESETS", "load_model", "download", "load_tokenizer",
    "generate", "logit_lens", "LensResult", "DECODERS", "residual_parts", "ResidualParts",
    "TunedLens", "JacobianLens", "generate_lens", "GenerationLens", "attribute", "Attribution",
    "evaluate_lens", "CorpusResult", "Decoder", "Row", "attention_patterns", "AttentionPatterns",
    "MinigptError", "ConfigError", "ModelNameError", "CheckpointError", "PickleCheckpointError",
    "HubError", "TokenizerError", "InputError", "LensError", "TrainError", "train", "TrainSettings", "TrainResult",
]  # fmt: skip
