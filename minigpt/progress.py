"""Progress on stderr, one helper for `train`, `tune` (the lens fit) and `eval` (`evaluate_lens`).

    bar = progress_bar(total=300, desc="train", unit="step", show=progress)
    for step in ...: bar.update(1); bar.set_postfix_str("loss 3.2")
    bar.close()

show=None: a tqdm bar when stderr is a terminal, nothing otherwise (the library's default).
show=True: the bar on a terminal; piped into a file or a log, a plain line every `every_s` seconds
and at the end, since a bar's carriage returns make an unreadable log (the CLI passes True).
show=False: nothing. Under torchrun only rank 0 shows progress.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

EVERY_S = 30.0  # seconds between two plain lines when stderr is not a terminal


class _Quiet:
    """No progress: the same methods, doing nothing."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{k} {v}" for k, v in values.items()))

    def close(self) -> None:
        pass


class _Lines(_Quiet):
    """Plain lines, "train: 120/300 steps (40%), 31 s, loss 3.412", every `every_s` seconds and at the end."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str, initial: int,
                 every_s: float) -> None:  # fmt: skip
        super().__init__(iterable)
        self.total, self.desc, self.unit, self.n, self.every_s = total, desc, unit, initial, every_s
        self.started = self.last = time.monotonic()
        self.postfix, self.shown = "", initial

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every_s:
            self._line()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.n != self.shown:  # the last line: where it ended
            self._line()

    def _line(self) -> None:
        self.last, self.shown = time.monotonic(), self.n
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        unit = self.unit if self.n == 1 and not self.total else self.unit + "s"
        rest = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n:,}{of} {unit}{share}, {self.last - self.started:.0f} s{rest}", file=sys.stderr, flush=True)


def _is_main() -> bool:
    # Under torchrun (RANK is set) only rank 0 reports; reading the environment keeps torch out of here.
    return os.environ.get("RANK", "0") == "0"


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str, unit: str = "step",
                 show: bool | None = None, initial: int = 0, unit_scale: bool = False,
                 every_s: float = EVERY_S) -> Any:  # fmt: skip
    """A progress display on stderr (see the module docstring): iterate it, or call update(n); close() at the end."""
    terminal = sys.stderr.isatty()
    if show is False or (show is None and not terminal) or not _is_main() or total == 0:
        return _Quiet(iterable)
    if not terminal:
        return _Lines(iterable, total, desc, unit, initial, every_s)
    from tqdm import tqdm  # comes with huggingface_hub

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
                file=sys.stderr, dynamic_ncols=True)  # fmt: skip
