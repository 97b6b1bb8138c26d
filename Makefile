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
STEPS   ?= 2000
PER_TARGET := t006 t012 t025 t050 t075 t100 t150 t200

export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: run test check lint install clean bench eval conformance package train-base train-targets fuzz device-pack bench-train \
        campaign tensorboard

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

# The fast tier (CONTRIBUTING.md): lint, then every test not marked slow; about 3 minutes on 2 cores.
check: lint
	$(VPY) -m pytest tests conformance -m "not slow" --durations=5

lint: $(STAMP)
	$(VPY) -m ruff check .

# Speed and memory (evaluation/BENCH.md), with bitstream v3 against v2 (--v3): the bench builds its v2/v3 model pair
# from the committed base state by running `python -m training.bench_models` (cached in $TMPDIR).
bench: $(STAMP)
	$(VPY) -m evaluation.bench --include-8k --v3 --kodak "$(KODAK)" --out runs/bench

# The long jobs (tens of minutes on 2 cores); outputs under runs/ (git-ignored), resumable where noted.
eval: $(STAMP)
	$(VPY) -m evaluation $(KODAK) --out runs/eval_kodak            # resumable: cached per point

conformance: $(STAMP)
	$(VPY) -m conformance $(KODAK) --targets all --report runs/conformance

package: $(STAMP)
	$(VPY) -m evaluation.package $(KODAK) --team $(TEAM) --out runs/submission --force

# Training (training/README.md), in JAX on whatever device is here. Each run resumes where the last stopped;
# SIGTERM saves and exits.
train-base: $(STAMP)
	$(VPY) -m training.train --config training/configs/base.yaml --no-export

# STEPS more steps for every per-target model, then export each and register it for its target.
train-targets: $(STAMP)
	set -e; for t in $(PER_TARGET); do \
	  $(VPY) -m training.train --config training/configs/$$t.yaml --max-steps $(STEPS) --no-export; \
	  bpp=$$(echo $$t | sed 's/^t\(.\)\(..\)$$/\1.\2/'); \
	  $(VPY) -m training.export --state models/checkpoints/$$t.npz --name $$t --register $$bpp --slim-state; \
	done

# The accelerator runbook (training/README.md): build the folder that travels with a run of CONFIG.
CONFIG ?= training/configs/base.yaml
device-pack: $(STAMP)
	$(VPY) -m training.device_pack --config $(CONFIG)

# Training throughput on this machine (steps/s, Mpixel/s), beside the retired TF step.
bench-train: $(STAMP)
	$(VPY) -m training.bench --tf-reference a5d10aa

# The training campaign (training/README.md): training/campaign.yaml, niced, for HOURS of wall clock; resumable,
# SIGTERM saves. Its log is training/campaign.csv; `python -m training.campaign gate NAME --export` ships a model.
HOURS ?= 2.5
campaign: $(STAMP)
	nice -n 19 $(VPY) -m training.campaign --hours $(HOURS)

# TensorBoard (ships with TF) over every run's scalars and validation crops.
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir runs --bind_all

# Fuzzing campaigns (conformance/README.md, "Fuzzing"): parse path (atheris) for FUZZ_SECONDS, then full decodes
# through the decoder's CLI entry point and the encoder's PNG reader for a share of it; each prints its figures.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	@rc=0; \
	nice -n 10 $(VPY) -m conformance.fuzz.parse --seconds $(FUZZ_SECONDS) --out runs/fuzz-parse || rc=1; \
	nice -n 10 $(VPY) -m conformance.fuzz.decode --cases 10000 --seconds $$(( $(FUZZ_SECONDS) / 2 )) --subprocess 5 \
	  --out runs/fuzz-decode || rc=1; \
	nice -n 10 $(VPY) -m conformance.fuzz.png --cases 20000 --seconds $$(( $(FUZZ_SECONDS) / 4 )) --subprocess 5 \
	  --out runs/fuzz-png || rc=1; \
	exit $$rc

clean:
	rm -rf $(OUT) .pytest_cache
