"""`minigpt lens`: the logit lens of one text, as a figure, an HTML report and/or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import group, setting
from .args import UsageError, parse_blocks, parse_layers, parse_range, positive_float, positive_int
from .groups import Decoding, ModelSource, Output, Text
from .lenses import load_lens
from .io import check_image_format, check_output, is_report, is_stdout, keep_last, note, plural, read_text
from .names import METRICS, REPORT_POSITIONS, TOP

if TYPE_CHECKING:
    from ..model import GPTConfig

METRIC_HELP = {
    "logits": "each cell: the row's top-1 token, coloured by its logit",
    "probs": "each cell: the row's top-1 token, coloured by its probability",
    "ranks": "rank of the model's final top-1 token in each row (1 = the row already predicts it)",
    "kl": "KL(p_final || p_row) in nats: how far each row is from the model's output",
    "input_ranks": "rank of the input token in each row (does the row still 'see' its input?)",
    "input_kl": "KL(p_input || p_row) in nats, p_input being the embed row's distribution",
    "depth": "prediction depth: light from the row up which every row's top-1 is the final top-1",
}

DESCRIPTION = """\
Decode the residual stream after every block into next-token predictions, and plot them
(rows: layers, bottom to top; columns: input positions)."""

EPILOG = """\
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
  minigpt lens "ROMEO: But soft, what light through yonder window breaks?" --model shakespeare -o lens.png
  minigpt lens "Sometimes, when people say plasma, they mean a state of matter." --model gpt2 -o lens.png
  minigpt lens --text-file abstract.txt --model gpt2-xl --metric ranks --range 95:105 --layers 2 -o ranks.png
  minigpt lens "The dog ran" --model weights/gpt2 --metric kl --sub-blocks --json lens.json -o kl.png
  minigpt lens --text-file book.txt --model gpt2 --truncate --range=-20: -o tail.png
  minigpt lens "The dog ran" --model gpt2 --decoder last_blocks --last-blocks 2 -o lens.png
  minigpt lens "The dog ran to the park" --model gpt2 --metric depth -o depth.png
  minigpt lens --text-file abstract.txt --model gpt2 --metric kl --attention 5 -o lens.html
""".format(metrics="\n".join(f"  {m:12} {h}" for m, h in METRIC_HELP.items()))


def check_top_k(k: int, config: GPTConfig) -> None:
    if k > config.vocab_size:  # logit_lens takes k <= V; checked here from config.json, before the weights
        raise ValueError(f"k {k} > vocabulary {config.vocab_size}")


TOP_K_SAYS = "{flag} {value} is more than the vocabulary of {config.vocab_size} tokens; use at most that"


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt lens`."""

    text: Text = group(Text, "input", only=("text", "text_file", "truncate"))
    model: ModelSource = group(ModelSource, "the model")
    output: Output = group(Output, "output (at least one)", changes={
        "output": {"metavar": "PNG", "help": "image to write (.png, .svg, .pdf, ...), or .html: an interactive report (one offline file)"},
        "json": {"help": "write every statistic as JSON (NaN as null; all positions of --range); '-' for stdout"},
        "title": {"help": "the figure title's first line (the decoder line stays below it)"},
    })  # fmt: skip
    metric: str = setting("logits", "--metric", choices=METRICS, help="what the colours show")
    layers: int | tuple[str, ...] | None = setting(None, "--layers", parse=parse_layers, metavar="SPEC",
                                                   help="rows: a stride (2) or a list (0,5,11 or embed,h.5); see below (default: all)")  # fmt: skip
    range: slice | None = setting(None, "--range", parse=parse_range, metavar="START:END", help="positions to decode (default: all)")
    max_positions: int | None = setting(None, "--max-positions", parse=positive_int, metavar="N",
                                        help="most positions in one figure or report, the last ones of the range "
                                        f"(default: 20 in a figure, {REPORT_POSITIONS} in a report)")  # fmt: skip
    kl_max: float = setting(10.0, "--kl-max", parse=positive_float, metavar="NATS", help="top of the KL colour scale")
    attention: tuple[int, ...] | None = setting(None, "--attention", parse=parse_blocks, metavar="BLOCKS",
                                                help="in an HTML report, also the attention patterns of these blocks (5 or 0,5,11): "
                                                "which earlier tokens each position reads, per head")  # fmt: skip
    decoding: Decoding = group(Decoding, "how rows are decoded", only=("decoder", "last_blocks", "lens", "lens_kind", "sub_blocks"), changes={
        "decoder": {"action": None, "help": "how a row becomes logits (default: logit, the model's own ln_f; ln_f is the same)"},
        "lens": {"action": None, "help": "decode with a tuned lens or probe: a folder from `minigpt tune`, or a name on the "
                 "tuned-lens Space such as gpt2 (instead of --decoder); with --lens-kind jacobian, a J-lens .pt file"},
    })  # fmt: skip
    top_k: int = setting(5, "--top-k", parse=positive_int, metavar="K", check=check_top_k, says=TOP_K_SAYS,
                         help=f"top tokens kept per cell in the JSON (at least {TOP} with an HTML report)")

    def check(self) -> None:
        """What the options say of each other, before any file is read."""
        self.text.check()
        out = self.output
        if out.output is None and out.json is None:
            raise UsageError("nothing to write: give -o PNG (or -o NAME.html) and/or --json PATH")
        if self.attention is not None and not is_report(out.output):
            raise UsageError("--attention goes into an HTML report: give -o NAME.html")
        if is_report(out.output) and self.layers is not None:
            raise UsageError("--layers picks a figure's rows; an HTML report shows every row and has a stride control")
        self.decoding.check(lens_is_the_decoder=True)

    def check_rows(self, config: GPTConfig) -> None:
        """--layers and --attention against the model's rows (config.json), before the weights."""
        from ..lens import row_labels

        L, sub = config.n_layer, self.decoding.sub_blocks
        labels = row_labels(L, sub)
        if isinstance(self.layers, int) and self.layers > L:
            raise UsageError(f"--layers {self.layers} is a stride (every {self.layers}th block), but the model has "
                             f"{L} blocks; use a stride of 1 to {L}, or name rows: --layers h.0,h.{L - 1}")  # fmt: skip
        if isinstance(self.layers, tuple):
            unknown = [s for s in self.layers if s not in labels]
            if unknown and not sub and all(s in row_labels(L, True) for s in unknown):
                raise UsageError(f"--layers {', '.join(unknown)}: a sub-block row; add --sub-blocks to decode it")
            if unknown:
                raise UsageError(f"--layers: no row {', '.join(unknown)}; this model's rows are {summary(labels)}")
        if self.attention is not None and max(self.attention) >= L:
            raise UsageError(f"--attention: this model's blocks are 0..{L - 1}, not {max(self.attention)}")


def run(job: Job, given: frozenset[str]) -> int:
    import torch

    from . import load, load_config
    from ..errors import InputError, LensError
    from ..lens import logit_lens, resolve_positions
    from .args import check_settings

    job.check()
    out, report = job.output, is_report(job.output.output)
    max_positions = job.max_positions or (REPORT_POSITIONS if report else 20)
    device = job.model.torch_device()
    text = read_text(job.text.text, job.text.text_file)
    if not text:
        raise InputError("the text is empty: give the lens at least one token")
    if out.output is not None:
        check_output(out.output, "-o")
        if not report:
            check_image_format(out.output)
    if out.json is not None and not is_stdout(out.json):
        check_output(out.json, "--json")
    name = job.model.name()
    config = load_config(name)  # the options that depend on the model's shape, before the weights
    check_settings(job, config)
    job.check_rows(config)
    job.decoding.check_lenses(config)

    model, tok = load(name, device)
    lenses = job.decoding.lenses()
    decoder = load_lens(lenses[0], model, job.decoding.lens_kind) if lenses else next(iter(job.decoding.built().values()))
    ids = tok.encode_ordinary(text)  # "<|endoftext|>" inside a text is ordinary text, not the special token
    n_ctx = model.config.n_positions
    ids = keep_last(ids, n_ctx, job.text.truncate, "lens",
                    f"the text is {len(ids)} tokens, more than the model's context of {n_ctx}; "
                    f"pass --truncate to keep the last {n_ctx} tokens, or shorten the text")  # fmt: skip
    try:  # the library's one positions rule: clamped like a Python slice
        span = resolve_positions(job.range, len(ids))
    except LensError:
        raise InputError(f"--range {range_text(job.range)} selects no position: the text has {plural(len(ids), 'token')}; "
                         f"use START:END within 0:{len(ids)}") from None  # fmt: skip
    lo, hi = span.start, span.stop
    if hi - lo > max_positions:
        if out.output is not None:
            shown = f"the last {max_positions} of {hi - lo} positions"
            note(f"lens: the {'report' if report else 'figure'} shows {shown} (choose with --range or --max-positions)")
        if out.json is None:
            lo = hi - max_positions  # the figure or report needs no more: decode only what it shows
    rows = len(job_rows(config, job.decoding.sub_blocks))
    note(f"lens: {plural(len(ids), 'token')}, decoding {plural(rows, 'row')} x {plural(hi - lo, 'position')} "
         f"(decoder {decoder.name}) ...")  # fmt: skip
    k = min(max(job.top_k, TOP), config.vocab_size) if report else job.top_k  # a report shows the top 10
    result = logit_lens(model, torch.tensor(ids), tokenizer=tok, decoder=decoder, k=k,
                        sub_blocks=job.decoding.sub_blocks, positions=slice(lo, hi))  # fmt: skip
    if is_stdout(out.json):
        print(result.to_json())
    elif out.json is not None:
        result.to_json(out.json)
        note(f"lens: wrote {out.json}")
    if report:
        save_report(result, job, model, torch.tensor(ids), slice(max(lo, hi - max_positions), hi), max_positions)
    elif out.output is not None:
        from ..plot import plot_lens  # matplotlib only now: `minigpt generate` never imports it

        fig = plot_lens(result, job.metric, layers=list(job.layers) if isinstance(job.layers, tuple) else job.layers,
                        max_positions=max_positions, sub_blocks=job.decoding.sub_blocks, kl_max=job.kl_max,
                        title=out.title)  # fmt: skip
        fig.savefig(out.output, dpi=out.dpi, bbox_inches="tight")
    if out.output is not None:
        note(f"lens: wrote {out.output}")
    return 0


def job_rows(config: GPTConfig, sub_blocks: bool) -> list[str]:
    from ..lens import row_labels

    return row_labels(config.n_layer, sub_blocks)


def save_report(result, job: Job, model, ids, shown: slice, max_positions: int) -> None:  # noqa: ANN001
    from ..attention import attention_patterns
    from ..report import lens_html

    attention = None
    if job.attention is not None:  # the positions the report shows, however many the user asked for
        size = shown.stop - shown.start
        attention = attention_patterns(model, ids, blocks=list(job.attention), positions=shown, max_positions=size)
    attribution = None
    if result.decoder.name == "logit":  # a click on a cell shows which components wrote its top-1
        from ..attribution import report_attribution

        attribution = report_attribution(model, ids, result, max_positions=max_positions)
    page = lens_html(result, attention=attention, attribution=attribution, metric=job.metric,
                     max_positions=max_positions, kl_max=job.kl_max, title=job.output.title)  # fmt: skip
    Path(job.output.output).write_text(page, encoding="utf-8")


def summary(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 8 else f"{', '.join(labels[:4])}, ..., {', '.join(labels[-2:])}"


def range_text(s: slice) -> str:
    return f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"
