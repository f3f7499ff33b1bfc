"""Reading and writing minigpt's files safely: each rule here exists once.

- `atomic_write`: write through a temporary file and rename it, so an interrupted save leaves the
  old file whole, and the new file gets the user's umask (0644 for most), like any other file.
- `check_writable`: a run's output folder is writable, checked before the run starts.
- `read_json_object`: a JSON config file, with an error that names the file and what it should be.
- `load_pt`: a `torch.save` file (tuned-lens' params.pt, a J-lens) through the restricted unpickler only.
- `state_problems`: the strict comparison of a file's tensors with the ones a module expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from .errors import CheckpointError, MinigptError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then move it into place.

    Some writers (safetensors) create their file with mode 0600; the file is given the mode a
    plain `open` would (0666 less the umask), so that others can read a model in a shared folder.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def check_writable(folder: str | os.PathLike, error: type[MinigptError], what: str = "the output") -> None:
    """Whether a file can be written in `folder` (made for the check, then removed again if it was not
    there), so a long run learns before its first step, not after its last, that it cannot save."""
    folder = Path(folder).absolute()
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # what this check creates, and then removes
    probe = folder / ".minigpt-write-check"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise error(f"cannot write {what} into {folder}: {e.strerror or e}; choose a folder you can write to") from e
    finally:
        for p in made:  # deepest first: the run makes its folder itself when it saves
            try:
                p.rmdir()
            except OSError:
                pass


def load_pt(path: str | os.PathLike, what: str) -> Any:
    """A `torch.save` file through torch's restricted unpickler only: tensors and plain containers.

    `weights_only=True` is passed explicitly: it exists since torch 1.13 (minigpt needs 2.1), and its
    default was False before torch 2.6. A file that asks for anything else (a function to call, a class
    to build) raises UnpicklingError before any of it runs. `what` names the file in errors ("params.pt").
    """
    import pickle
    import re

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        called = re.search(r"GLOBAL ([\w.]+)", str(e))
        if called:
            raise CheckpointError(
                f"refusing {path}: its pickle asks to call {called.group(1)}, i.e. to run code, not just to hold "
                f"tensors. minigpt reads {what} only with torch.load(weights_only=True), which refused it; "
                "get it from a source you trust"
            ) from e
        raise CheckpointError(
            f"{path} is not a tensor file the restricted loader can read ({first_line(e)}): it may be corrupt "
            "or hold more than tensors; download or save it again"
        ) from e
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:  # a truncated zip (RuntimeError or EINVAL), an empty file
        raise CheckpointError(f"{path} is truncated or corrupt ({first_line(e)}); download or save it again") from e


def first_line(e: BaseException) -> str:
    """An exception's first non-empty line, at most 200 characters (torch's messages run long)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def read_json_object(path: str | os.PathLike, what: str, error: type[MinigptError]) -> dict[str, Any]:
    """A JSON file holding one object; `what` says what it should be ("the checkpoint's JSON config")."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}; it should be {what}") from e
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a JSON object; it should be {what}")
    return data


def state_problems(state: dict[str, Any], expected: dict[str, tuple[int, ...]], shown: int = 12) -> list[str]:
    """What is wrong with a file's tensors against the expected names and shapes (empty: nothing).

    Each problem lists at most `shown` names: missing ones with their expected shapes, unexpected
    ones, values that are not tensors, and tensors of the wrong shape.
    """

    def listed(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:shown]) + (f" (and {len(items) - shown} more)" if len(items) > shown else "")

    missing = [f"{k} {list(shape)}" for k, shape in expected.items() if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    not_tensors = [k for k in expected if k in state and not isinstance(state[k], Tensor)]
    wrong = [f"{k}: file {tuple(state[k].shape)}, expected {expected[k]}" for k in expected
             if isinstance(state.get(k), Tensor) and tuple(state[k].shape) != expected[k]]  # fmt: skip
    problems = []
    if missing:
        problems.append("missing " + listed(missing))
    if unexpected:
        problems.append("unexpected " + listed(unexpected))
    if not_tensors:
        problems.append("not tensors: " + listed(not_tensors))
    if wrong:
        problems.append("wrong shape " + listed(wrong, "; "))
    return problems
