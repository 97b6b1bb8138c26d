"""Batch work (models/batch.py): a bad item, a kill, a full or read-only disk, two batches at once, shards.

Decoder --dir, encoder DIR, evaluation and conformance share one contract: one line per bad item and the
rest done, "N of M ... failed" and a non-zero exit; outputs whole or absent after any kill; a re-run of
the same command completes the batch and keeps what is there and valid; `--shard K/N` splits the work.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.batch import Shard, parse_shard
from models.pngio import is_temp
from tests.conftest import KODAK, ROOT

# -- helpers ----------------------------------------------------------------------------------------------

SIZES = [(48, 40), (64, 64), (96, 80), (130, 70), (200, 150), (33, 90)]


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    src = np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB"))
    out = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        y, x = int(rng.integers(0, 512 - h)), int(rng.integers(0, 768 - w))
        out.append(np.ascontiguousarray(src[y:y + h, x:x + w]))
    return out


@pytest.fixture(scope="module")
def streams(tmp_path_factory, encoder) -> Path:
    """A folder of 12 tiny-model streams of mixed sizes (both models)."""
    d = tmp_path_factory.mktemp("streams")
    for i, rgb in enumerate(_crops(12)):
        (d / f"s{i:02d}.bit").write_bytes(encoder.encode_fixed(rgb, i % 2, 120 + i))
    return d


@pytest.fixture(scope="module")
def reference(streams, tiny_registry, tmp_path_factory) -> dict[str, bytes]:
    """The PNG bytes one clean --dir run writes: what every interrupted or concurrent run must end with."""
    from decoder.__main__ import main
    out = tmp_path_factory.mktemp("reference")
    assert main(["--dir", str(streams), str(out), "--registry", str(tiny_registry), "--recycle", "0"]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def _decode(args: list[str], registry: Path, worker: bool = False) -> int:
    """The decoder's main() here; in this process unless `worker` (then as --dir runs by default)."""
    from decoder.__main__ import main
    return main([*args, "--registry", str(registry), *([] if worker else ["--recycle", "0"])])


def _complete_pngs(folder: Path) -> dict[str, bytes]:
    """Every *.png in folder, each checked to decode fully; a partial file fails here."""
    out = {}
    for p in sorted(folder.glob("*.png")):
        data = p.read_bytes()
        with Image.open(p) as im:
            im.load()
        out[p.name] = data
    return out


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_temp(p.name)] if folder.is_dir() else []


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- a bad stream or image never stops a batch -------------------------------------------------------------

@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
def test_bad_streams_are_one_line_each_and_the_rest_decode(streams, reference, tiny_registry, tmp_path, capsys,
                                                            worker):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(streams.glob("*.bit"))[:4]:
        (src / p.name).write_bytes(p.read_bytes())
    good = (src / "s00.bit").read_bytes()
    (src / "cut.bit").write_bytes(good[:len(good) // 2])
    (src / "junk.bits").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    assert _decode(["--dir", str(src), str(out)], tiny_registry, worker) == 1
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 3 and "Traceback" not in "".join(lines), lines
    assert lines[0].startswith("python -m decoder: cut.bit: ") and lines[1].startswith("python -m decoder: junk.bits: ")
    assert lines[2] == "python -m decoder: 2 of 6 streams failed"
    got = _complete_pngs(out)
    assert set(got) == {f"s{i:02d}.png" for i in range(4)}
    assert all(got[k] == reference[k] for k in got)
    assert _temps(out) == []


def test_bad_png_in_an_encoder_batch_is_one_line(tiny_registry, tmp_path, capsys):
    from encoder.__main__ import main
    src = tmp_path / "imgs"
    src.mkdir()
    for i, rgb in enumerate(_crops(2)):
        Image.fromarray(rgb).save(src / f"a{i}.png")
    (src / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "bits"
    rc = main([str(src), "--targets", "0.12,0.25", "--out", str(out), "--registry", str(tiny_registry), "--refine", "0"])
    err = _stderr_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(err) == 2 and err[0].startswith("python -m encoder: b_bad.png: "), err
    assert err[1] == "python -m encoder: 1 of 3 images failed"
    assert sorted(p.name for p in out.glob("*.bit")) == ["a0_012.bit", "a0_025.bit", "a1_012.bit", "a1_025.bit"]
    assert [line.split(",")[0] for line in (out / "rates.csv").read_text().splitlines()[1:]] == ["a0.png"] * 2 + ["a1.png"] * 2


# -- a re-run resumes ---------------------------------------------------------------------------------------

def test_rerun_keeps_valid_pngs_and_redoes_the_rest(streams, reference, tiny_registry, tmp_path):
    out = tmp_path / "out"
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 0
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / "s01.png").write_bytes(reference["s01.png"][:100])            # left half-written by some other tool
    (out / "s02.png").unlink()
    Image.new("RGB", (5, 5)).save(out / "s03.png")                       # a valid PNG of the wrong size
    time.sleep(0.01)
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 0
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    redone = {k for k in again if again[k] != stamp.get(k)}
    assert redone == {"s01.png", "s02.png", "s03.png"}
    assert _complete_pngs(out) == reference
    assert _decode(["--dir", str(streams), str(out), "--force"], tiny_registry) == 0
    assert all(p.stat().st_mtime_ns != again[p.name] for p in out.glob("*.png"))


@pytest.mark.slow
def test_encoder_rerun_keeps_streams_and_rates_csv_stays_consistent(tiny_registry, tmp_path, capsys):
    from encoder.__main__ import main
    src = tmp_path / "imgs"
    src.mkdir()
    for i, rgb in enumerate(_crops(3, seed=1)):
        Image.fromarray(rgb).save(src / f"im{i}.png")
    out = tmp_path / "bits"
    argv = [str(src), "--targets", "0.12,0.25", "--out", str(out), "--registry", str(tiny_registry), "--refine", "0"]
    assert main(argv) in (0, 2)
    first = (out / "rates.csv").read_text()
    streams = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.bit")}
    (out / "im1_012.bit").unlink()                                    # as a kill between stream and record leaves it
    (out / ".rates" / "im2_025.json").unlink()
    (out / "im0_025.bit").write_bytes(b"not the stream")              # changed behind the record's back
    assert main(argv) in (0, 2)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.bit")}
    redone = {k for k in after if after[k][1] != streams[k][1]}
    assert redone == {"im0_025.bit", "im1_012.bit", "im2_025.bit"}
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in streams.items()}      # deterministic encoder

    def no_seconds(text: str) -> list[str]:
        return [line.rsplit(",", 1)[0] for line in text.splitlines()]
    rates = (out / "rates.csv").read_text()
    assert no_seconds(rates) == no_seconds(first)
    for row in rates.splitlines()[1:]:
        f = row.split(",")
        assert (out / f[7]).stat().st_size == int(f[8])               # every row names a stream of its size
    capsys.readouterr()
    assert main(argv + ["--aim", "0.01"]) in (0, 2)                    # other settings: nothing is kept
    assert "kept" not in capsys.readouterr().out


# -- the worker process --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_grown_worker_is_replaced_and_the_output_is_the_same(streams, reference, tiny_registry, tmp_path,
                                                               monkeypatch):
    import decoder.worker as W
    starts = []
    real = W.Pool._start
    monkeypatch.setattr(W, "GROWTH", 0.0)                  # any RSS counts as grown
    monkeypatch.setattr(W.Pool, "_start", lambda self: starts.append(1) or real(self))
    out = tmp_path / "out"
    assert _decode(["--dir", str(streams), str(out), "--recycle", "5"], tiny_registry, worker=True) == 0
    assert len(starts) == 3 and _complete_pngs(out) == reference


@pytest.mark.slow
def test_a_worker_that_dies_costs_only_its_stream(streams, reference, tiny_registry, tmp_path, monkeypatch, capsys):
    import decoder.worker as W
    real = W.Pool.decode
    sent = {"n": 0}

    def decode(self, src, dst):
        sent["n"] += 1
        if sent["n"] == 4:                                 # the worker dies on the 4th stream (OOM killer, a crash)
            proc, answer = self.proc, self.proc.stdout.readline

            def readline():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return answer()
            proc.stdout.readline = readline
        return real(self, src, dst)
    monkeypatch.setattr(W.Pool, "decode", decode)
    out = tmp_path / "out"
    assert _decode(["--dir", str(streams), str(out)], tiny_registry, worker=True) == 1
    lines = _stderr_lines(capsys.readouterr().err)
    assert lines == ["python -m decoder: s03.bit: the decoder process ended on this stream (signal 9); the rest go "
                     "on in a new one", "python -m decoder: 1 of 12 streams failed"]
    assert set(_complete_pngs(out)) == set(reference) - {"s03.png"}
    assert _decode(["--dir", str(streams), str(out)], tiny_registry, worker=True) == 0
    assert _complete_pngs(out) == reference


# -- SIGTERM and SIGKILL ----------------------------------------------------------------------------------

def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_output(folder: Path, proc: subprocess.Popen, pattern: str, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - t0 < timeout, "no output appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def many_streams(tmp_path_factory) -> Path:
    """16 streams of the shipped models (textured 256x192 crops: PNGs of ~100 kB, so a kill can land in a
    write), linked 6 times: a batch long enough to be caught in the middle."""
    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    enc = Encoder()
    base = tmp_path_factory.mktemp("real")
    models = len(enc.models.distinct_entries())
    for i in range(16):
        rgb = load_rgb8(KODAK / f"kodim{i + 1:02d}.png")
        (base / f"r{i:02d}.bit").write_bytes(enc.encode_fixed(np.ascontiguousarray(rgb[:192, :256]), i % models, 128))
    d = tmp_path_factory.mktemp("many")
    for k in range(6):
        for p in sorted(base.glob("*.bit")):
            (d / f"{k}_{p.name}").symlink_to(p)
    return d


@pytest.fixture(scope="module")
def many_reference(many_streams, tmp_path_factory) -> dict[str, bytes]:
    from decoder.__main__ import main
    out = tmp_path_factory.mktemp("many_reference")
    assert main(["--dir", str(many_streams), str(out)]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


@pytest.mark.slow
def test_sigterm_stops_promptly_and_the_rerun_completes(many_streams, many_reference, tmp_path):
    out = tmp_path / "out"
    args = ["-m", "decoder", "--dir", str(many_streams), str(out)]
    proc = _start(args)
    _wait_for_output(out, proc, "*.png")
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after" in err and "run the same command again to resume" in err
    done = _complete_pngs(out)
    assert 0 < len(done) < 96 and _temps(out) == []
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _complete_pngs(out) == many_reference


@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_a_partial_file(many_streams, many_reference, tmp_path):
    """A real batch killed 20 times at random moments: every PNG there is complete after each kill; the
    re-run finishes the batch with the PNGs a clean run makes and clears the killed writers' temp files."""
    rng = random.Random(1)
    out = tmp_path / "out"
    args = ["-m", "decoder", "--dir", str(many_streams), str(out), "--force"]
    kills = 0
    while kills < 20:
        proc = _start(args)
        try:
            _wait_for_output(out, proc, "*.png")
        except AssertionError:
            proc.kill()
            raise
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:               # finished first: start again (--force rewrites everything)
            continue
        proc.kill()
        proc.wait()
        kills += 1
        got = _complete_pngs(out)                 # raises on a partial PNG
        assert all(v == many_reference[k] for k, v in got.items())
    r = subprocess.run([sys.executable, *args[:-1]], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _complete_pngs(out) == many_reference and _temps(out) == []


@pytest.mark.slow
def test_sigkill_of_an_encoder_batch_leaves_whole_streams_and_a_consistent_rates_csv(tiny_registry, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, rgb in enumerate(_crops(6, seed=2)):
        Image.fromarray(rgb).save(src / f"im{i}.png")
    out = tmp_path / "bits"
    args = ["-m", "encoder", str(src), "--targets", "0.06,0.12,0.25", "--out", str(out), "--registry",
            str(tiny_registry), "--refine", "0"]
    rng = random.Random(2)
    from decoder.bitstream import unpack
    for _ in range(4):
        proc = _start(args)
        _wait_for_output(out, proc, "*.bit")
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        for p in out.glob("*.bit"):
            unpack(p.read_bytes())                # the CRC proves the stream is whole
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 2), r.stderr
    rows = [r.split(",") for r in (out / "rates.csv").read_text().splitlines()[1:]]
    assert len(rows) == 18                        # every (image, target) once; the unreachable ones unwritten
    assert sorted(p.name for p in out.glob("*.bit")) == sorted(r[7] for r in rows if r[6] == "1")
    assert _temps(out) == [] and _temps(out / ".rates") == []


# -- full and read-only destinations ----------------------------------------------------------------------

def _one_error_line(err: str, *needles: str) -> str:
    lines = _stderr_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_disk_full_stand_in_is_one_line_and_no_partial_file(streams, tiny_registry, tmp_path, monkeypatch, capsys):
    """Writes that hit ENOSPC from the third file on (as a full disk does): one line, the batch stops, and the
    folder holds only the complete PNGs and no temp file."""
    import models.pngio as P
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    monkeypatch.setattr(P.os, "fsync", fsync)
    out = tmp_path / "out"
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 1
    _one_error_line(capsys.readouterr().err, "python -m decoder: error: ", "s02.png", "No space left on device")
    assert sorted(_complete_pngs(out)) == ["s00.png", "s01.png"] and _temps(out) == []


def test_read_only_destination_mid_batch_stand_in(streams, tiny_registry, tmp_path, monkeypatch, capsys):
    """The folder turns read-only under a running batch (a remount): one line, nothing partial. Root ignores
    chmod, so mkstemp answering EROFS stands in for the remount."""
    import models.pngio as P
    real, calls = P.tempfile.mkstemp, {"n": 0}

    def mkstemp(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:                        # the folder probe, then two files
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*a, **k)
    monkeypatch.setattr(P.tempfile, "mkstemp", mkstemp)
    out = tmp_path / "out"
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 1
    _one_error_line(capsys.readouterr().err, "s02.png", "Read-only file system")
    assert sorted(_complete_pngs(out)) == ["s00.png", "s01.png"] and _temps(out) == []


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of `size` at a fresh folder (root only); yields a mounter, unmounts everything after."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); the stand-ins above cover it")
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_tmpfs_is_one_line_and_no_partial_file(streams, tiny_registry, tmpfs, capsys):
    out = tmpfs("24k")                            # a page per file: room for a few of the 12
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 1
    _one_error_line(capsys.readouterr().err, "python -m decoder: error: ", "No space left on device")
    done = _complete_pngs(out)
    assert 0 < len(done) < 12 and _temps(out) == []


def test_read_only_tmpfs_is_one_line_before_any_work(streams, tiny_registry, tmpfs, capsys):
    out = tmpfs("1m", read_only=True)
    assert _decode(["--dir", str(streams), str(out)], tiny_registry) == 1
    _one_error_line(capsys.readouterr().err, str(out), "Read-only file system")
    assert list(out.iterdir()) == []


# -- two batches into one folder at once --------------------------------------------------------------------

@pytest.mark.slow
def test_two_decoder_batches_into_one_folder_both_finish(many_streams, many_reference, tmp_path):
    out = tmp_path / "out"
    args = ["-m", "decoder", "--dir", str(many_streams), str(out), "--force"]
    procs = [_start(args), _start(args)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert _complete_pngs(out) == many_reference and _temps(out) == []


@pytest.mark.slow
def test_two_encoder_batches_into_one_folder_both_finish(tiny_registry, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, rgb in enumerate(_crops(5, seed=3)):
        Image.fromarray(rgb).save(src / f"im{i}.png")
    out = tmp_path / "bits"
    args = ["-m", "encoder", str(src), "--targets", "0.12,0.25", "--out", str(out), "--registry", str(tiny_registry),
            "--refine", "0", "--force"]
    procs = [_start(args), _start(args)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode in (0, 2) for p in procs), errs
    from decoder.bitstream import unpack
    rows = (out / "rates.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[7] for r in rows) == sorted(p.name for p in out.glob("*.bit")) and len(rows) == 10
    for r in rows:
        f = r.split(",")
        assert len(unpack((out / f[7]).read_bytes()).y) > 0 and (out / f[7]).stat().st_size == int(f[8])
    assert _temps(out) == [] and _temps(out / ".rates") == []


def test_concurrent_writers_of_one_file_never_show_a_partial_one(tmp_path):
    """Unique temp names and an atomic rename: threads rewriting the same files at once, a reader in between."""
    import threading

    from models.pngio import write_bytes_atomic
    payloads = [bytes([i]) * (50_000 + 1000 * i) for i in range(4)]
    stop = threading.Event()
    seen, errors = set(), []

    def writer(i: int) -> None:
        while not stop.is_set():
            write_bytes_atomic(tmp_path / "f.bin", payloads[i])

    def reader() -> None:
        while not stop.is_set():
            try:
                data = (tmp_path / "f.bin").read_bytes()
            except FileNotFoundError:
                continue
            if data not in payloads:
                errors.append(len(data))
            seen.add(data[:1])
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and len(seen) >= 2 and _temps(tmp_path) == []


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    from models.pngio import _HOST, STALE_SECONDS, remove_stale_temps
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".a.png.{_HOST}.{pid}.abc123.tmp").write_bytes(b"x")                 # this host, gone
    (tmp_path / f".b.png.{_HOST}.{os.getpid()}.abc123.tmp").write_bytes(b"x")         # alive: ours
    old = tmp_path / ".c.png.otherhost.1.abc123.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - STALE_SECONDS - 5,) * 2)
    (tmp_path / ".d.png.otherhost.1.abc123.tmp").write_bytes(b"x")                     # another host's, recent
    (tmp_path / "keep.png").write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".b.png.{_HOST}.{os.getpid()}.abc123.tmp", ".d.png.otherhost.1.abc123.tmp", "keep.png"])


# -- shards -------------------------------------------------------------------------------------------------

def test_shards_partition_the_work():
    items = [f"img{i:03d}" for i in range(23)]
    random.Random(0).shuffle(items)
    shares = [Shard(k, 4).take(items, key=str) for k in range(4)]
    assert sorted(x for s in shares for x in s) == sorted(items)
    assert [len(s) for s in shares] == [6, 6, 6, 5]
    assert shares[1] == Shard(1, 4).take(sorted(items), key=str)             # order of discovery does not matter
    assert Shard().take(items, key=str) == sorted(items)
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="K"):
            parse_shard(bad)


def test_bad_shard_is_a_one_line_usage_error(tmp_path):
    from tests.conftest import one_line_error, run_cli
    line = one_line_error(run_cli(["-m", "encoder", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "4/4"]))
    assert line.startswith("python -m encoder: error: argument --shard: need 0 <= K < N")


@pytest.mark.slow
def test_encoder_shards_make_the_unsharded_batch(tiny_registry, tmp_path, capsys):
    from encoder.__main__ import main
    src = tmp_path / "imgs"
    src.mkdir()
    for i, rgb in enumerate(_crops(5, seed=4)):
        Image.fromarray(rgb).save(src / f"im{i}.png")
    base = [str(src), "--targets", "0.25", "--registry", str(tiny_registry), "--refine", "0"]
    assert main(base + ["--out", str(tmp_path / "one")]) in (0, 2)
    for k in range(3):
        assert main(base + ["--out", str(tmp_path / "sharded"), "--shard", f"{k}/3"]) in (0, 2)
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert {p.name: p.read_bytes() for p in one.glob("*.bit")} == {p.name: p.read_bytes() for p in sharded.glob("*.bit")}

    def rows(d: Path) -> list[str]:
        return [line.rsplit(",", 1)[0] for line in (d / "rates.csv").read_text().splitlines()]
    assert rows(one) == rows(sharded) and len(rows(one)) == 6


def test_conformance_shard_takes_its_share_of_images(tmp_path):
    from conformance.suite import load_images
    for i in range(5):
        Image.new("RGB", (16, 16), (i, i, i)).save(tmp_path / f"i{i}.png")
    names = [[im.name for im in load_images(tmp_path, (k, 2))] for k in range(2)]
    assert names == [["i0.png", "i2.png", "i4.png"], ["i1.png", "i3.png"]]


@pytest.mark.slow
def test_three_evaluation_shards_merge_to_the_unsharded_report(tiny_registry, tmp_path, monkeypatch, capsys):
    """Every file the merge writes equals one run's, byte for byte, but for the command and wall-time lines of
    report.md. A counting clock stands in for time.perf_counter, so encode/decode seconds are equal too."""
    import itertools

    from evaluation.__main__ import main
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, rgb in enumerate(_crops(4, seed=5)):
        Image.fromarray(rgb).save(imgs / f"k{i}.png")
    clock = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock) / 1000)
    common = [str(imgs), "--codecs", "ours,jpeg,jpeg2000", "--targets", "0.25,0.5,1.0,2.0", "--no-vmaf",
              "--refine", "0", "--registry", str(tiny_registry)]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    for k in range(3):
        assert main(common + ["--out", str(tmp_path / f"s{k}"), "--shard", f"{k}/3"]) == 0
    shards = [str(tmp_path / f"s{k}") for k in range(3)]
    assert main(["merge", *shards, "--out", str(tmp_path / "merged")]) == 0
    one, merged = tmp_path / "one", tmp_path / "merged"
    names = sorted(p.name for p in one.iterdir() if p.is_file() and p.name != "run.json")
    assert "per_image.csv" in names and "rd_psnr_rgb.png" in names
    assert sorted(p.name for p in merged.iterdir() if p.is_file() and p.name != "run.json") == names

    def text(p: Path) -> bytes:
        if p.name != "report.md":
            return p.read_bytes()
        return b"\n".join(line for line in p.read_bytes().split(b"\n") if not line.startswith((b"- command:", b"- wall")))
    assert [n for n in names if text(one / n) != text(merged / n)] == []
    assert main(["merge", *shards[:2], "--out", str(tmp_path / "m2")]) == 2
    assert "missing 2/3" in capsys.readouterr().err
