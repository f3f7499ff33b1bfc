"""From settings dataclasses to argparse and back, and the shared value parsers. No torch here."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, NoReturn, Sequence

from ..settings import Flag, Group, walk


class CommandError(Exception):
    """A failure the user can fix, reported as one line; `code` is the exit status."""

    code = 1


class UsageError(CommandError):
    """A bad command line found after parsing (exit status 2, like argparse's own errors)."""

    code = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------
# Value parsers (argparse `type`s): text -> value, or one line saying what was expected


def bounded(kind: type, ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """A parser of `kind` (int or float) that accepts a value when `ok(value)`; its error says `expected`."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = bounded(int, lambda n: n >= 1, "a positive integer")
non_negative_int = bounded(int, lambda n: n >= 0, "an integer >= 0")
positive_float = bounded(float, lambda x: 0 < x < math.inf, "a positive number")
non_negative_float = bounded(float, lambda x: 0 <= x < math.inf, "a number >= 0")
fraction_below_one = bounded(float, lambda x: 0 <= x < 1, "a fraction in [0, 1)")


def parse_layers(spec: str) -> int | list[str]:
    """'2' -> a stride 2; '0,5,h.3.resid_mid' -> ['h.0', 'h.5', 'h.3.resid_mid']."""
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 1:
            raise argparse.ArgumentTypeError("a stride must be at least 1")
        return int(spec)
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a stride like 2 or a list like 0,5,11, got {spec!r}")
    return [f"h.{s}" if s.isdigit() else s for s in items]


def parse_range(spec: str) -> slice:
    """'10:20' -> slice(10, 20); ':5', '-8:' and '3:-1' work as Python slices do."""
    start, colon, end = spec.partition(":")
    try:
        if not colon:
            raise ValueError
        return slice(int(start) if start.strip() else None, int(end) if end.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END such as 10:20, :5 or -8:, got {spec!r}") from None


def parse_blocks(spec: str) -> list[int]:
    """'5' -> [5]; '0,5,11' -> [0, 5, 11]."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items or not all(s.isdigit() for s in items):
        raise argparse.ArgumentTypeError(f"expected block numbers such as 5 or 0,5,11, got {spec!r}")
    return sorted({int(s) for s in items})


def parse_list(spec: str) -> tuple[str, ...]:
    """'kl, ce' -> ('kl', 'ce')."""
    return tuple(c.strip() for c in spec.split(",") if c.strip())


# Options whose value may start with "-" (a negative slice start). argparse takes "-3:" for an
# option of its own, so `--range -3:` becomes `--range=-3:` before parsing.
NEGATIVE_VALUE_OPTIONS = ("--range",)


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """['--range', '-3:'] -> ['--range=-3:'], for the options that take such values."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in NEGATIVE_VALUE_OPTIONS:
            value = next(it, None)
            if value is not None and value.startswith("-") and value != "--":
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


# ----------------------------------------------------------------------------
# Settings dataclasses <-> argparse


def help_text(flag: Flag, default: Any) -> str:
    if not flag.show_default or default is None or isinstance(default, bool) or default == ():
        return flag.help
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{flag.help} (default: {shown})"


def add_settings(parser: argparse.ArgumentParser, cls: type, group_: Group | None = None, into: Any = None) -> None:
    """Declare every flagged field of the settings dataclass `cls` (and of its groups) on `parser`."""
    for f, flag, sub in walk(cls, group_):
        if sub is not None:
            add_settings(parser, f.default_factory, sub, parser.add_argument_group(sub.title))  # type: ignore[arg-type]
            continue
        if flag is None:
            continue
        kwargs: dict[str, Any] = {"help": help_text(flag, f.default)}
        if flag.action:
            kwargs["action"] = flag.action
        if flag.action != "store_true":
            kwargs.update(type=flag.parse, choices=flag.choices, metavar=flag.metavar)
        if flag.names:
            kwargs.update(dest=f.name, default=False if flag.action == "store_true" else None)
            if flag.required:
                kwargs["required"] = True
            (into or parser).add_argument(*flag.names, **kwargs)
        else:  # a positional: its dest is the field's name, its metavar what --help shows
            kwargs["metavar"] = flag.positional
            if flag.optional:
                kwargs["nargs"] = "?"
            (into or parser).add_argument(f.name, **kwargs)


def settings_from(cls: type, args: argparse.Namespace) -> tuple[Any, frozenset[str]]:
    """The settings value that `args` describe, and the names of the fields the user gave."""
    values: dict[str, Any] = {}
    given: set[str] = set()
    for f, flag, sub in walk(cls):
        if sub is not None:
            values[f.name], inner = settings_from(f.default_factory, args)  # type: ignore[arg-type]
            given |= inner
            continue
        value = getattr(args, f.name, None)
        if value is None or (value is False and flag is not None and flag.action == "store_true"):
            continue  # not given: the field's default
        values[f.name] = tuple(value) if isinstance(value, list) else value
        given.add(f.name)
    return cls(**values), frozenset(given)


def check_settings(value: Any, config: Any) -> None:
    """Run each field's own check (the library's) against the model's config; a failure is a usage error."""
    for f, flag, sub in walk(type(value)):
        item = getattr(value, f.name)
        if sub is not None:
            check_settings(item, config)
        elif flag is not None and flag.check is not None and item is not None:
            try:
                flag.check(item, config)
            except (ValueError, TypeError) as e:  # LensError, ConfigError and TrainError are ValueErrors
                says = flag.says or f"{{flag}} {{value}}: {e}"
                if "{flag}" not in says:
                    says = "{flag} {value}: " + says
                raise UsageError(says.format(flag=flag.flag, value=item, config=config)) from None
