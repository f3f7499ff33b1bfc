"""The package's structure: no import circles, structure as data, and the files kept apart.

The import graph is read from the source (every `import` a module makes, at the top or inside a
function; `if TYPE_CHECKING:` blocks never run, so they are left out). A circle through a lazy
import still couples two modules, so the only ones allowed are the two documented in the code:
`GPT.from_pretrained` -> the loader, and `LensResult._repr_html_` -> the report.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from minigpt import LensError, LensResult, logit_lens
from minigpt.lens import DecoderSpec, Row

from conftest import TINY  # noqa: F401  (the tiny checkpoint's shape)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minigpt"
ALLOWED = {("minigpt.model", "minigpt.load"), ("minigpt.lens.result", "minigpt.report")}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path, modules: set[str]) -> set[tuple[str, bool]]:
    """(module imported, lazily?) for each minigpt module that `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}  # fmt: skip
    top = {id(n) for n in tree.body}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:  # a module's own parent packages are imported before it anyway: not an edge
            if t in modules and t != me and not me.startswith(t + "."):
                found.add((t, id(node) not in top))
    return found


def graph() -> dict[str, set[tuple[str, bool]]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def circles(edges: dict[str, set[tuple[str, bool]]]) -> set[tuple[str, str]]:
    """Every edge a -> b from which a can be reached again."""
    nxt = {a: {b for b, _ in e} for a, e in edges.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(nxt.get(m, ()))
        return False

    return {(a, b) for a, e in edges.items() for b, _ in e if reaches(b, a)}


def test_no_import_circles_but_the_two_documented_ones() -> None:
    edges = graph()
    assert ("minigpt.model", "minigpt.load") in circles(edges)  # the loader builds a GPT: this one is a circle
    lazy = {(a, b) for a, e in edges.items() for b, is_lazy in e if is_lazy}
    assert ALLOWED <= lazy  # both are lazy imports inside a function
    # every other circle would pass through neither of the two allowed edges
    for a, b in ALLOWED:
        edges[a] = {(t, lz) for t, lz in edges[a] if t != b}
    assert circles(edges) == set(), f"import circles: {sorted(circles(edges))}"


def test_the_circle_check_sees_a_circle(tmp_path: Path) -> None:
    edges = {"minigpt.a": {("minigpt.b", False)}, "minigpt.b": {("minigpt.a", True)}, "minigpt.c": {("minigpt.a", False)}}
    assert circles(edges) == {("minigpt.a", "minigpt.b"), ("minigpt.b", "minigpt.a")}


def test_tokenizer_and_loader_are_apart() -> None:
    edges = graph()
    assert "minigpt.load" not in {t for t, _ in edges["minigpt.tokenizer"]}
    assert "minigpt.tuned" not in {t for t, _ in edges["minigpt.tuned_train"]}


def test_one_reader_of_proc_cpuinfo_and_one_atomic_writer() -> None:
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    assert [p.name for p, s in sources.items() if '"/proc/cpuinfo"' in s] == ["_matmul.py"]
    assert [p.name for p, s in sources.items() if "os.replace(" in s] == ["files.py"]
    assert [p.name for p, s in sources.items() if "hf_hub_download(" in s] == ["sources.py"]


# ----------------------------------------------------------------------------
# Labels are for display: rows are found by their place


def test_rows_are_found_by_place(tiny_checkpoint) -> None:
    import minigpt

    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    result = logit_lens(model, [1, 2, 3, 4, 5], sub_blocks=True)
    i = result.row(Row.mid(1))
    assert result.rows[i] == Row.mid(1) and result.row(("resid_mid", 1)) == i
    assert result.row(("embed", -1)) == 0 and result.row(Row.post(1)) == len(result.rows) - 1
    with pytest.raises(LensError, match=r"no row at \('resid_post', 7\)"):
        result.row(("resid_post", 7))
    with pytest.raises(LensError, match="a row is a Row, a \\(site, block\\) pair"):
        result.row(3.5)  # type: ignore[arg-type]


def test_a_hand_built_result_carries_its_structure(tiny_checkpoint) -> None:
    import dataclasses

    import minigpt

    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    result = logit_lens(model, [1, 2, 3])
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    with pytest.raises(LensError, match="0.1's file format; pass a DecoderSpec"):
        LensResult(**{**fields, "decoder": "last_blocks:2"})
    with pytest.raises(LensError, match="needs blocks= and sites="):
        LensResult(**{**fields, "blocks": None})
    same = LensResult(**{**fields, "decoder": "logit"})
    assert same.decoder == DecoderSpec.from_dict({"name": "logit"})
    np.testing.assert_array_equal(same.blocks, result.blocks)


# ----------------------------------------------------------------------------
# Files get the user's umask, like any other file (safetensors alone would write 0600)


def test_weights_files_get_the_users_umask(tmp_path, tiny_checkpoint) -> None:
    import os
    import stat

    import torch

    import minigpt
    from minigpt.train import save_checkpoint

    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    old = os.umask(0o022)
    try:
        lens = minigpt.TunedLens.from_model(model)
        lens.save(tmp_path / "lens")
        minigpt.TunedLens.fit(model, list(range(1, 30)) * 4, steps=1, tokens_per_step=16, window=16, out=tmp_path / "run")
        save_checkpoint(model, tmp_path / "model", torch.float32)
        os.umask(0o027)
        lens.save(tmp_path / "lens-027")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    for name in ("lens/lens.safetensors", "lens/config.json", "run/lens.safetensors", "run/train_state.safetensors",
                 "run/train_state.json", "model/model.safetensors", "model/config.json"):
        assert modes[name] == 0o644, (name, oct(modes[name]))
    assert modes["lens-027/lens.safetensors"] == 0o640
    assert not [name for name in modes if name.endswith(".tmp")]


def test_the_readme_s_first_command_leaves_no_untracked_figure() -> None:
    """`minigpt lens ... -o lens.png` at the repository root writes a PNG that git ignores (issue 18, item 27)."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name, ignored in (("lens.png", True), ("plasma.png", True), ("examples/figures/lens_kl.png", False)):
        done = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=ROOT)
        assert (done.returncode == 0) == ignored, name
