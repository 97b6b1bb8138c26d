"""Imports run one way: image -> encoder -> rate_control -> bitstream -> decoder -> image, on the codec core.

- models/ (the codec core) imports none of the packages above it;
- decoder/ (the normative part, shipped alone in the container) imports only models/;
- nothing that ships or evaluates imports training/ (what trains is apart from what ships).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("models", "decoder", "encoder", "rate_control", "training", "evaluation", "conformance")
# package -> project packages it may import
ALLOWED = {
    "models": set(),
    "decoder": {"models"},
    "encoder": {"models", "decoder", "rate_control"},
    "rate_control": {"models", "decoder"},
    "evaluation": {"models", "decoder", "encoder", "rate_control", "conformance"},   # package runs the suite
    "conformance": {"models", "decoder", "encoder", "rate_control"},
    "training": {"models", "decoder", "encoder", "evaluation"},
}
# Leaf modules anyone above the codec core may import: they import nothing of the project.
# evaluation.metrics owns PSNR/MS-SSIM/VMAF and evaluation.datasets the data paths, for everyone above the core.
LEAVES = {"evaluation.metrics", "evaluation.datasets"}
# What the encoder side may use of the decoder: the bitstream syntax it writes, and (rate control only) the
# normative parse that verifies each stream before it is handed out. Models, reconstruction and PNG/CLI
# helpers come from models/, so nothing else in decoder/ serves as a utility.
DECODER_FACES = {"encoder": {"decoder.bitstream"}, "rate_control": {"decoder.decode"}}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported project module) of every absolute import in a file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        out += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES]
    return out


def decoder_imports(path: Path) -> list[tuple[int, str]]:
    """(line, decoder module) of every import of decoder/, `from decoder import x` read as decoder.x."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "decoder"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "decoder":
            out += [(node.lineno, f"decoder.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("decoder."):
            out.append((node.lineno, node.module))
    return out


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for pkg, faces in DECODER_FACES.items():
        for f in sorted((root / pkg).rglob("*.py")):
            bad += [f"{f.relative_to(root)}:{line}: uses {mod}" for line, mod in decoder_imports(f) if mod not in faces]
    for pkg, allowed in ALLOWED.items():
        for f in sorted((root / pkg).rglob("*.py")):
            for line, mod in project_imports(f):
                top = mod.split(".")[0]
                leaf_ok = mod in LEAVES and pkg not in ("models", "decoder")
                if top != pkg and top not in allowed and not leaf_ok:
                    bad.append(f"{f.relative_to(root)}:{line}: imports {top}")
    for leaf in LEAVES:
        f = root / (leaf.replace(".", "/") + ".py")
        if f.exists():
            bad += [f"{leaf} is no leaf: line {line} imports {mod}" for line, mod in project_imports(f)]
    return bad


def test_imports_run_one_way():
    assert violations() == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The rule can fail: a models/ module importing the decoder is reported, lazy imports included."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "models" / "x.py").write_text("def f():\n    from decoder import decode\n")
    (tmp_path / "decoder" / "y.py").write_text("import training.train\n")
    (tmp_path / "encoder" / "z.py").write_text("from decoder import bitstream\nfrom decoder.decode import ModelCache\n")
    assert violations(tmp_path) == ["encoder/z.py:2: uses decoder.decode",
                                    "models/x.py:2: imports decoder", "decoder/y.py:1: imports training"]


@pytest.mark.parametrize("pkg", ["models", "decoder"])
def test_core_packages_import_no_jax_at_module_level(pkg):
    """The decoder container has no JAX: models/ and decoder/ may only import it inside functions."""
    for f in sorted((ROOT / pkg).glob("*.py")):
        for node in ast.parse(f.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("jax", "optax") for n in names), f"{f.name}:{node.lineno}"
