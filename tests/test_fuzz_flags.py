"""The fuzz campaigns' command lines, pinned: conformance.fuzz.campaign.campaign_parser declares their shared flags once,
and every campaign keeps its flags and defaults (each campaign's main() parses [] and shows its namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

_GRAB = """
import argparse, importlib, json, sys
parse = argparse.ArgumentParser.parse_args
class Parsed(BaseException):    # not an Exception: the one-line error contract must let it through
    pass
def grab(self, args=None, namespace=None):
    raise Parsed(json.dumps(vars(parse(self, args, namespace))))
argparse.ArgumentParser.parse_args = grab
out = {}
for m in sys.argv[1:]:
    try:
        importlib.import_module("conformance." + m).main([])
    except Parsed as e:
        out[m] = json.loads(str(e))
print(json.dumps(out))
"""

DEFAULTS = {
    "fuzz.decode": {"cases": 10000, "corpus": None, "max_pixels": 262144, "mem_limit_gb": 6.0, "no_progress": False,
                    "out": "runs/fuzz-decode", "registry": None, "seconds": 0, "seed": 0, "subprocess": 40,
                    "timeout": 60},
    "fuzz.png": {"cases": 20000, "hang_s": 5.0, "mem_limit_gb": 6.0, "no_progress": False, "out": "runs/fuzz-png",
                 "save_corpus": None, "seconds": 0, "seed": 0, "subprocess": 10},
    "fuzz.parse": {"child": False, "engine": "atheris", "hang_s": 1.0, "max_padded": 65536, "max_pixels": 32768,
                   "mem_limit_gb": 6.0, "merge_into": None, "no_corpus": False, "no_progress": False,
                   "out": "runs/fuzz-parse", "registry": None, "replay": None, "runs": 0, "seconds": 600, "seed": 0,
                   "seeds": str(ROOT / "conformance" / "streams"), "segment_s": 900},
}


def test_every_campaign_keeps_its_flags_and_defaults():
    r = subprocess.run([sys.executable, "-c", _GRAB, *DEFAULTS], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == DEFAULTS


def test_passthrough_splits_at_the_double_dash():
    from conformance.fuzz.campaign import passthrough
    assert passthrough(["--seed", "1"]) == (["--seed", "1"], [])
    assert passthrough(["--seed", "1", "--", "-max_total_time=5", "--"]) == (["--seed", "1"], ["-max_total_time=5", "--"])
