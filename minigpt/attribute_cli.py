"""`minigpt attribute`: which components wrote a token's logit (exact direct logit attribution).

    minigpt attribute "The capital of France is" --model gpt2 --target " Paris" --against " London" -o att.png
    minigpt attribute --text-file play.txt --model shakespeare --row h.2 --by neuron -o att.json

It prints the top components at one position as a table, and writes a figure (.png, .svg, .pdf), a
JSON file, or an HTML lens report (.html) in which clicking a cell opens that cell's attribution.
The whole command lives in this file (`add_parser`, `run`), so the CLI can register it in two lines.
Every option is checked before any weights load; an error is one line: exit 2 for a bad command
line, 1 for what goes wrong while running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .attribution import BY, HEADS

EPILOG = """\
the convention:
  A row's logit for token t is W_E[t] · (γ ⊙ (x − μ(x)) / σ(x) + β). With σ frozen at the row's full
  residual, centring is linear, so the components (embed, pos_embed, each block's heads and
  attn_bias, or neurons and mlp_bias, and ln_bias = W_E[t] · β) sum to the logit: the gap is float
  rounding only. A lower row (--row h.3) uses its own σ. With --against, the quantity is
  logit(target) − logit(against) (the same token twice gives zero everywhere).

examples:
  minigpt attribute "ROMEO: I love thee" --model shakespeare
  minigpt attribute "The capital of France is" --model gpt2 --target " Paris" --against " London" -o att.png
  minigpt attribute "The capital of France is" --model gpt2 --row h.8 --by neuron --top 20 -o att.json
  minigpt attribute "The dog ran to the park" --model gpt2 -o lens.html   (click a cell for its attribution)
"""

FORMATS = ("png", "svg", "pdf", "json", "html", "htm")


class _Usage(Exception):
    """A bad command line (exit 2)."""


class _Failure(Exception):
    """A failure while running (exit 1)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `attribute` to the `minigpt` command's subparsers."""
    p = subparsers.add_parser(
        "attribute", help="which components wrote a token's logit (direct logit attribution)",
        description="Split the logit of a token at one lens row into what each head, MLP (or neuron), the "
        "embeddings and ln_f's bias wrote, exactly, and print the top components.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to read (or use --text-file)")
    p.add_argument("--text-file", metavar="PATH", help="read the text from a UTF-8 file ('-' for stdin)")
    p.add_argument("--model", "-m", default="gpt2", help="name or path of the checkpoint (default: gpt2)")
    p.add_argument("--target", metavar="TOKEN",
                   help="a one-token text such as ' Paris' (mind the leading space) or a token id; "
                   "default: the model's own top-1 at the position")
    p.add_argument("--against", metavar="TOKEN", help="subtract this token's logit (a logit difference)")
    p.add_argument("--row", metavar="ROW", help="the lens row: embed, h.N or h.N.resid_mid (default: the top row)")
    p.add_argument("--by", choices=BY, default="head", help="how finely to split (default: head)")
    p.add_argument("--heads", choices=HEADS, default="folded",
                   help="folded: a head's input-dependent part, as TransformerLens (default); raw: z_h @ W_O[h]")
    p.add_argument("--position", type=int, metavar="N",
                   help="the position to show (0-based; negatives count from the end; default: the last)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="components in the table and the bars (default: 10)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write a figure (.png, .svg, .pdf), JSON (.json, every component at every position) "
                   "or an HTML lens report (.html) whose cells open their attribution")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cpu)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `minigpt attribute`; errors are one line on stderr (2: usage, 1: while running)."""
    from .errors import MinigptError

    try:
        return _run(args)
    except _Usage as e:
        print(f"minigpt attribute: error: {e} (see 'minigpt attribute --help')", file=sys.stderr)
        return 2
    except (_Failure, MinigptError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"minigpt: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _token(spec: str | None, tok, flag: str, V: int) -> int | None:
    """--target/--against as one token id: a number is an id, anything else a one-token text."""
    if spec is None:
        return None
    if spec.strip().isdigit() and spec == spec.strip():
        if int(spec) >= V:
            raise _Usage(f"{flag} {spec}: token ids go from 0 to {V - 1}")
        return int(spec)
    ids = tok.encode_ordinary(spec)
    if len(ids) != 1:
        raise _Usage(f"{flag} {spec!r} is {len(ids)} tokens {ids}, not one; give a single token such as ' Paris' "
                     "(with its leading space) or a token id")  # fmt: skip
    return ids[0]


def _run(args: argparse.Namespace) -> int:
    import torch

    from .lens import lens_rows

    # -- the command line, before anything loads
    if (args.text is None) == (args.text_file is None):
        raise _Usage("give the text either as a TEXT argument or with --text-file PATH")
    if args.top < 1:
        raise _Usage(f"--top {args.top}: give at least 1")
    out = args.output
    if out is not None:
        suffix = out.suffix.lstrip(".").lower()
        if suffix not in FORMATS:
            raise _Usage(f"-o {out}: unknown format {suffix or '(no suffix)'!r}; use .png, .svg, .pdf, .json or .html")
        if out.is_dir():
            raise _Failure(f"cannot write -o {out}: it is a directory; give a file name")
        if not out.absolute().parent.is_dir():
            raise _Failure(f"cannot write -o {out}: the folder {out.absolute().parent} does not exist; create it first")
    if args.device is not None:
        try:
            torch.device(args.device)
        except RuntimeError as e:
            raise _Usage(f"--device {args.device!r}: {e}") from None
    text = _read_text(args)
    if not text:
        raise _Failure("the text is empty: give at least one token")

    # -- what depends on the model's shape and tokenizer: its config.json and vocabulary, not its weights
    from .load import checkpoint_config
    from .tokenizer import load_tokenizer

    config = checkpoint_config(args.model)
    labels = [r.label for r in lens_rows(config.n_layer, sub_blocks=True)]
    if args.row is not None and args.row not in labels:
        raise _Usage(f"--row {args.row}: this model's rows are embed, h.0 .. h.{config.n_layer - 1} and "
                     f"h.N.resid_mid; the top row is h.{config.n_layer - 1}")  # fmt: skip
    if args.heads == "raw" and args.by == "component":
        raise _Usage("--heads goes with --by head or --by neuron (--by component keeps attention whole)")
    tok = load_tokenizer(args.model)
    target = _token(args.target, tok, "--target", config.vocab_size)
    against = _token(args.against, tok, "--against", config.vocab_size)
    ids = tok.encode_ordinary(text)
    if len(ids) > config.n_positions:
        raise _Failure(f"the text is {len(ids)} tokens, more than the model's context of {config.n_positions}; shorten it")
    position = len(ids) - 1 if args.position is None else args.position
    if not -len(ids) <= position < len(ids):
        raise _Usage(f"--position {args.position}: the text has {len(ids)} tokens; use 0 to {len(ids) - 1} (or -1 for the last)")
    position %= len(ids)

    # -- the work
    from .attribution import attribute
    from .model import GPT

    model = GPT.from_pretrained(args.model, device=args.device)
    report = out is not None and out.suffix.lower() in (".html", ".htm")
    att = attribute(model, torch.tensor(ids), tokenizer=tok, target=target, against=against, row=args.row,
                    by=args.by, heads=args.heads, positions=None if (out is not None and out.suffix.lower() == ".json") or report
                    else slice(position, position + 1))  # fmt: skip
    print(att.table(args.top, position))
    if out is None:
        return 0
    if out.suffix.lower() == ".json":
        att.to_json(out)
    elif report:
        _write_report(model, tok, ids, att, args, out)
    else:
        from .plot_attribution import plot_attribution

        plot_attribution(att, position=position, k=args.top).savefig(out, dpi=150, bbox_inches="tight")
    print(f"attribute: wrote {out}", file=sys.stderr)
    return 0


def _write_report(model, tok, ids: list[int], att, args: argparse.Namespace, out: Path) -> None:
    """The lens report of the text (every row, sub-blocks included) with each cell's attribution panel."""
    import torch

    from .attribution import report_attribution
    from .lens import logit_lens
    from .report import MAX_POSITIONS, TOP, lens_html

    span = slice(max(0, len(ids) - MAX_POSITIONS), len(ids))
    lens = logit_lens(model, torch.tensor(ids), tokenizer=tok, k=TOP, sub_blocks=True, positions=span)
    data = report_attribution(model, torch.tensor(ids), lens, k=args.top, by="neuron" if args.by == "neuron" else "head",
                              heads=args.heads)  # fmt: skip
    out.write_text(lens_html(lens, attribution=data, title=f"Logit lens and attribution ({args.model})"), encoding="utf-8")


def _read_text(args: argparse.Namespace) -> str:
    if args.text_file is None:
        return args.text
    try:
        text = sys.stdin.read() if args.text_file == "-" else Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Failure(f"cannot read --text-file {args.text_file}: {getattr(e, 'strerror', None) or e}") from None
    return text.removesuffix("\n")
