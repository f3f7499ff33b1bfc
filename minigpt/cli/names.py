"""The library's names that `--help` shows, copied here so that `minigpt --help` and `minigpt lens --help`
never import torch (every library module does). tests/test_cli_jobs.py checks each one against the
library, so a copy cannot drift."""

from __future__ import annotations

METRICS = ("logits", "probs", "ranks", "kl", "input_ranks", "input_kl", "depth")  # minigpt.lens.METRICS
DECODERS = ("logit", "ln_f_no_bias", "norm_only", "last_blocks")  # minigpt.lens.DECODERS
ALIASES = ("ln_f",)  # minigpt.lens.ALIASES: "ln_f" is the permanent alias of "logit"
DECODER_CHOICES = (*DECODERS, *ALIASES)
MATMULS = ("exact", "onednn", "bf16")  # minigpt.lens.MATMULS
CURVES = ("kl", "entropy", "ce", "ce_input", "surprisal", "top1_agreement", "top1_accuracy", "top1_input", "prec@1")  # lens.corpus.CURVE_METRICS
REPORT_POSITIONS = 256  # minigpt.report.MAX_POSITIONS
TOP = 10  # minigpt.report.TOP: tokens per cell in a report's hover list
PRESETS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")  # minigpt.load.HUB_REPOS
SHIPPED = "shakespeare"  # minigpt.load.BUNDLED: the model that ships inside the package
DEVICES = "cpu, cuda, cuda:N or mps"
