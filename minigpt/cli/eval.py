"""`minigpt eval`: the lens over a whole corpus, per row and decoder, with bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..settings import group, setting
from .args import UsageError, parse_list, positive_int
from .groups import Decoding, ModelSource, Output, Text
from .lenses import load_lens, patchscope
from .io import check_image_format, check_output, is_report, is_stdout, note, open_lines, plural, read_text
from .names import CURVES

if TYPE_CHECKING:
    from ..lens import CorpusResult

DESCRIPTION = "Evaluate the lens over a whole text, every row and decoder, with bounded memory."

EPILOG = """\
what it computes:
  For every decoder and row (embed, h.0, ..., the last block, which is the model's output), the
  mean over the corpus' positions of: KL(p_final || p_row), the entropy, the cross-entropy against
  the next token and -log p(input token), all in bits per token; the top-1 agreement with the
  model's top-1, the top-1 accuracy against the next and the input token; and a histogram of
  prediction depths. The JSON (--json) has all of them with standard errors, and tuned-lens'
  layout in bits per byte ("layer_i" reads resid[i], HF's hidden_states[i]). A table goes to stdout.
  Each --lens is labelled by what you gave (its folder or name), beside each --decoder.

windows:
  The text is tokenized and cut into consecutive windows of --window tokens (default: the model's
  context); the last, shorter window is kept. With --lines each non-empty line is a document, and
  documents are joined with <|endoftext|>. --tokens N evaluates the first N tokens only.

examples:
  minigpt eval --text-file corpus.txt --model gpt2 --tokens 20000 -o curves.png --json metrics.json
  minigpt eval --text-file corpus.txt --model gpt2 --decoder logit --decoder norm_only --decoder last_blocks --last-blocks 2 -o curves.png
  minigpt eval --text-file corpus.txt --model gpt2 --decoder norm_only --lens lenses/gpt2 --lens gpt2
  minigpt eval --text-file docs.txt --lines --model gpt2 --window 256 --json -
"""

PROBE_NOTE = ("(the probe's next-token KL and cross-entropy mean nothing: it is trained to name the input token; "
              "read its ce_input and top1_input)")  # fmt: skip


@dataclass(frozen=True)
class Job:
    """Settings of `minigpt eval`."""

    text: Text = group(Text, "input", only=("text_file", "lines", "tokens", "window"), changes={
        "text_file": {"required": True, "help": "the corpus, a UTF-8 file ('-' for stdin)"},
        "tokens": {"help": "evaluate the first N tokens only"},
    })  # fmt: skip
    model: ModelSource = group(ModelSource, "the model")
    batch_size: int | None = setting(None, "--batch-size", parse=positive_int, metavar="B",
                                     help="windows per forward pass (default: ~2048 tokens)")
    output: Output = group(Output, "output", changes={
        "output": {"metavar": "PNG", "help": "a figure of the curves (.png, .svg, .pdf, ...)"},
        "json": {"help": "every metric as JSON; '-' for stdout (instead of the table)"},
    })  # fmt: skip
    curves: tuple[str, ...] = setting(("kl", "ce"), "--curves", parse=parse_list, metavar="LIST",
                                      help=f"the figure's panels, from {','.join(CURVES)} (default: kl,ce)", show_default=False)
    decoding: Decoding = group(Decoding, "how rows are decoded")

    def check(self) -> None:
        self.decoding.check(lens_is_the_decoder=False)
        unknown = [c for c in self.curves if c not in CURVES]
        if unknown or not self.curves:
            raise UsageError(f"--curves {','.join(unknown)}: choose from {','.join(CURVES)}")
        out = self.output.output
        if is_report(out):
            raise UsageError(f"-o {out}: minigpt eval draws a figure (.png, .svg, .pdf); the JSON is --json")


def run(job: Job, given: frozenset[str]) -> int:
    from . import load, load_config
    from .. import distributed
    from ..errors import InputError
    from ..lens import evaluate_lens
    from .args import check_settings

    job.check()
    device = distributed.local_device(job.model.torch_device())  # under torchrun, 'cuda' is each rank's own GPU
    out, text_file = job.output, job.text.text_file
    if out.output is not None:
        check_output(out.output, "-o")
        check_image_format(out.output)
    if out.json is not None and not is_stdout(out.json):
        check_output(out.json, "--json")
    text = None if job.text.lines else read_text(None, text_file)  # a whole text now; lines are streamed
    if text == "":
        raise InputError(f"--text-file {text_file} is empty: give the lens at least one token")
    lines = open_lines(text_file) if job.text.lines else None
    name = job.model.name()
    config = load_config(name)  # the options that depend on the model's shape, before the weights
    check_settings(job, config)
    job.decoding.check_lenses(config)
    decoders = dict(job.decoding.built())

    distributed.init_from_env(device)  # under torchrun: each rank evaluates its share of the windows
    model, tok = load(name, device)
    for spec in job.decoding.lenses():  # labelled by what the user gave, so two tuned lenses keep apart
        decoders[spec] = load_lens(spec, model, job.decoding.lens_kind)
    if job.decoding.patchscope:
        decoders["patchscope"] = patchscope(tok)
    result = evaluate_lens(
        model, text if lines is None else lines, tokenizer=tok, decoders=decoders, window=job.text.window,
        max_tokens=job.text.tokens, batch_size=job.batch_size, sub_blocks=job.decoding.sub_blocks,
        matmul=job.decoding.matmul, progress=True,
    )  # fmt: skip
    if not distributed.is_main():
        return 0  # rank 0 has every rank's numbers: it alone prints and writes
    note(f"eval: {plural(result.n_tokens, 'token')} in {plural(result.n_windows, 'window')} of {result.window}")
    probes = [label for label, d in decoders.items() if getattr(d, "kind", None) == "probe"]
    if is_stdout(out.json):
        print(result.to_json())
    else:
        print(eval_table(result, probes))
        if probes:
            print(PROBE_NOTE)
        if out.json is not None:
            result.to_json(out.json)
            note(f"eval: wrote {out.json}")
    if out.output is not None:
        from ..plot import plot_curves

        plot_curves(result, list(job.curves), title=out.title).savefig(out.output, dpi=out.dpi, bbox_inches="tight")
        note(f"eval: wrote {out.output}")
    return 0


def eval_table(result: CorpusResult, probes: list[str] = ()) -> str:  # type: ignore[assignment]
    """Per row: each decoder's KL (bits per token) and top-1 agreement, and for a probe the input
    columns it is read by (ce_input in bits, top1_input); the model's own CE under it."""
    columns = [(n, m, what) for n in result.metrics for m, what in
               ((("ce_input", "ce_input"), ("top1_input", "top1_input")) if n in probes else
                (("kl", "KL"), ("top1_agreement", "top-1")))]  # fmt: skip
    head = ["row"] + [f"{n} {what}" for n, _, what in columns]
    rows = [[label] + [f"{result.metrics[n][m][i]:.3f}" for n, m, _ in columns] for i, label in enumerate(result.labels)]
    width = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, width))) for r in [head] + rows]
    lines.append(f"the model: cross-entropy {result.baseline['ce']:.3f} bits per token, entropy {result.baseline['entropy']:.3f}")
    return "\n".join(lines)
