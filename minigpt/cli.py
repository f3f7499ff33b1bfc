"""The `minigpt` command: `lens`, `eval`, `generate` and `download`.

    minigpt lens "The dog ran to the park" --model gpt2 --metric ranks -o lens.png
    minigpt eval --text-file corpus.txt --model gpt2 --decoder logit --decoder norm_only -o curves.png --json metrics.json
    minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
    minigpt download gpt2-xl --dir weights/gpt2-xl

Every error ends the command with one line on stderr and no traceback: exit code 2 for
a bad command line, 1 for what goes wrong while running (a model that cannot be loaded,
text that does not fit, a file that cannot be written).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn, Sequence

import torch

from .errors import InputError, LensError, MinigptError
from .lens import ALIASES, DECODERS, MATMULS, METRICS, resolve_positions, row_labels
from .lens.corpus import MEANS as CURVES
from .report import MAX_POSITIONS as REPORT_POSITIONS
from .report import TOP

if TYPE_CHECKING:
    import tiktoken

    from .lens import CorpusResult, Decoder, LensResult
    from .model import GPT, GPTConfig
    from .tuned import TunedLens

DECODER_CHOICES = (*DECODERS, *ALIASES)  # "ln_f" is the permanent alias of "logit"

METRIC_HELP = {
    "logits": "each cell: the row's top-1 token, coloured by its logit",
    "probs": "each cell: the row's top-1 token, coloured by its probability",
    "ranks": "rank of the model's final top-1 token in each row (1 = the row already predicts it)",
    "kl": "KL(p_final || p_row) in nats: how far each row is from the model's output",
    "input_ranks": "rank of the input token in each row (does the row still 'see' its input?)",
    "input_kl": "KL(p_input || p_row) in nats, p_input being the embed row's distribution",
    "depth": "prediction depth: light from the row up which every row's top-1 is the final top-1",
}

LENS_EPILOG = """\
metrics:
{metrics}

rows (--layers):
  The rows are "embed" (the token + position embeddings), then "h.0", "h.1", ... (the output
  of each block; with --sub-blocks, "h.N.resid_mid" before each, after attention and before
  the MLP). With the default decoder the top row decodes to exactly the model's own logits;
  with --decoder last_blocks too (a row at or above block L-K runs only the blocks above it).
    --layers 2            a stride: every 2nd block (h.0, h.2, ...), plus embed and the last block
    --layers 0,5,11       these blocks (h.0, h.5, h.11)
    --layers embed,h.5    row labels; mix freely with block numbers
    --layers h.5          one row (a lone number is a stride, so name it)

positions (--range):
  START:END selects tokens START..END-1 (0-based, as a Python slice; either end may be left
  out, negatives count from the end). The model still reads the whole text; only these
  positions are decoded. A figure shows at most --max-positions of them (the last ones); the
  JSON has them all. Write a negative start with '=': --range=-10: (the last 10 tokens).

examples:
  minigpt lens "Sometimes, when people say plasma, they mean a state of matter." --model gpt2 -o lens.png
  minigpt lens --text-file abstract.txt --model gpt2-xl --metric ranks --range 95:105 --layers 2 -o ranks.png
  minigpt lens "The dog ran" --model weights/gpt2 --metric kl --sub-blocks --json lens.json -o kl.png
  minigpt lens --text-file book.txt --model gpt2 --truncate --range=-20: -o tail.png
  minigpt lens "The dog ran" --model gpt2 --decoder last_blocks --last-blocks 2 -o lens.png
  minigpt lens "The dog ran to the park" --model gpt2 --metric depth -o depth.png
  minigpt lens --text-file abstract.txt --model gpt2 --metric kl --attention 5 -o lens.html
"""

MAIN_EPILOG = """\
models (--model): a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2), a hub id
(openai-community/gpt2), a local directory (config.json + model.safetensors [+ vocab.json,
merges.txt]) or a single .safetensors file. Hub files are cached in the Hugging Face cache.

examples:
  minigpt download gpt2 --dir weights/gpt2
  minigpt lens "The dog ran to the park" --model weights/gpt2 --metric ranks -o lens.png
  minigpt eval --text-file corpus.txt --model gpt2 --tokens 20000 -o curves.png --json metrics.json
  minigpt generate "The dog" --model gpt2 -n 20 --temperature 0
  minigpt lens --help
"""


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
# Parsing argument values


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


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n


def positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not 0 < x < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return x


def non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not 0 <= x < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


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
# Shared steps


def check_device(spec: str | None) -> str | None:
    """Refuse a device that torch doesn't know or this machine doesn't have, before loading anything."""
    if spec is None:
        return None
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise UsageError(f"--device {spec!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    return spec


def load_config(name: str) -> GPTConfig:
    """The checkpoint's config, read before its weights, so that options can be checked against it."""
    from .load import checkpoint_config

    return checkpoint_config(name)


def load(name: str, device: str | None) -> tuple[GPT, tiktoken.Encoding]:
    from . import GPT, load_tokenizer

    return GPT.from_pretrained(name, device=device), load_tokenizer(name)


def check_top_k(top_k: int | None, config: GPTConfig) -> None:
    if top_k is not None and top_k > config.vocab_size:
        raise UsageError(f"--top-k {top_k} is more than the vocabulary of {config.vocab_size} tokens; use at most that")


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


def read_text(args: argparse.Namespace) -> str:
    """The TEXT argument, or the --text-file's contents less one trailing newline (editors add one)."""
    if args.text_file is None:
        return args.text
    try:
        if args.text_file == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CommandError(f"cannot read --text-file {args.text_file}: {why}") from None
    return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# minigpt lens


def cmd_lens(args: argparse.Namespace) -> int:
    from .lens import logit_lens

    if args.text is None and args.text_file is None:
        raise UsageError("give a TEXT argument or --text-file PATH")
    if args.text is not None and args.text_file is not None:
        raise UsageError("give the text either as an argument or with --text-file, not both")
    if args.output is None and args.json is None:
        raise UsageError("nothing to write: give -o PNG (or -o NAME.html) and/or --json PATH")
    report = args.output is not None and is_report(args.output)
    if args.attention is not None and not report:
        raise UsageError("--attention goes into an HTML report: give -o NAME.html")
    if report and args.layers is not None:
        raise UsageError("--layers picks a figure's rows; an HTML report shows every row and has a stride control")
    if args.max_positions is None:
        args.max_positions = REPORT_POSITIONS if report else 20
    decoder = args.decoder or ("last_blocks" if args.last_blocks is not None else "logit")
    if args.last_blocks is not None and decoder != "last_blocks":
        raise UsageError(f"--last-blocks goes with --decoder last_blocks, not --decoder {decoder}")
    check_lens_option(args)
    device = check_device(args.device)
    text = read_text(args)
    if not text:
        raise InputError("the text is empty: give the lens at least one token")
    if args.output is not None:
        check_output(args.output, "-o")
        check_format(args.output)
    if args.json is not None and not is_stdout(args.json):
        check_output(args.json, "--json")
    # Options that depend on the model's shape are checked against its config.json, before the weights.
    config = load_config(args.model)
    L = config.n_layer
    if args.last_blocks is not None and args.last_blocks > L:
        raise UsageError(f"--last-blocks {args.last_blocks}: the model has {L} blocks; use 1 to {L}")
    check_top_k(args.top_k, config)
    labels = row_labels(L, args.sub_blocks)
    if isinstance(args.layers, list):
        unknown = [s for s in args.layers if s not in labels]
        if unknown:
            raise UsageError(f"--layers: no row {', '.join(unknown)}; this model's rows are {summary(labels)}")
    if args.attention is not None and max(args.attention) >= L:
        raise UsageError(f"--attention: this model's blocks are 0..{L - 1}, not {max(args.attention)}")

    model, tok = load(args.model, device)
    if args.lens is not None:
        decoder = load_lens(args.lens, model)
    ids = tok.encode_ordinary(text)  # "<|endoftext|>" inside a text is ordinary text, not the special token
    n_ctx = model.config.n_positions
    if len(ids) > n_ctx:
        if not args.truncate:
            raise InputError(
                f"the text is {len(ids)} tokens, more than the model's context of {n_ctx}; "
                f"pass --truncate to keep the last {n_ctx} tokens, or shorten the text"
            )
        note(f"lens: the text is {len(ids)} tokens; --truncate keeps the last {n_ctx} (the model's context)")
        ids = ids[-n_ctx:]
    try:  # the library's one positions rule: clamped like a Python slice
        span = resolve_positions(args.range, len(ids))
    except LensError:
        raise InputError(
            f"--range {range_text(args.range)} selects no position: the text has {len(ids)} tokens; "
            f"use START:END within 0:{len(ids)}"
        ) from None
    lo, hi = span.start, span.stop
    if hi - lo > args.max_positions:
        if args.output is not None:
            shown = f"the last {args.max_positions} of {hi - lo} positions"
            note(f"lens: the {'report' if report else 'figure'} shows {shown} (choose with --range or --max-positions)")
        if args.json is None:
            lo = hi - args.max_positions  # the figure or report needs no more: decode only what it shows
    note(f"lens: {len(ids)} tokens, decoding {len(labels)} rows x {hi - lo} positions (decoder {getattr(decoder, 'name', decoder)}) ...")

    k = min(max(args.top_k, TOP), config.vocab_size) if report else args.top_k  # a report shows the top 10
    result = logit_lens(
        model, torch.tensor(ids), tokenizer=tok, decoder=decoder,
        last_blocks=(args.last_blocks or 1) if decoder == "last_blocks" else None,
        k=k, sub_blocks=args.sub_blocks, positions=slice(lo, hi),
    )  # fmt: skip
    if is_stdout(args.json):
        print(result.to_json())
    elif args.json is not None:
        result.to_json(args.json)
        note(f"lens: wrote {args.json}")
    if report:
        save_report(result, args, model, torch.tensor(ids), slice(max(lo, hi - args.max_positions), hi))
        note(f"lens: wrote {args.output}")
    elif args.output is not None:
        save_plot(result, args)
        note(f"lens: wrote {args.output}")
    return 0


def is_report(path: Path) -> bool:
    return path.suffix.lower() in (".html", ".htm")


def check_format(path: Path) -> None:
    """The suffix picks the format (matplotlib's for images): check it now rather than after the work."""
    if is_report(path):
        return
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"-o {path}: unknown image format {suffix or '(no suffix)'!r}; use e.g. .png, .svg, .pdf or .html")


def save_plot(result: LensResult, args: argparse.Namespace) -> None:
    from .plot import plot_lens  # matplotlib only now: `minigpt generate` never imports it

    fig = plot_lens(
        result, args.metric, layers=args.layers, max_positions=args.max_positions,
        sub_blocks=args.sub_blocks, kl_max=args.kl_max, title=args.title,
    )  # fmt: skip
    fig.savefig(args.output, dpi=args.dpi, bbox_inches="tight")


def save_report(result: LensResult, args: argparse.Namespace, model: GPT, ids: torch.Tensor, shown: slice) -> None:
    from .attention import attention_patterns
    from .report import lens_html

    attention = None
    if args.attention is not None:  # the positions the report shows, however many the user asked for
        size = shown.stop - shown.start
        attention = attention_patterns(model, ids, blocks=args.attention, positions=shown, max_positions=size)
    page = lens_html(result, attention=attention, metric=args.metric, max_positions=args.max_positions,
                     kl_max=args.kl_max, title=args.title)  # fmt: skip
    args.output.write_text(page, encoding="utf-8")


def summary(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 8 else f"{', '.join(labels[:4])}, ..., {', '.join(labels[-2:])}"


def range_text(s: slice) -> str:
    return f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"


# ----------------------------------------------------------------------------
# minigpt eval


EVAL_EPILOG = """\
what it computes:
  For every decoder and row (embed, h.0, ..., the last block, which is the model's output), the
  mean over the corpus' positions of: KL(p_final || p_row), the entropy, the cross-entropy against
  the next token and -log p(input token), all in bits per token; the top-1 agreement with the
  model's top-1, the top-1 accuracy against the next and the input token; and a histogram of
  prediction depths. The JSON (--json) has all of them with standard errors, and tuned-lens'
  layout in bits per byte ("layer_i" reads resid[i], HF's hidden_states[i]). A table goes to stdout.

windows:
  The text is tokenized and cut into consecutive windows of --window tokens (default: the model's
  context); the last, shorter window is kept. With --lines each non-empty line is a document, and
  documents are joined with <|endoftext|>. --tokens N evaluates the first N tokens only.

examples:
  minigpt eval --text-file corpus.txt --model gpt2 --tokens 20000 -o curves.png --json metrics.json
  minigpt eval --text-file corpus.txt --model gpt2 --decoder logit --decoder norm_only --decoder last_blocks --last-blocks 2 -o curves.png
  minigpt eval --text-file docs.txt --lines --model gpt2 --window 256 --json -
"""


def cmd_eval(args: argparse.Namespace) -> int:
    from . import distributed
    from .lens import as_decoder, evaluate_lens

    check_lens_option(args)
    names = args.decoder or ["logit"]
    if args.last_blocks is not None and "last_blocks" not in names:
        raise UsageError("--last-blocks goes with --decoder last_blocks")
    decoders = [as_decoder(n, (args.last_blocks or 1) if n == "last_blocks" else None) for n in names]
    check_decoder_names(decoders)
    unknown = [c for c in args.curves if c not in CURVES]
    if unknown or not args.curves:
        raise UsageError(f"--curves {','.join(unknown)}: choose from {','.join(CURVES)}")
    device = check_device(distributed.local_device(args.device))  # under torchrun, 'cuda' is each rank's own GPU
    if args.output is not None:
        if is_report(args.output):
            raise UsageError(f"-o {args.output}: minigpt eval draws a figure (.png, .svg, .pdf); the JSON is --json")
        check_output(args.output, "-o")
        check_format(args.output)
    if args.json is not None and not is_stdout(args.json):
        check_output(args.json, "--json")
    text = None if args.lines else read_text(args)  # a whole text now; lines are streamed while evaluating
    if text == "":
        raise InputError(f"--text-file {args.text_file} is empty: give the lens at least one token")
    lines = open_lines(args.text_file) if args.lines else None
    # Options that depend on the model's shape are checked against its config.json, before the weights.
    config = load_config(args.model)
    if args.window is not None and args.window > config.n_positions:
        raise UsageError(f"--window {args.window}: the model's context is {config.n_positions} tokens; use at most that")
    if args.last_blocks is not None and args.last_blocks > config.n_layer:
        raise UsageError(f"--last-blocks {args.last_blocks}: the model has {config.n_layer} blocks; use 1 to {config.n_layer}")

    distributed.init_from_env(device)  # under torchrun: each rank evaluates its share of the windows
    model, tok = load(args.model, device)
    if args.lens:  # each lens beside the logit lens
        decoders += [load_lens(spec, model) for spec in args.lens]
        check_decoder_names(decoders)
    result = evaluate_lens(
        model, text if lines is None else lines, tokenizer=tok, decoders=decoders, window=args.window,
        max_tokens=args.tokens, batch_size=args.batch_size, sub_blocks=args.sub_blocks, matmul=args.matmul,
    )  # fmt: skip
    if not distributed.is_main():
        return 0  # rank 0 has every rank's numbers: it alone prints and writes
    note(f"eval: {result.n_tokens} tokens in {result.n_windows} windows of {result.window}")
    if is_stdout(args.json):
        print(result.to_json())
    else:
        print(eval_table(result))
        if any(getattr(d, "kind", None) == "probe" for d in decoders):
            print(PROBE_NOTE)
        if args.json is not None:
            result.to_json(args.json)
            note(f"eval: wrote {args.json}")
    if args.output is not None:
        from .plot import plot_curves

        plot_curves(result, args.curves, title=args.title).savefig(args.output, dpi=args.dpi, bbox_inches="tight")
        note(f"eval: wrote {args.output}")
    return 0


def check_decoder_names(decoders: list[Decoder]) -> None:
    names = [d.name for d in decoders]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--decoder {twice[0]} is given twice (ln_f and logit are one decoder); give each once")


def open_lines(path: str) -> Iterator[str]:
    """The non-empty lines of a file (or stdin), read as they are needed; opened now, so a missing file fails first."""
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115  (closed below)
    except OSError as e:
        raise CommandError(f"cannot read --text-file {path}: {e.strerror or e}") from None

    def lines() -> Iterator[str]:
        try:
            for line in handle:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        except UnicodeDecodeError as e:
            raise CommandError(f"cannot read --text-file {path}: {e}") from None
        finally:
            if handle is not sys.stdin:
                handle.close()

    return lines()


def eval_table(result: CorpusResult) -> str:
    """Per row: each decoder's KL (bits per token) and top-1 agreement; the model's own CE under it."""
    names = list(result.metrics)
    head = ["row"] + [f"{n} {what}" for n in names for what in ("KL", "top-1")]
    rows = [[label] + [f"{result.metrics[n][m][i]:.3f}" for n in names for m in ("kl", "top1_agreement")]
            for i, label in enumerate(result.labels)]  # fmt: skip
    width = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, width))) for r in [head] + rows]
    lines.append(f"the model: cross-entropy {result.baseline['ce']:.3f} bits per token, entropy {result.baseline['entropy']:.3f}")
    return "\n".join(lines)


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser(
        "eval", help="the lens over a corpus: per-row KL, cross-entropy, top-1 and depth, in bits",
        description="Evaluate the lens over a whole text, every row and decoder, with bounded memory.",
        epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    source = ev.add_argument_group("input")
    source.add_argument("--text-file", metavar="PATH", required=True, help="the corpus, a UTF-8 file ('-' for stdin)")
    source.add_argument("--lines", action="store_true", help="each non-empty line is a document (joined with <|endoftext|>)")
    source.add_argument("--model", "-m", default="gpt2", help="name or path of the checkpoint (default: gpt2)")
    source.add_argument("--tokens", type=positive_int, metavar="N", help="evaluate the first N tokens only")
    source.add_argument("--window", type=positive_int, metavar="N", help="tokens per window (default: the model's context)")
    source.add_argument("--batch-size", type=positive_int, metavar="B", help="windows per forward pass (default: ~2048 tokens)")
    source.add_argument("--device", help="torch device, e.g. cpu, cuda, mps (default: cpu)")
    output = ev.add_argument_group("output")
    output.add_argument("-o", "--output", type=Path, metavar="PNG", help="a figure of the curves (.png, .svg, .pdf, ...)")
    output.add_argument("--json", type=Path, metavar="PATH", help="every metric as JSON; '-' for stdout (instead of the table)")
    output.add_argument("--curves", type=lambda v: [c.strip() for c in v.split(",") if c.strip()], default=["kl", "ce"],
                        metavar="LIST", help=f"the figure's panels, from {','.join(CURVES)} (default: kl,ce)")
    output.add_argument("--title", help="the figure's title")
    output.add_argument("--dpi", type=positive_int, default=150, help="image resolution (default: 150)")
    how = ev.add_argument_group("how rows are decoded")
    how.add_argument("--decoder", action="append", choices=DECODER_CHOICES,
                     help="a decoder to evaluate; repeat for several (default: logit, the model's own ln_f)")
    how.add_argument("--last-blocks", type=positive_int, metavar="K", help="K for --decoder last_blocks (default: 1)")
    how.add_argument("--lens", action="append", metavar="DIR_OR_ID",
                     help="a tuned lens or probe (a folder from `minigpt tune`, or a name on the tuned-lens Space such "
                     "as gpt2), evaluated beside the logit lens; repeat for several")
    how.add_argument("--sub-blocks", action="store_true", help="add a row after each attention (h.N.resid_mid)")
    how.add_argument("--matmul", choices=MATMULS, default="exact",
                     help="the unembedding's matmuls: exact (default), onednn, or bf16 (fast only with bf16 units)")
    ev.set_defaults(run=cmd_eval)


# ----------------------------------------------------------------------------
# minigpt generate and minigpt download


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate

    device = check_device(args.device)
    if not args.prompt:
        raise InputError("the prompt is empty: give at least one token to continue")
    config = load_config(args.model)
    check_top_k(args.top_k, config)
    n_ctx = config.n_positions
    if args.n >= n_ctx:
        raise UsageError(f"-n {args.n}: the model's context is {n_ctx} tokens, prompt included; ask for fewer")
    model, tok = load(args.model, device)
    ids = torch.tensor(tok.encode_ordinary(args.prompt))
    room = n_ctx - args.n  # prompt tokens that fit beside the new ones
    if len(ids) > room:
        if not args.truncate:
            raise InputError(
                f"a prompt of {len(ids)} tokens plus {args.n} new ones exceeds the context of {n_ctx} positions; "
                f"pass --truncate to keep the last {room} prompt tokens, or ask for fewer with -n"
            )
        note(f"generate: the prompt is {len(ids)} tokens; --truncate keeps the last {room}")
        ids = ids[-room:]
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    out = generate(model, ids, args.n, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(tok.decode(out[len(ids) :].tolist()))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .load import download

    target = download(args.name, args.dir)
    print(target)
    return 0


# ----------------------------------------------------------------------------
# minigpt train

# The flag for each training setting (argparse `dest` = the setting's name in minigpt.train).
TRAIN_FLAGS = {
    "n_layer": "--layers", "n_head": "--heads", "n_embd": "--embd", "context": "--context", "steps": "--steps",
    "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "val_fraction": "--val-fraction",
    "eval_every": "--eval-every", "save_every": "--save-every", "save_dtype": "--save-dtype",
}  # fmt: skip

TRAIN_EPILOG = """\
what it does:
  Reads TEXT_FILE as GPT-2 BPE tokens, holds out the last --val-fraction of them, and trains a
  fresh GPT-2 on random windows of --context tokens (--batch-size windows per step): AdamW with
  weight decay 0.1, a linear warm-up over the first 10% of the steps, then cosine decay to lr/10,
  gradient-norm clipping at 1.0; bf16 autocast on a GPU. Every --eval-every steps it reports the
  held-out loss beside a unigram baseline (the training split's token frequencies).

what it writes:
  DIR/config.json, model.safetensors, vocab.json and merges.txt, the official GPT-2 layout that
  minigpt (--model DIR) and transformers load, and at the end DIR/README.md, a model card with the
  settings, losses, samples and the command that reproduces the run. Every --save-every steps it
  also saves DIR.train-state/ (model, AdamW state, step, data RNG) beside DIR: --resume continues
  from it. It is not part of the model (and is three times its size): ship DIR alone.

note: --layers here is the number of blocks to build; `minigpt lens --layers` picks rows to show.

examples:
  minigpt train input.txt --out weights/mine --steps 300
  minigpt train input.txt --out weights/mine --resume          (continue an interrupted run)
  minigpt train input.txt --out weights/tiny --layers 2 --embd 64 --context 64 --steps 150
"""


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    from .train import SAVE_DTYPES, TrainSettings

    d = TrainSettings()
    tr = commands.add_parser(
        "train", help="train a small GPT-2 from scratch on a text file",
        description="Train a GPT-2 from scratch on a UTF-8 text file and write it as a checkpoint.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tr.add_argument("text_file", metavar="TEXT_FILE", help="the UTF-8 text to train on")
    tr.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the checkpoint")
    shape = tr.add_argument_group("the model (with --resume: the saved run's, unless given)")
    shape.add_argument("--layers", dest="n_layer", type=int, metavar="N",
                       help=f"number of blocks (default: {d.n_layer}); not the same as lens --layers")
    shape.add_argument("--heads", dest="n_head", type=int, metavar="N",
                       help=f"attention heads per block; must divide --embd (default: {d.n_head})")
    shape.add_argument("--embd", dest="n_embd", type=int, metavar="N", help=f"residual width (default: {d.n_embd})")
    shape.add_argument("--context", type=int, metavar="N",
                       help=f"tokens per window, also the model's n_positions (default: {d.context})")
    run = tr.add_argument_group("the run")
    run.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps (default: {d.steps})")
    run.add_argument("--batch-size", dest="batch_size", type=int, metavar="N",
                     help=f"windows (sequences) per step (default: {d.batch_size})")
    run.add_argument("--lr", type=float, metavar="X", help=f"peak learning rate (default: {d.lr:g})")
    run.add_argument("--seed", type=int, metavar="N", help=f"seeds the initialisation and the windows (default: {d.seed})")
    run.add_argument("--val-fraction", dest="val_fraction", type=float, metavar="F",
                     help=f"the last F of the tokens are held out (default: {d.val_fraction:g})")
    run.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cuda if available, else cpu)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in DIR.train-state/")
    save = tr.add_argument_group("evaluation and saving")
    save.add_argument("--eval-every", dest="eval_every", type=int, metavar="N",
                      help=f"report the held-out loss every N steps, and at the end (default: {d.eval_every})")
    save.add_argument("--save-every", dest="save_every", type=int, metavar="N",
                      help=f"save the checkpoint and the training state every N steps (default: {d.save_every})")
    save.add_argument("--save-dtype", dest="save_dtype", choices=SAVE_DTYPES,
                      help=f"dtype of model.safetensors; float16 halves it (default: {d.save_dtype})")
    save.add_argument("--data-licence", metavar="TEXT", help="the text's licence, for the model card")
    tr.set_defaults(run=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    from .errors import TrainError
    from .train import TrainSettings, saved_settings, train

    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    saved = saved_settings(args.out) if args.resume else None
    if saved is not None:
        differ = [f"{TRAIN_FLAGS[k]} {v} (the run has {getattr(saved, k)})" for k, v in given.items()
                  if k in dataclasses.asdict(saved) and k not in ("eval_every", "save_every", "save_dtype")
                  and v != getattr(saved, k)]  # fmt: skip
        if differ:
            raise UsageError(f"--resume continues the run in {args.out} as it was set up: drop " + ", ".join(differ))
    settings = dataclasses.replace(saved or TrainSettings(), **given)
    try:
        settings.check(names=TRAIN_FLAGS)
    except TrainError as e:
        raise UsageError(str(e)) from None
    device = check_device(args.device)

    log = logging.getLogger("minigpt.train")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("train: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[log]):
            result = train(args.text_file, args.out, **dataclasses.asdict(settings), device=device,
                           resume=args.resume, data_licence=args.data_licence)  # fmt: skip
    finally:
        log.removeHandler(handler)
    note(f"train: val loss {result.val_loss:.3f} nats (unigram baseline {result.unigram_loss:.3f}) after "
         f"{result.step} steps, {result.elapsed_s / 60:.1f} min; wrote {result.out_dir}")  # fmt: skip
    print(result.out_dir)
    return 0


# ----------------------------------------------------------------------------
# minigpt tune (the tuned lens and the input probe; minigpt/tuned.py, minigpt/tuned_train.py)

TUNE_EPILOG = """\
what it trains:
  --kind tuned (default): one affine translator per row below the last, so that ln_f(h + h Wᵀ + b)
  matches the model's output distribution (KL(final || lens), tuned-lens' recipe: SGD, Nesterov
  momentum 0.9, lr 0.1, weight decay 1e-3, linear decay to 0, gradient clip 1.0).
  --kind probe: one map per row, the top one included, trained to name the *input* token
  (cross-entropy through the unembedding); its table shows how long each row still names it.

  The last --val-fraction of the text's tokens is held out; the per-row table at the end compares
  the lens with the logit lens on it (also written to DIR/eval.json). DIR gets lens.safetensors +
  config.json (load with minigpt.TunedLens.load(DIR, model)) and the state --resume continues from.

cost: the defaults (100 steps x 2048 tokens) take minutes for a small model on a CPU. A gpt2-small
  lens needs about 2.1 GFLOP per token, 25-190 tokens/s on a CPU: the defaults take 1-3 hours for
  gpt2 on 2 cores, seconds on a GPU. tuned-lens' published recipe (65.5M tokens) is a GPU job:
  --steps 250 --tokens-per-step 262144 --device cuda.

examples:
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2 --resume --steps 200
  minigpt tune --text-file corpus.txt --model gpt2 --out lenses/gpt2-probe --kind probe
  torchrun --standalone --nproc-per-node 8 -m minigpt tune --text-file corpus.txt --model gpt2-xl \\
      --out lenses/gpt2-xl --device cuda --steps 250 --tokens-per-step 262144
"""


def fraction_below_one(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value!r}")
    return x


PROBE_NOTE = ("(the probe's next-token KL and cross-entropy mean nothing: it is trained to name the input token; "
              "read its ce_input and top1_input)")


def check_lens_option(args: argparse.Namespace) -> None:
    """--lens (minigpt lens, minigpt eval): the learned lens is the decoder, and it has no sub-block maps."""
    if not args.lens:
        return
    if args.decoder or args.last_blocks is not None:
        raise UsageError("give --lens or --decoder, not both: a tuned lens (or probe) is itself the decoder")
    if args.sub_blocks:
        raise UsageError("--sub-blocks with --lens: a tuned lens has no maps for sub-block rows (tuned-lens declines "
                         "them too); drop --sub-blocks, or use a --decoder")  # fmt: skip


def load_lens(spec: str, model: GPT) -> TunedLens:
    from .tuned import TunedLens

    lens = TunedLens.load(spec, model)
    note(f"lens: {lens.title}, from {spec}")
    return lens


def add_tune_parser(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune", help="train a tuned lens (or an input probe) for a model on a text",
        description="Train a tuned lens (one affine translator per row, tuned-lens' recipe) or an input probe\n"
        "on a text file, then compare it with the logit lens on the held-out end of the text.",
        epilog=TUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tune.add_argument("--text-file", required=True, metavar="PATH", help="the training text, UTF-8 ('-' for stdin)")
    tune.add_argument("--model", "-m", default="gpt2", help="name or path of the checkpoint (default: gpt2)")
    tune.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the lens and its training state")
    tune.add_argument("--kind", choices=("tuned", "probe"), help="what to train (default: tuned)")
    tune.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps; the schedule spans them (default: 100)")
    tune.add_argument("--tokens-per-step", type=positive_int, metavar="N",
                      help="tokens per step, rounded up to whole windows (default: 2048)")
    tune.add_argument("--window", type=positive_int, metavar="N", help="tokens per sequence (default: the model's context)")
    tune.add_argument("--lr", type=positive_float, help="learning rate, in PyTorch's terms (default: 0.1)")
    tune.add_argument("--seed", type=int, help="seed of the data order; the same seed gives the same lens (default: 0)")
    tune.add_argument("--val-fraction", type=fraction_below_one, default=0.1, metavar="F",
                      help="the last F of the tokens is held out for the table at the end (default: 0.1)")
    tune.add_argument("--resume", action="store_true", help="continue the run saved in --out DIR, exactly")
    tune.add_argument("--save-every", type=positive_int, default=10, metavar="N",
                      help="save the run every N steps, and at the end (default: 10)")
    tune.add_argument("--batch-size", type=positive_int, metavar="N",
                      help="windows per forward pass (memory, not maths; default: about 1024 tokens' worth)")
    tune.add_argument("--device", help="torch device, e.g. cpu, cuda (under torchrun: each rank's own GPU) (default: cpu)")
    tune.set_defaults(run=cmd_tune, text=None)


def cmd_tune(args: argparse.Namespace) -> int:
    import json

    from . import distributed
    from .tuned import TunedLens
    from .tuned_train import STATE_JSON, corpus_ids, evaluate, split_holdout

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the lens")
    if args.resume and not (out / STATE_JSON).is_file():
        raise CommandError(f"--resume: {out} holds no saved run ({STATE_JSON}); drop --resume to start one")
    if not args.resume and (out / STATE_JSON).is_file():
        raise CommandError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    config = load_config(args.model)
    if args.window is not None and args.window > config.n_positions:
        raise UsageError(f"--window {args.window} exceeds the model's context of {config.n_positions}")
    device = check_device(distributed.local_device(args.device))
    text = read_text(args)
    distributed.init_from_env(device)

    model, tok = load(args.model, device)
    ids = corpus_ids(text, tok, model.config.vocab_size)
    train, held_out = split_holdout(ids, args.val_fraction)
    if distributed.is_main():
        note(f"tune: {len(ids):,} tokens: training on {len(train):,}, holding out {len(held_out):,}"
             + (f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""))  # fmt: skip
    lens, report = TunedLens.fit(
        model, train, kind=args.kind, steps=args.steps, tokens_per_step=args.tokens_per_step, seed=args.seed,
        window=args.window, lr=args.lr, batch_size=args.batch_size, out=out, resume=out if args.resume else None,
        save_every=args.save_every, base_model_name_or_path=args.model,
    )  # fmt: skip
    if distributed.is_main():
        note(f"tune: wrote {out} (load it with minigpt.TunedLens.load({str(out)!r}, model))")
    if not len(held_out):
        note("tune: --val-fraction 0 holds nothing out, so there is no held-out table")
    else:
        result = evaluate(lens, model, held_out, window=report.settings["window"], batch_size=args.batch_size)
        if distributed.is_main():
            (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
            print(result.table())
    return 0


# ----------------------------------------------------------------------------
# The parser and main


def build_parser() -> Parser:
    parser = Parser(
        prog="minigpt", description="A compact GPT-2 with a logit lens.",
        epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"minigpt {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lens = commands.add_parser(
        "lens", help="plot the logit lens of a text (and/or save it as JSON)",
        description="Decode the residual stream after every block into next-token predictions, and plot them\n"
        "(rows: layers, bottom to top; columns: input positions).",
        epilog=LENS_EPILOG.format(metrics="\n".join(f"  {m:12} {h}" for m, h in METRIC_HELP.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    source = lens.add_argument_group("input")
    source.add_argument("text", nargs="?", metavar="TEXT", help="the text to read (or use --text-file)")
    source.add_argument("--text-file", metavar="PATH",
                        help="read the text from a UTF-8 file ('-' for stdin); one trailing newline is dropped")
    source.add_argument("--model", "-m", default="gpt2", help="name or path of the checkpoint (default: gpt2)")
    source.add_argument("--truncate", action="store_true",
                        help="keep the last n_positions tokens of a text longer than the context")
    source.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cpu)")
    output = lens.add_argument_group("output (at least one)")
    output.add_argument("-o", "--output", type=Path, metavar="PNG",
                        help="image to write (.png, .svg, .pdf, ...), or .html: an interactive report (one offline file)")
    output.add_argument("--json", type=Path, metavar="PATH",
                        help="write every statistic as JSON (NaN as null; all positions of --range); '-' for stdout")
    lens_view = lens.add_argument_group("what the figure shows")
    lens_view.add_argument("--metric", choices=METRICS, default="logits", help="what the colours show (default: logits)")
    lens_view.add_argument("--layers", type=parse_layers, metavar="SPEC",
                           help="rows: a stride (2) or a list (0,5,11 or embed,h.5); see below (default: all)")
    lens_view.add_argument("--range", type=parse_range, metavar="START:END", help="positions to decode (default: all)")
    lens_view.add_argument("--max-positions", type=positive_int, metavar="N",
                           help="most positions in one figure or report, the last ones of the range "
                           f"(default: 20 in a figure, {REPORT_POSITIONS} in a report)")
    lens_view.add_argument("--kl-max", type=positive_float, default=10.0, metavar="NATS",
                           help="top of the KL colour scale (default: 10)")
    lens_view.add_argument("--title", help="the figure title's first line (the decoder line stays below it)")
    lens_view.add_argument("--attention", type=parse_blocks, metavar="BLOCKS",
                           help="in an HTML report, also the attention patterns of these blocks (5 or 0,5,11): "
                           "which earlier tokens each position reads, per head")
    lens_view.add_argument("--dpi", type=positive_int, default=150, help="image resolution (default: 150)")
    lens_how = lens.add_argument_group("how rows are decoded")
    lens_how.add_argument("--decoder", choices=DECODER_CHOICES,
                          help="how a row becomes logits (default: logit, the model's own ln_f; ln_f is the same)")
    lens_how.add_argument("--last-blocks", type=positive_int, metavar="K",
                          help="with --decoder last_blocks: run the last K blocks before ln_f (a row at or above "
                          "block L-K runs only the blocks above it, so the top row is the model's output)")
    lens_how.add_argument("--lens", metavar="DIR_OR_ID",
                          help="decode with a tuned lens or probe: a folder from `minigpt tune`, or a name on the "
                          "tuned-lens Space such as gpt2 (instead of --decoder)")
    lens_how.add_argument("--sub-blocks", action="store_true", help="add a row after each attention (h.N.resid_mid)")
    lens_how.add_argument("--top-k", type=positive_int, default=5, metavar="K",
                          help=f"top tokens kept per cell in the JSON (default: 5; at least {TOP} with an HTML report)")
    lens.set_defaults(run=cmd_lens)
    add_eval_parser(commands)

    gen = commands.add_parser(
        "generate", help="continue a prompt",
        description="Sample a continuation of PROMPT and print it (the prompt itself is not repeated).",
        epilog="examples:\n  minigpt generate \"The dog\" --model gpt2 -n 20 --temperature 0\n"
        "  minigpt generate \"Once upon a time\" --model gpt2 -n 60 --top-k 40 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    gen.add_argument("prompt", metavar="PROMPT")
    gen.add_argument("--model", "-m", default="gpt2", help="name or path of the checkpoint (default: gpt2)")
    gen.add_argument("-n", "--max-new-tokens", dest="n", type=non_negative_int, default=40,
                     help="tokens to add (default: 40)")
    gen.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 is greedy decoding (default: 1.0)")
    gen.add_argument("--truncate", action="store_true",
                     help="keep the last prompt tokens that fit in the context beside the new ones")
    gen.add_argument("--top-k", type=positive_int, help="sample only among the K likeliest tokens")
    gen.add_argument("--seed", type=int, help="seed the sampling, for repeatable output")
    gen.add_argument("--device", help="torch device, e.g. cpu, cuda, mps (default: cpu)")
    gen.set_defaults(run=cmd_generate)

    dl = commands.add_parser(
        "download", help="fetch a checkpoint from the hub into a directory",
        description="Download a checkpoint (through the Hugging Face cache) and copy model.safetensors, "
        "config.json, vocab.json and merges.txt into a directory, to use offline as --model DIR.",
        epilog="examples:\n  minigpt download gpt2\n  minigpt download gpt2-xl --dir weights/gpt2-xl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    dl.add_argument("name", metavar="NAME", help="a preset (gpt2, ..., distilgpt2) or a hub id")
    dl.add_argument("--dir", type=Path, help="where to put the files (default: weights/NAME)")
    dl.set_defaults(run=cmd_download)
    add_train_parser(commands)
    add_tune_parser(commands)
    from . import attribute_cli  # `minigpt attribute`: the whole command is in that one file

    attribute_cli.add_parser(commands)
    for sub in commands.choices.values():  # `minigpt lens ... --debug` works as well as `minigpt --debug lens ...`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return parser


def version() -> str:
    from . import __version__

    return __version__


def one_line(error: BaseException) -> str:
    # Some library messages span lines; the CLI promises one.
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `minigpt` command with `argv` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's one-line usage error
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.run(args)
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


if __name__ == "__main__":
    sys.exit(main())
