"""Reading and writing minigpt's files safely: each rule here exists once.

- `atomic_write`: write through a temporary file and rename it, so an interrupted save leaves the
  old file whole, and the new file gets the user's umask (0644 for most), like any other file.
- `read_json_object`: a JSON config file, with an error that names the file and what it should be.
- `state_problems`: the strict comparison of a file's tensors with the ones a module expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from .errors import MinigptError


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
