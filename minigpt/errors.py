"""minigpt's exceptions. Every one says what went wrong and what to do next.

All of them derive from `MinigptError`, so `except minigpt.MinigptError` catches
anything minigpt raises on purpose. Each also derives from the matching builtin
(`ValueError`, `FileNotFoundError`, ...) so that generic handlers keep working.
"""

from __future__ import annotations


class MinigptError(Exception):
    """Base class of every error minigpt raises on purpose."""


class ConfigError(MinigptError, ValueError):
    """A model configuration that minigpt cannot build (bad field, unsupported activation)."""


class ModelNameError(MinigptError, ValueError):
    """A model name that is neither an existing path, a preset, nor an `owner/name` hub id."""


class CheckpointError(MinigptError, ValueError):
    """A checkpoint whose files or tensors do not match what the model needs."""


class PickleCheckpointError(CheckpointError):
    """A pickle checkpoint (`.bin`, `.pt`), which minigpt refuses to load."""


class HubError(MinigptError, ConnectionError):
    """The Hugging Face hub could not be reached, or does not have the files."""


class TokenizerError(MinigptError, ValueError):
    """The tokenizer files are missing, inconsistent, or cannot be fetched."""


class InputError(MinigptError, ValueError):
    """Token ids or text the model cannot take (empty, too long, out of range)."""


class LensError(MinigptError, ValueError):
    """A logit-lens request that cannot be answered (unknown decoder, bad k, bad slice)."""


class TrainError(MinigptError, ValueError):
    """A training run that cannot start or continue (a bad setting, an output folder in use, no run to resume)."""
