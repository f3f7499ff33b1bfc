"""`minigpt download`: fetch a checkpoint from the hub (through its cache) into a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import setting
from .names import PRESETS

DESCRIPTION = ("Download a checkpoint (through the Hugging Face cache) and copy model.safetensors, "
               "config.json, vocab.json and merges.txt into a directory, to use offline as --model DIR.")  # fmt: skip
EPILOG = "examples:\n  minigpt download gpt2\n  minigpt download gpt2-xl --dir weights/gpt2-xl\n"


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt download`."""

    name: str = setting(None, positional="NAME", help=f"a preset ({', '.join(PRESETS)}) or a hub id")
    dir: Path | None = setting(None, "--dir", parse=Path, metavar="DIR", help="where to put the files (default: weights/NAME)")


def run(job: Job, given: frozenset[str]) -> int:
    from ..load import download

    print(download(job.name, job.dir))
    return 0
