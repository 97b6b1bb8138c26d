# One command each: `make run` (demo on the bundled sample), `make test` (the suite CI runs).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SAMPLE  := samples/kodim23_crop.png
TARGET  ?= 0.25
OUT     := out
KODAK   ?= ../shared/data/kodak
TEAM    ?= RATELOCK

export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: run test install clean bench eval conformance package

$(STAMP): requirements.txt decoder/requirements.txt evaluation/requirements.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p $(OUT)
	$(VPY) -m encoder.demo $(SAMPLE) $(TARGET) --out $(OUT)

test: $(STAMP)
	$(VPY) -m pytest tests conformance

bench: $(STAMP)
	$(VPY) -m evaluation.bench --include-8k --out runs/bench

# The long jobs (tens of minutes on 2 cores); outputs under runs/ (git-ignored), resumable where noted.
eval: $(STAMP)
	$(VPY) -m evaluation $(KODAK) --out runs/eval_kodak            # resumable: cached per point

conformance: $(STAMP)
	$(VPY) -m conformance $(KODAK) --targets all --report runs/conformance

package: $(STAMP)
	$(VPY) -m evaluation.package $(KODAK) --team $(TEAM) --out runs/submission --force

clean:
	rm -rf $(OUT) .pytest_cache
