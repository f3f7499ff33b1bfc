"""Retrain the shipped `shakespeare` model with the settings in its card, and compare the validation losses.

    python benchmarks/reproduce_shakespeare.py [--out weights/shakespeare-repro] [--text PATH]

Runs the exact `minigpt train` command of `minigpt/assets/shakespeare/README.md` (its "Reproduce"
section), writing to --out instead, then evaluates the new model and the shipped one on the same
held-out windows and reports the difference (the target: within 0.1 nats) and the time it took.
Exits 1 when the difference is larger. It trains for real: about as long as the card says.

    python benchmarks/reproduce_shakespeare.py --ship weights/shakespeare

is how the shipped copy was made from a finished run: config.json, model.safetensors and the
card, with a header saying how to load it by name.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

import minigpt
from minigpt.cli import main as minigpt_main
from minigpt.sources import asset_path
from minigpt.train import TrainSettings, split, val_loss, windows

SHIPPED = asset_path("shakespeare")
TARGET_NATS = 0.1
SHIPPED_HEADER = """\
# shakespeare: the small GPT-2 shipped with minigpt

Load it by name, offline and without asking the hub: `minigpt.GPT.from_pretrained("shakespeare")`,
`minigpt.load_tokenizer("shakespeare")`, `minigpt lens "..." --model shakespeare -o lens.png`.
This folder (`minigpt/assets/shakespeare/`) keeps `config.json`, `model.safetensors` (float16;
minigpt upcasts it to float32) and this card; the tokenizer is the GPT-2 one bundled with minigpt
(`minigpt/assets/gpt2.tiktoken`), so `vocab.json` and `merges.txt` are not repeated here.

Below is the card `minigpt train` wrote for the run. To retrain it and compare the validation loss:
`python benchmarks/reproduce_shakespeare.py` (the "Reproduce" command, run from the repository root).
Its time was measured on a 2-core machine shared with other jobs (load average 5 to 7 throughout);
when the machine was nearly idle (load average 1), a step took 2.3 s: the run would take about 13 minutes.

"""


def card_command(card: Path) -> list[str]:
    """The `minigpt train` command of a model card's "Reproduce" section, as argv."""
    text = card.read_text(encoding="utf-8")
    block = text.split("## Reproduce\n```\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(block)
    if argv[:2] != ["minigpt", "train"]:
        sys.exit(f"{card}: the Reproduce section holds no `minigpt train` command")
    return argv[1:]


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def held_out_loss(model: minigpt.GPT, text: str, settings: TrainSettings) -> float:
    ids = torch.tensor(minigpt.load_tokenizer("gpt2").encode_ordinary(text))
    _, val_ids = split(ids, settings)
    return val_loss(model, windows(val_ids, settings.context), settings.batch_size)


def ship(run: Path) -> None:
    SHIPPED.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(run / name, SHIPPED / name)
    card = (run / "README.md").read_text(encoding="utf-8")
    card = card.split("\n", 1)[1].lstrip("\n")  # the run's own title gives way to the header
    (SHIPPED / "README.md").write_text(SHIPPED_HEADER + card, encoding="utf-8")
    print(f"copied {run} into {SHIPPED}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/shakespeare-repro"), help="where to retrain")
    parser.add_argument("--text", help="the training text, if not at the card's path")
    parser.add_argument("--ship", type=Path, metavar="RUN", help="copy a finished run into the package instead")
    args = parser.parse_args()
    if args.ship:
        ship(args.ship)
        return 0

    argv = with_option(card_command(SHIPPED / "README.md"), "--out", str(args.out))
    if args.text:
        argv[1] = args.text
    print("running: minigpt " + shlex.join(argv), flush=True)
    start = time.perf_counter()
    if minigpt_main(argv) != 0:
        return 1
    minutes = (time.perf_counter() - start) / 60

    from minigpt.train import saved_settings

    settings = saved_settings(args.out)
    text = Path(argv[1]).read_text(encoding="utf-8")
    ours = held_out_loss(minigpt.GPT.from_pretrained(args.out), text, settings)
    shipped = held_out_loss(minigpt.GPT.from_pretrained("shakespeare"), text, settings)
    diff = ours - shipped
    print(f"retrained in {minutes:.1f} min: val loss {ours:.4f} nats; shipped model {shipped:.4f} nats; "
          f"difference {diff:+.4f} (target: within {TARGET_NATS})")  # fmt: skip
    return 0 if abs(diff) <= TARGET_NATS else 1


if __name__ == "__main__":
    sys.exit(main())
