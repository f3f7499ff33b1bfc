"""Settings as values: each field of a job's frozen dataclass carries its command-line flag.

    steps: int = setting(300, "--steps", help="optimizer steps", parse=int, fixed=True)

From these fields the CLI builds its parsers and its checks, refuses a resume that changes a fixed
setting, and the model card spells out the command that made a run, from the settings the run
recorded. A job's dataclass may nest groups of settings (`group(...)`) shared by several jobs.

Nothing here imports torch, so that `minigpt --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping


@dataclass(frozen=True)
class Flag:
    """How one setting is written, explained and checked on the command line."""

    names: tuple[str, ...]  # ("--model", "-m"); empty for a positional argument
    help: str
    parse: Callable[[str], Any] | None = None  # text -> value (argparse's `type`)
    check: Callable[[Any, Any], None] | None = None  # (value, GPTConfig): the library's check; raises
    says: str | None = None  # why a failed check fails, in CLI words, after "{flag} {value}: " unless it says
    # where they go; formatted with flag=, value= and config=
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    action: str | None = None  # "store_true" or "append"
    fixed: bool = False  # fixed on resume: a resumed run keeps the value it was started with
    positional: str | None = None  # the argument's name when it is positional, e.g. "TEXT"
    optional: bool = False  # a positional that may be left out
    required: bool = False
    show_default: bool = True  # append "(default: X)" to the help

    @property
    def flag(self) -> str:
        """How a message names it: its first flag (as the user most likely typed it), or the positional's name."""
        return self.names[0] if self.names else (self.positional or "?")

    def spell(self, value: Any) -> list[str]:
        """The arguments that give this setting `value` (nothing for a switch that is off, or None)."""
        if value is None or value is False:
            return []
        if self.action == "store_true":
            return [self.flag]
        if self.action == "append":
            return [a for v in value for a in (self.flag, str(v))]
        return [str(value)] if not self.names else [self.flag, str(value)]


@dataclass(frozen=True)
class Group:
    """A nested group of settings: its title in `--help`, and which of its fields a job shows."""

    title: str
    only: tuple[str, ...] | None = None  # None: all of them
    changes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # per field: Flag changes


def setting(default: Any, *names: str, help: str, **flag: Any) -> Any:
    """A dataclass field with a flag (`names`; none for a positional) and its help. See `Flag`."""
    meta = {"flag": Flag(tuple(names), help, **flag)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("a setting's default is immutable: use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def group(cls: type, title: str, *, only: tuple[str, ...] | None = None,
          changes: Mapping[str, Mapping[str, Any]] | None = None) -> Any:  # fmt: skip
    """A dataclass field holding a group of settings (`cls`, itself a dataclass of settings)."""
    return dataclasses.field(default_factory=cls, metadata={"group": Group(title, only, dict(changes or {}))})


def walk(cls: type, group_: Group | None = None) -> Iterator[tuple[dataclasses.Field, Flag | None, Group | None]]:
    """(field, its flag, its group) for every field of `cls`, flags already changed as the group says."""
    for f in dataclasses.fields(cls):
        if "group" in f.metadata:
            yield f, None, f.metadata["group"]
            continue
        flag = f.metadata.get("flag")
        if group_ is not None and flag is not None:
            if group_.only is not None and f.name not in group_.only:
                continue
            flag = dataclasses.replace(flag, **group_.changes.get(f.name, {}))
        yield f, flag, None


def flags(cls: type, group_: Group | None = None) -> dict[str, Flag]:
    """Every flagged setting of `cls` and its groups, by field name."""
    out: dict[str, Flag] = {}
    for f, flag, sub in walk(cls, group_):
        if sub is not None:
            out.update(flags(f.default_factory, sub))  # type: ignore[arg-type]  # the group's class
        elif flag is not None:
            out[f.name] = flag
    return out


def flag_names(cls: type) -> dict[str, str]:
    """Field name -> how the command line spells it ({"n_embd": "--embd", ...}), for messages."""
    return {name: flag.flag for name, flag in flags(cls).items()}


def resume_clashes(cls: type, saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """'--embd 32 (the run has 16)' for each setting fixed on resume that `given` sets otherwise than `saved`."""
    out = []
    for name, flag in flags(cls).items():
        if flag.fixed and given.get(name) is not None and name in saved and given[name] != saved[name]:
            out.append(f"{flag.flag} {given[name]} (the run has {saved[name]})")
    return out


def command_line(values: Any) -> list[str]:
    """The arguments that give every flagged setting of the dataclass `values` its value, in field order."""
    args: list[str] = []
    for name, flag in flags(type(values)).items():
        args += flag.spell(getattr(values, name))
    return args
