"""The campaign runner trains its plan, resumes each job where it stopped, and logs each stint; the gate's
comparison is at equal rate and refuses what is within the noise."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from evaluation.datasets import TRAIN
from tests.conftest import ROOT, one_line_error, run_cli


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("campaign")
    data = d / "data"
    data.mkdir()
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(data / (f.stem + ".png"))
    (d / "tiny.yaml").write_text(f"inherit: {ROOT / 'training' / 'configs' / 'tiny.yaml'}\nname: ctiny\n"
                                 f"train_dir: {data}\nvalidate_every: 3\n")
    stage = "  - name: ctiny\n    config: {cfg}\n    until: {until}\n    lr: 3.0e-3\n    decay_from: {decay}\n"
    (d / "plan.yaml").write_text("settings:\n  min_minutes: 0\n  nice: 0\njobs:\n"       # one model, two stages
                                 + stage.format(cfg=d / "tiny.yaml", until=4, decay=3)
                                 + stage.format(cfg=d / "tiny.yaml", until=6, decay=5))
    return d


@pytest.mark.slow
def test_campaign_trains_logs_and_resumes_across_stages(plan):
    args = ["-m", "training.campaign", "--plan", str(plan / "plan.yaml"), "--hours", "0.2",
            "--state-dir", str(plan / "state"), "--runs-dir", str(plan / "runs"), "--log", str(plan / "log.csv")]
    r = run_cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((plan / "log.csv").open()))
    assert [(r["model"], r["step_from"], r["step_to"], r["exported"]) for r in rows] == \
        [("ctiny", "0", "4", "no"), ("ctiny", "4", "6", "no")]                  # the second stage resumes
    row = rows[1]
    assert row["backend"] == "tf" and float(row["heldout_bpp"]) > 0 and float(row["heldout_psnr"]) > 5
    assert "lr_decay_at" in (plan / "runs" / "ctiny" / "train.log").read_text()
    assert '"probe": "coded"' in (plan / "runs" / "ctiny" / "train.log").read_text()   # validated mid-run
    assert list((plan / "runs" / "ctiny" / "tb").iterdir())                       # TensorBoard events
    r = run_cli(args)                                                            # done: nothing more to train
    assert r.returncode == 0 and "done (step 6 of 6)" in r.stdout
    assert len(list(csv.DictReader((plan / "log.csv").open()))) == 2


def test_campaign_refuses_a_bad_plan_in_one_line(tmp_path):
    (tmp_path / "plan.yaml").write_text("jobs:\n  - name: x\n    until: 5\n")
    r = run_cli(["-m", "training.campaign", "--plan", str(tmp_path / "plan.yaml"), "--dry-run"])
    assert "missing 'config'" in one_line_error(r)


def test_gate_compares_at_equal_rate_and_within_the_noise():
    from training.gate import compare
    shipped = [{"bpp": 1.0, "psnr": 30.0 + i % 3, "slope": 6.0} for i in range(10)]
    # More rate, the PSNR the slope predicts for it: no gain at equal rate.
    same = [{"bpp": 1.1, "psnr": s["psnr"] + 6.0 * 0.1375} for s in shipped]
    assert compare(shipped, same)["gain_db"] == pytest.approx(0.0, abs=1e-3)
    better = [{"bpp": 1.0, "psnr": s["psnr"] + 0.1 + 0.01 * (i % 2)} for i, s in enumerate(shipped)]
    r = compare(shipped, better)
    assert r["gain_db"] == pytest.approx(0.105) and r["se_db"] < 0.01


def test_gate_refuses_psnr_bought_with_ms_ssim():
    """A candidate 0.1 dB better in PSNR-RGB passes only while its MS-SSIM-Y holds (within the margin)."""
    from training.gate import verdict
    shipped = [{"bpp": 1.0, "psnr": 30.0 + i % 3, "msssim": 15.0 + i % 2, "slope_psnr": 6.0, "slope_msssim": 5.0}
               for i in range(10)]

    def cand(d_ms: float) -> list[dict]:
        return [dict(s, psnr=s["psnr"] + 0.1 + 0.01 * (i % 2), msssim=s["msssim"] + d_ms + 0.01 * (i % 2))
                for i, s in enumerate(shipped)]
    assert verdict(shipped, cand(0.0))["passed"] and verdict(shipped, cand(-0.03))["passed"]
    v = verdict(shipped, cand(-0.3))
    assert not v["passed"] and v["msssim"]["gain_db"] == pytest.approx(-0.295) and v["psnr"]["gain_db"] > v["bar"]


def test_the_card_draws_the_campaign_log_as_curves_against_cpu_hours(tmp_path):
    """Rows that continue each other form one curve with cumulative CPU-hours; a row that restarts from an
    earlier step (an experiment) is a curve of its own; the card section has the plot and every row."""
    from training.campaign import COLUMNS
    from training.card import campaign_lines, campaign_series
    base = {"date": "2026-12-03", "cpu": "x", "backend": "tf", "dtype": "bfloat16", "heldout_bpp": "1.9",
            "exported": "no"}
    rows = [dict(base, model="t200", step_from="100", step_to="200", cpu_hours="0.5", heldout_psnr="32.0"),
            dict(base, model="t200", step_from="200", step_to="300", cpu_hours="0.25", heldout_psnr="32.5",
                 exported="yes"),
            dict(base, model="t200", step_from="100", step_to="300", cpu_hours="1.0", heldout_psnr="32.4"),
            dict(base, model="t100", step_from="0", step_to="50", cpu_hours="0.1", heldout_psnr="30.0")]
    chains = campaign_series(rows)
    assert [(c["model"], c["steps"], c["hours"]) for c in chains] == [
        ("t200", [100, 200, 300], [0.0, 0.5, 0.75]), ("t200", [100, 300], [0.0, 1.0]), ("t100", [0, 50], [0.0, 0.1])]
    assert chains[0]["exported"] == [False, False, True]
    log = tmp_path / "campaign.csv"
    with log.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "models").mkdir()
    lines = campaign_lines(log, tmp_path / "MODEL_CARD.md")
    assert "![campaign curves](models/campaign.png)" in lines and (tmp_path / "models" / "campaign.png").stat().st_size
    assert sum(line.startswith("| 2026-12-03 |") for line in lines) == len(rows)
    assert campaign_lines(tmp_path / "missing.csv", tmp_path / "MODEL_CARD.md") == []


def test_the_card_describes_the_shipped_weights_not_a_state_that_trained_past_them():
    from training.card import _lineage_line, _steps_line
    meta = {"step": 1931, "wall_seconds": 3600.0, "lineage": [{"name": "base", "step": 14243}]}
    assert _steps_line(meta, 1931).startswith("- Steps: 1931;")
    ahead = _steps_line(meta, 1300)
    assert ahead.startswith("- Steps: 1300 (the shipped weights)") and "continued to step 1931" in ahead
    assert "cumulative 15543 steps." in _lineage_line(meta, 1300)
    assert "cumulative 16174 steps, 1.00 h" in _lineage_line(meta)
