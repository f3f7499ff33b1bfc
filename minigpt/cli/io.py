"""Reading the text, checking output paths before the work, and the CLI's messages on stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from .args import CommandError, UsageError


def note(message: str) -> None:
    """A progress or status line on stderr (stdout carries the command's output)."""
    print(message, file=sys.stderr, flush=True)


def plural(n: int, word: str) -> str:
    """'1 window', '3 windows', '1,024 tokens'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def read_text(text: str | None, path: str | None, flag: str = "--text-file") -> str:
    """The text given, or the file's contents less one trailing newline (editors add one); '-' is stdin."""
    if path is None:
        return text or ""
    try:
        content = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CommandError(f"cannot read {flag} {path}: {why}") from None
    return content.removesuffix("\n").removesuffix("\r") if content.endswith("\n") else content


def open_lines(path: str, flag: str = "--text-file") -> Iterator[str]:
    """The non-empty lines of a file (or stdin), read as they are needed; opened now, so a missing file fails first."""
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115  (closed below)
    except OSError as e:
        raise CommandError(f"cannot read {flag} {path}: {e.strerror or e}") from None

    def lines() -> Iterator[str]:
        try:
            for line in handle:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        except UnicodeDecodeError as e:
            raise CommandError(f"cannot read {flag} {path}: {e}") from None
        finally:
            if handle is not sys.stdin:
                handle.close()

    return lines()


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def is_report(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in (".html", ".htm")


def check_output(path: Path, flag: str) -> None:
    """Fail before the (possibly long) computation when an output file cannot be created."""
    if path.is_dir():
        raise CommandError(f"cannot write {flag} {path}: it is a directory; give a file name")
    parent = path.absolute().parent
    for folder in [parent, *parent.parents]:  # the nearest existing folder on the way decides
        if folder.exists():
            if not folder.is_dir():
                raise CommandError(f"cannot write {flag} {path}: {folder} is a file, not a directory")
            if folder != parent:
                raise CommandError(f"cannot write {flag} {path}: the folder {parent} does not exist; create it first")
            return


def check_image_format(path: Path) -> None:
    """The suffix picks matplotlib's format: check it now rather than after the work."""
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"-o {path}: unknown image format {suffix or '(no suffix)'!r}; use e.g. .png, .svg, .pdf or .html")
