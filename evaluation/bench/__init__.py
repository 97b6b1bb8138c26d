"""Speed and memory benchmark: ratelock against JPEG 2000 and HEVC intra on one machine (evaluation/BENCH.md).

  python -m evaluation.bench --help

plan.py      what a run measures: arguments, test images, registry, the worker runner
worker.py    one operation in its own process (`python -m evaluation.bench.worker`); measure.py, ops.py
probes.py    one-off probes: the synthesis profile and the whole-CLI start-up
run.py       the main flow; report.py, tables.py, goals.py and v3.py write what it found

Nothing is imported here: a worker process imports only what its operation needs.
"""
