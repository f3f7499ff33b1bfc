"""The examples run: every script on the small random checkpoint, and the notebook through a kernel.

The pictures mean nothing on random weights; these tests keep the examples working (the
public API they use, the files they promise) so that they run when someone tries them with gpt2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = {
    "gpt3_abstract.py": [f"gpt3_abstract_{m}_{i}.png" for m in ("logits", "ranks", "kl") for i in (1, 2)],
    "plasma.py": ["plasma_logits.png", "plasma_ranks.png", "plasma_first_input_ranks.png", "plasma_first_input_kl.png"],
    "repetition.py": [f"repetition_{m}_copy{c}.png" for m in ("ranks", "kl") for c in (2, 4)],
    "four_lenses.py": ["four_lenses.md", "four_lenses.png"],
    "readme_figures.py": [f"lens_{m}.png" for m in ("logits", "ranks", "kl", "input_kl")] + ["attribution.png",
                                                                                           "generation.png",
                                                                                           "readme_figures.json"],
}
FIGURES = EXAMPLES / "figures"  # the README's figures, committed: readme_figures.py's output


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)  # (H, W, 3 or 4)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert image[..., :3].std() > 0.05, f"{path} is (nearly) one flat colour"


def test_every_script_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_writes_its_figures(script: str, vocab_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--model", str(vocab_checkpoint), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(SCRIPTS[script])
    for name in SCRIPTS[script]:
        if name.endswith(".png"):
            check_png(out / name)
        assert str(out / name) in done.stdout  # the script says what it wrote


def test_notebook_runs(vocab_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "walkthrough.ipynb", as_version=4)
    # The committed notebook carries no outputs: they would be stale, and noisy in diffs.
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in notebook.cells if c.cell_type == "code")
    monkeypatch.setenv("MINIGPT_MODEL", str(vocab_checkpoint))  # the kernel inherits this environment
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("max |difference|" in o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # both figures rendered


def test_the_notebook_instruction_installs_what_it_needs() -> None:
    """examples/README.md's notebook command installs the `notebook` extra, and that extra brings a Jupyter front end."""
    import tomllib

    pyproject = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text(encoding="utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["notebook"]
    assert any(req.startswith("jupyterlab") for req in extra) and any(req.startswith("ipykernel") for req in extra)
    line = next(l for l in (EXAMPLES / "README.md").read_text(encoding="utf-8").splitlines() if "walkthrough.ipynb" in l and "jupyter lab" in l)
    assert '".[notebook]"' in line and line.index("[notebook]") < line.index("jupyter lab")


def test_the_readme_figures_are_the_scripts_output(tmp_path: Path) -> None:
    """The committed README figures come from readme_figures.py on the shipped model: a fresh run gives the
    same numbers (PNG bytes depend on the matplotlib and freetype versions, so they are not compared)."""
    import json

    import numpy as np

    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, str(EXAMPLES / "readme_figures.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in FIGURES.iterdir()) == sorted(SCRIPTS["readme_figures.py"])
    fresh, committed = (json.loads((d / "readme_figures.json").read_text(encoding="utf-8")) for d in (out, FIGURES))
    for key in ("labels", "tokens", "token_ids"):
        assert fresh[key] == committed[key], key
    clear = np.array(committed["top_gap"]) > 1e-3  # a near-tie may flip on another CPU's float rounding
    assert (np.array(fresh["top1"])[clear] == np.array(committed["top1"])[clear]).all()
    for key in ("kl_final", "kl_input", "attribution", "attribution_total"):
        np.testing.assert_allclose(fresh[key], committed[key], atol=1e-3, rtol=1e-3, err_msg=key)
    assert fresh["attribution_labels"] == committed["attribution_labels"]
    for name in SCRIPTS["readme_figures.py"][:-1]:
        check_png(FIGURES / name)
        assert f"examples/figures/{name}" in (EXAMPLES.parent / "README.md").read_text(encoding="utf-8"), name
