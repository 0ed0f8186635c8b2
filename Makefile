# Local2Global — the commands a newcomer runs. Every target installs what is missing first (idempotent).
PY      := .venv/bin/python
INSTALL := bash scripts/install.sh
OUT     ?= output/demo
OUT_VPS ?= output/demo_vps
PYTEST_ARGS ?=

.PHONY: install demo demo-vps test bench bench-quick clean

install:
	@$(INSTALL)

## The main job: synthetic data -> train the tiny model on CPU -> evaluate (AP table) -> render a demo video.
demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/run_demo.py --output $(OUT)

## The same on the synthetic video panoptic data (VIPSeg format): train the tiny VPS recipe on CPU -> VPQ / STQ.
demo-vps: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/run_demo.py --task vps --output $(OUT_VPS)

## The test suite (CPU, tiny configurations). Prints the slowest tests.
test: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -ra --durations=25 $(PYTEST_ARGS) tests

bench: install
	$(PY) benchmarks/run.py

bench-quick: install
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf output .pytest_cache
