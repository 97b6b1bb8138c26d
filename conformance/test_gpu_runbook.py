"""The GPU parity runbook step, dry-run on CPU: pack here -> gpu_run (JAX, TF blocked) -> compare.

The device has no TensorFlow, so gpu_run runs here in a process where `import tensorflow` fails:
what passes here cannot need TF there. What it cannot prove here: jax 0.11 / numpy 2 / a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

from conformance.gpu import format as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BLOCK_TF = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_compression'] = None; "
            "from conformance.gpu.run import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None], 'TF loaded'; "
            "sys.exit(rc)")


def _gpu_run(pack: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
           "PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    return subprocess.run([sys.executable, "-c", BLOCK_TF, "--pack", str(pack), "--out", str(out), "--repeat", "1",
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runbook(tmp_path_factory) -> dict:
    from PIL import Image

    from conformance.gpu import pack as gpu_pack
    tmp = tmp_path_factory.mktemp("gpu")
    yy, xx = np.mgrid[0:64, 0:96]
    rgb = np.stack([xx * 2, yy * 3, (xx + yy) % 256], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp / "tiny.png")
    pack = tmp / "pack"
    rc = gpu_pack.main(["--out", str(pack), "--golden-limit", "2", "--no-kodak", "--big-image", str(tmp / "tiny.png"),
                        "--big-size", "1152x64", "--cache", str(tmp / "cache")])
    assert rc == 0
    out = tmp / "out"
    r = _gpu_run(pack, out)
    return {"tmp": tmp, "pack": pack, "out": out, "run": r}


def test_pack_carries_streams_and_weights(runbook):
    m = F.load_manifest(runbook["pack"])
    assert [s["kind"] for s in m["streams"]] == ["golden", "golden", "big"]
    assert m["streams"][2]["width"] == 1152 and m["streams"][2]["height"] == 64   # tiled (72 latents wide)
    for s in m["streams"]:
        arrays = F.load_npz(runbook["pack"] / s["file"])
        assert F.payload(arrays) == s["payload_hash"]
        # the pack's compacted integers rebuild the decoder's y_hat bit for bit
        assert F.float_hash(F.y_hat(arrays, s["delta_code"])) == s["y_hat_hash"]
        w = F.model_weights(runbook["pack"], m["models"][s["model"]])
        assert w and all(a.dtype == np.float32 for a in w)


def test_gpu_run_needs_no_tensorflow_and_writes_report(runbook):
    r = runbook["run"]
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((runbook["out"] / F.REPORT).read_text())
    assert rep["finished"] and rep["matmul_precision"] == "highest" and rep["tf32_override"] == "0"
    assert len(rep["streams"]) == 3
    for s in rep["streams"]:
        assert s["payload_ok"] and s["y_hat_ok"] and s["repeat_identical"] and s["decode_s"] > 0
    assert len(list(runbook["out"].glob(f"{F.SHARD_PREFIX}*.npz"))) == 1


def test_compare_passes_within_one_level(runbook):
    from conformance.gpu import compare as gpu_compare
    md = runbook["tmp"] / "GPU_PARITY.md"
    js = runbook["tmp"] / "rows.json"
    rc = gpu_compare.main(["--pack", str(runbook["pack"]), "--returned", str(runbook["out"]), "--md", str(md),
                           "--json", str(js)])
    assert rc == 0
    rows = json.loads(js.read_text())["rows"]
    assert len(rows) == 3 and all(r["symbols_identical"] and r["max_diff"] <= 1 for r in rows)
    text = md.read_text()
    assert "PASS: 3 streams" in text and "not parsed on the device" in text


def test_compare_fails_on_a_moved_pixel(runbook, tmp_path):
    """A returned decode 2 levels off one CPU pixel fails the bar."""
    from conformance.gpu import compare as gpu_compare
    decodes = F.read_decodes(runbook["out"])
    name = next(iter(decodes))
    bad = decodes[name].copy()
    bad[0, 0, 0] = (int(bad[0, 0, 0]) + 128) % 256
    w = F.ShardWriter(tmp_path)
    for k, v in decodes.items():
        w.add(k, bad if k == name else v)
    (tmp_path / F.REPORT).write_text((runbook["out"] / F.REPORT).read_text())
    rc = gpu_compare.main(["--pack", str(runbook["pack"]), "--returned", str(tmp_path),
                           "--md", str(tmp_path / "r.md")])
    assert rc == 1
    assert (tmp_path / "r.md").read_text().startswith("# GPU parity") and "FAIL" in (tmp_path / "r.md").read_text()


def test_gpu_run_rejects_altered_inputs(runbook, tmp_path):
    """A pack whose integers no longer match its hashes is reported, not silently synthesised."""
    import shutil
    pack = tmp_path / "pack"
    shutil.copytree(runbook["pack"], pack)
    m = F.load_manifest(pack)
    s = next(s for s in m["streams"] if s["version"] == 2)
    arrays = F.load_npz(pack / s["file"])
    arrays["mu_q"] = (arrays["mu_q"].astype(np.int32) + 1).astype(arrays["mu_q"].dtype)
    np.savez_compressed(pack / s["file"], **arrays)
    r = _gpu_run(pack, tmp_path / "out", "--only", "golden")
    assert r.returncode == 1 and s["name"] in r.stderr
    rep = json.loads((tmp_path / "out" / F.REPORT).read_text())
    bad = next(x for x in rep["streams"] if x["name"] == s["name"])
    assert not bad["payload_ok"] and not bad["y_hat_ok"]


def test_bad_input_is_one_line(tmp_path, capsys):
    from conformance.gpu import compare as gpu_compare
    from conformance.gpu import run as gpu_run
    for mod, argv in ((gpu_run, ["--pack", str(tmp_path / "none"), "--out", str(tmp_path / "o")]),
                      (gpu_compare, ["--pack", str(tmp_path / "none"), "--returned", str(tmp_path)])):
        assert mod.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


def test_pack_refuses_over_budget(tmp_path, capsys):
    from conformance.gpu import pack as gpu_pack
    out = tmp_path / "pack"
    rc = gpu_pack.main(["--out", str(out), "--golden-limit", "1", "--no-kodak", "--no-big", "--limit-mib", "0.01"])
    err = capsys.readouterr().err
    assert rc == 2 and "over the 0.01 MiB limit" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "pack.tmp").exists()


def test_shards_respect_their_budget(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {f"s{i}": rng.integers(0, 256, (600, 300, 3), np.uint8) for i in range(5)}   # incompressible, ~540 KB
    w = F.ShardWriter(tmp_path, limit=1200 * 1024, max_shards=2)
    where = {k: w.add(k, v) for k, v in imgs.items()}
    assert [where[k] for k in sorted(where)] == [f"{F.SHARD_PREFIX}0.npz"] * 2 + [f"{F.SHARD_PREFIX}1.npz"] * 2 + [None]
    assert all(p.stat().st_size <= 1200 * 1024 for p in tmp_path.glob("*.npz"))
    back = F.read_decodes(tmp_path)
    assert set(back) == {"s0", "s1", "s2", "s3"} and all(np.array_equal(back[k], imgs[k]) for k in back)


def test_a_decode_bigger_than_a_file_spans_two(tmp_path):
    """A 4K decode compresses to more than one file's budget: its row bands go to consecutive files."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1500, 300, 3), np.uint8)                                 # ~1.35 MB, 3 bands
    w = F.ShardWriter(tmp_path, limit=1000 * 1024, max_shards=3)
    assert w.add("big", img) == f"{F.SHARD_PREFIX}0.npz,{F.SHARD_PREFIX}1.npz"
    assert all(p.stat().st_size <= 1000 * 1024 for p in tmp_path.glob("*.npz"))
    assert np.array_equal(F.read_decodes(tmp_path)["big"], img)
    (tmp_path / f"{F.SHARD_PREFIX}1.npz").unlink()                   # a run killed before the second file
    assert "big" not in F.read_decodes(tmp_path)


def test_band_filter_is_exact_and_smaller():
    yy, xx = np.mgrid[0:512, 0:768]
    img = np.stack([(xx + yy) // 5, (xx * 3) // 7, yy // 3], -1).astype(np.uint8)
    packed = F._pack_band(img)
    assert np.array_equal(F._unpack_band(packed, img.shape), img)
    import zlib
    assert packed.nbytes < len(zlib.compress(img.tobytes(), 6))
