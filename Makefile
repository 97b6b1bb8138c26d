# One command each: `make run` (demo on the bundled sample), `make test` (the suite CI runs).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SAMPLE  := samples/kodim23_crop.png
TARGET  ?= 0.25
OUT     := out

export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: run test install clean bench

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

clean:
	rm -rf $(OUT) .pytest_cache
