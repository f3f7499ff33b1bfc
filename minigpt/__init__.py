"""minigpt: a compact, readable GPT-2 that returns its residual stream, with the logit lens.

>>> import minigpt
>>> model = minigpt.GPT.from_pretrained("gpt2")
>>> tok = minigpt.load_tokenizer("gpt2")
>>> lens = minigpt.logit_lens(model, "The dog", tokenizer=tok)
"""

from importlib import metadata as _metadata

from . import report
from .attention import AttentionPatterns, attention_patterns
from .attribution import Attribution, attribute
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
from .generate import generate
from .generate_lens import GenerationLens, generate_lens
from .lens import (
    DECODERS,
    CorpusResult,
    Decoder,
    JacobianLens,
    LensResult,
    ResidualParts,
    Row,
    evaluate_lens,
    logit_lens,
    residual_parts,
)
from .load import download, load_model
from .model import GPT, PRESETS, GPTConfig, GPTOutput, KVCache
from .tokenizer import load_tokenizer
from .train import TrainResult, TrainSettings, train
from .tuned import TunedLens

try:  # the version lives in pyproject.toml alone
    __version__ = _metadata.version("minigpt-lens")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "GPT", "GPTConfig", "GPTOutput", "KVCache", "PRESETS", "load_model", "download", "load_tokenizer",
    "generate", "generate_lens", "GenerationLens", "logit_lens", "LensResult", "DECODERS", "residual_parts", "ResidualParts",
    "TunedLens", "JacobianLens", "attribute", "Attribution",
    "evaluate_lens", "CorpusResult", "Decoder", "Row", "attention_patterns", "AttentionPatterns",
    "MinigptError", "ConfigError", "ModelNameError", "CheckpointError", "PickleCheckpointError",
    "HubError", "TokenizerError", "InputError", "LensError", "TrainError", "train", "TrainSettings", "TrainResult",
]  # fmt: skip
