"""The `minigpt` command: `lens`, `eval`, `generate`, `download`, `train` and `tune`.

    minigpt lens "The dog ran to the park" --model gpt2 --metric ranks -o lens.png
    minigpt eval --text-file corpus.txt --model gpt2 --decoder logit --decoder norm_only -o curves.png --json metrics.json
    minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
    minigpt download gpt2-xl --dir weights/gpt2-xl

Each command is a module here with a frozen settings dataclass (`Job`), built from the shared
groups in `groups.py`, and `run(job, given)`. The parser, the checks and the resume check are made
from the dataclass's fields (`minigpt.settings`). Only the command that runs is imported, and none
imports torch before it runs, so `minigpt --help` and `minigpt lens --help` stay fast.

Every error ends the command with one line on stderr and no traceback: exit code 2 for a bad
command line, 1 for what goes wrong while running (a model that cannot be loaded, text that does
not fit, a file that cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

from .args import CommandError, Parser, UsageError, add_settings, join_negative_values, parse_layers, parse_range, settings_from
from .names import PRESETS, SHIPPED

if TYPE_CHECKING:
    import tiktoken

    from ..model import GPT, GPTConfig

# The commands, in --help's order: (module in this package, one line of help).
COMMANDS = {
    "lens": ("lens", "plot the logit lens of a text (and/or save it as JSON)"),
    "eval": ("eval", "the lens over a corpus: per-row KL, cross-entropy, top-1 and depth, in bits"),
    "generate": ("generate", "continue a prompt"),
    "download": ("download", "fetch a checkpoint from the hub into a directory"),
    "train": ("train", "train a small GPT-2 from scratch on a text file"),
    "tune": ("tune", "train a tuned lens (or an input probe) for a model on a text"),
    "jlens": ("jlens", "fit a Jacobian lens for a model on a text (the reference estimator)"),
    # Its own module, outside this package (another engineer's); registered here like the others.
    "attribute": ("..attribute_cli", "which components wrote a token's logit (direct logit attribution)"),
}

MAIN_DESCRIPTION = f"""\
A compact GPT-2 with a logit lens.

The model: --model NAME_OR_PATH, in every command. Without it, gpt2 when it is in the Hugging Face
cache, else {SHIPPED}, the small model that ships with minigpt (no network needed)."""

MAIN_EPILOG = f"""\
models (--model): a preset ({', '.join(PRESETS)}), {SHIPPED} (shipped with minigpt, offline), a hub id
(openai-community/gpt2), a local directory (config.json + model.safetensors [+ vocab.json,
merges.txt]) or a single .safetensors file. Hub files are cached in the Hugging Face cache.
devices (--device): cpu (the default in every command), cuda, cuda:N or mps.

examples:
  minigpt lens "ROMEO: But soft, what light through yonder window breaks?" --model {SHIPPED} -o lens.png
  minigpt download gpt2 --dir weights/gpt2
  minigpt lens "The dog ran to the park" --model weights/gpt2 --metric ranks -o lens.png
  minigpt eval --text-file corpus.txt --model gpt2 --tokens 20000 -o curves.png --json metrics.json
  minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
  minigpt lens --help
"""


def command_module(name: str) -> ModuleType:
    """The module of command `name`, imported now (only the command that runs is imported)."""
    module = COMMANDS[name][0]
    return importlib.import_module(module if module.startswith(".") else f".{module}", __name__)


def add_command(commands: argparse._SubParsersAction, name: str, module: ModuleType) -> None:
    if hasattr(module, "Job"):  # a settings dataclass: the parser is made from its fields
        parser = commands.add_parser(name, help=COMMANDS[name][1], description=module.DESCRIPTION,
                                     epilog=module.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        add_settings(parser, module.Job)
        parser.set_defaults(run=lambda args: module.run(*settings_from(module.Job, args)))
    else:  # `minigpt attribute` is written with argparse directly: add_parser(subparsers) sets its run(args)
        module.add_parser(commands)


def build_parser(only: str | None = None) -> Parser:
    """The `minigpt` parser. only: build that command's options alone (the others are listed, not built)."""
    parser = Parser(prog="minigpt", description=MAIN_DESCRIPTION, epilog=MAIN_EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"minigpt {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_line) in COMMANDS.items():
        if only is not None and name != only:
            commands.add_parser(name, help=help_line, add_help=False)  # listed in --help, built when it runs
            continue
        add_command(commands, name, command_module(name))
    for sub in commands.choices.values():  # `minigpt lens ... --debug` works as well as `minigpt --debug lens ...`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return parser


def version() -> str:
    from importlib import metadata

    try:  # the version lives in pyproject.toml alone
        return metadata.version("minigpt-lens")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# ----------------------------------------------------------------------------
# What every command shares at run time (tests replace `load` to prove options are checked first)


def load_config(name: str) -> GPTConfig:
    """The checkpoint's config, read before its weights, so that options can be checked against it."""
    from ..load import checkpoint_config

    return checkpoint_config(name)


def load(name: str, device: str | None) -> tuple[GPT, tiktoken.Encoding]:
    """The model and its tokenizer: the one place a command reads weights."""
    from ..load import load_model
    from ..tokenizer import load_tokenizer

    return load_model(name, device=device), load_tokenizer(name)


def one_line(error: BaseException) -> str:
    # Some library messages span lines; the CLI promises one.
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `minigpt` command with `argv` (default: sys.argv[1:]); return the exit status."""
    from ..errors import MinigptError

    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's one-line usage error
        return e.code if isinstance(e.code, int) else 2
    from ..interrupt import Interrupted

    notices = logging.StreamHandler(sys.stderr)  # the first Ctrl-C's "finishing this step" notice
    notices.setFormatter(logging.Formatter(f"minigpt {args.command}: %(message)s"))
    logging.getLogger("minigpt.interrupt").addHandler(notices)
    try:
        return args.run(args)
    except Interrupted as e:  # Ctrl-C in train or tune: the step finished and the run was saved
        where = f"saved in {e.out}; continue it with --resume" if e.out is not None else "nothing was saved"
        print(f"minigpt {args.command}: interrupted after step {e.step} of {e.total}: {where}", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"minigpt {args.command}: error: {one_line(e)} (see 'minigpt {args.command} --help')", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130
    except (CommandError, MinigptError, OSError) as e:
        if args.debug:
            raise
        print(f"minigpt: error: {one_line(e)}", file=sys.stderr)
        return e.code if isinstance(e, CommandError) else 1
    except Exception as e:  # a bug, or a library failing in a way minigpt doesn't know: still one line
        if args.debug:
            raise
        print(f"minigpt: error: {type(e).__name__}: {one_line(e)} (minigpt --debug ... shows the traceback)", file=sys.stderr)
        return 1
    finally:
        logging.getLogger("minigpt.interrupt").removeHandler(notices)


def __getattr__(name: str) -> Any:
    """The library's names that tests and scripts read from here, imported when first asked for (they import torch)."""
    if name in ("METRICS", "row_labels"):
        from .. import lens

        return getattr(lens, name)
    if name == "CURVES":
        from ..lens.corpus import CURVE_METRICS

        return CURVE_METRICS
    if name == "METRIC_HELP":
        from .lens import METRIC_HELP

        return METRIC_HELP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main", "build_parser", "load", "load_config", "parse_layers", "parse_range", "CommandError", "UsageError"]
