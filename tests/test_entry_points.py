"""The command-line entry points as a user meets them: the shell scripts' interpreter, an unwritable destination
refused before any work, one program name in usage and errors, and the demo's note of the model used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import KODAK, ROOT, one_line_error, run_cli

# --------------------------------------------------------------------------- no silent python3 fallback

def _fake_checkout(tmp_path: Path, script: str) -> Path:
    root = tmp_path / "checkout"
    (root / Path(script).parent).mkdir(parents=True)
    shutil.copy2(ROOT / script, root / script)
    (root / "models").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "models" / "python.sh", root / "models" / "python.sh")   # both scripts source it
    return root


def _run_script(root: Path, script: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RATELOCK_PYTHON"}
    env.update(env_extra or {})
    return subprocess.run([str(root / script), "in", "0.25", "out"], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", ["encoder/encode.sh", "decoder/decode.sh"])
@pytest.mark.parametrize("venv", ["none", "dangling", "cannot-run"])
def test_shell_entry_points_say_how_to_fix_a_broken_venv(tmp_path: Path, script: str, venv: str) -> None:
    root = _fake_checkout(tmp_path, script)
    py = root / ".venv" / "bin" / "python"
    if venv != "none":
        py.parent.mkdir(parents=True)
        if venv == "dangling":       # the base interpreter the venv was made from is gone
            py.symlink_to(tmp_path / "gone" / "python3.11")
        else:
            py.write_text("#!/bin/sh\nexit 1\n")
            py.chmod(0o755)
    line = one_line_error(_run_script(root, script))
    assert "make install" in line and str(root) in line, line


@pytest.mark.parametrize("script", ["encoder/encode.sh", "decoder/decode.sh"])
def test_shell_entry_points_use_explicit_ratelock_python(tmp_path: Path, script: str) -> None:
    root = _fake_checkout(tmp_path, script)   # no .venv at all
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho \"ran $*\"\n")
    fake.chmod(0o755)
    r = _run_script(root, script, {"RATELOCK_PYTHON": str(fake)})
    assert r.returncode == 0 and r.stdout.strip() == f"ran -m {Path(script).parent} in 0.25 out", (r.stdout, r.stderr)
    r = _run_script(root, script, {"RATELOCK_PYTHON": str(tmp_path / "nope")})
    assert "RATELOCK_PYTHON" in one_line_error(r)


# --------------------------------------------------------------------------- unwritable destination

def _cannot_create_in(d: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=d)
    except OSError:
        return True
    os.close(fd)
    os.unlink(tmp)
    return False


@pytest.fixture
def locked_dir(tmp_path: Path):
    """A folder no file can be created in, also when the tests run as root (then a read-only kernel folder)."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        if _cannot_create_in(d):
            yield d
            return
        for alt in (Path("/sys"), Path("/proc")):
            if alt.is_dir() and _cannot_create_in(alt):
                yield alt
                return
        pytest.skip("no folder here refuses file creation (root without /sys or /proc)")
    finally:
        d.chmod(0o755)


def _refused_for(line: str, user_path: Path) -> None:
    assert str(user_path) in line, line
    assert ".tmp" not in line and "probe" not in line, line


def test_write_atomic_names_the_users_path(locked_dir: Path) -> None:
    from models.pngio import write_bytes_atomic, write_png_atomic
    for write, arg in ((write_bytes_atomic, b"x"), (write_png_atomic, np.zeros((2, 2, 3), np.uint8))):
        with pytest.raises(OSError) as e:
            write(locked_dir / "o.out", arg)
        _refused_for(str(e.value), locked_dir / "o.out")


def test_encoder_refuses_unwritable_output_before_any_work(locked_dir: Path, tmp_path: Path) -> None:
    """A registry that does not exist: the output check must come first (the old CLI loaded models, encoded, then failed)."""
    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(img)
    out = locked_dir / "y.bit"
    r = run_cli(["-m", "encoder", str(img), "0.25", str(out), "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(one_line_error(r), out)
    r = run_cli(["-m", "encoder", str(tmp_path), "--targets", "0.25", "--out", str(locked_dir / "batch"),
                 "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(one_line_error(r), locked_dir / "batch")


def test_decoder_refuses_unwritable_output_before_any_work(locked_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.bit"
    src.write_bytes(b"R" * 40)
    out = locked_dir / "y.png"
    r = run_cli(["-m", "decoder", str(src), str(out), "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(one_line_error(r), out)
    r = run_cli(["-m", "decoder", "--dir", str(tmp_path), str(locked_dir / "pngs"),
                 "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(one_line_error(r), locked_dir / "pngs")


@pytest.mark.parametrize("module,args", [("encoder", ["nope.png", "0.25", "o.bit"]), ("decoder", ["nope.bit", "o.png"])])
def test_one_program_name_in_usage_and_errors(module: str, args: list[str], tmp_path: Path) -> None:
    r = run_cli(["-m", module, *[str(tmp_path / a) for a in args]])
    assert one_line_error(r).startswith(f"python -m {module}: error: "), r.stderr
    assert f"usage: python -m {module}" in run_cli(["-m", module, "--help"]).stdout
    for f in (ROOT / module).glob("*.py"):
        assert f"ratelock-{module[:6]}" not in f.read_text(), f


# --------------------------------------------------------------------------- the demo's model note

@pytest.mark.slow
def test_demo_prints_the_note_of_the_model_used(tiny_registry: Path, tmp_path: Path) -> None:
    """Only the high model carries a note; a low-rate demo must not print it (the old demo printed the first note)."""
    from decoder.bitstream import parse_header
    from models.targets import TARGETS
    reg = yaml.safe_load(tiny_registry.read_text())
    for m in reg["models"]:
        m["weights"] = str((tiny_registry.parent / m["weights"]).resolve())
        m["note"] = "NOTE-OF-HI" if m["name"] == "hi" else ""
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(reg, sort_keys=False))
    img = tmp_path / "a.png"
    Image.open(KODAK / "kodim23.png").crop((0, 0, 192, 128)).save(img)
    r = run_cli(["-m", "encoder.demo", str(img), "0.12", "--out", str(tmp_path / "out"), "--registry", str(registry)],
                env_extra={"RATELOCK_PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    header = parse_header((tmp_path / "out" / "a.bit").read_bytes())
    used = next(m for m in reg["models"] if float(m["target"]) == TARGETS[header.target_index])
    assert used["name"] == "lo", "premise: the 0.12 demo uses the low model, whose entry has no note"
    assert "NOTE-OF-HI" not in r.stdout, r.stdout
    assert "model used: lo" in r.stdout, r.stdout
