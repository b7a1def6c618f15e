# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export MUJOCO_GL ?= egl

.PHONY: venv demo test test-all lint bench lock clean

venv:
	@bash scripts/setup_venv.sh

demo: venv
	$(VENV)/bin/coirl demo --out runs/demo

test: venv lint
	$(PY) -m pytest -m "not slow"

test-all: venv lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check coirl_ros test bench scripts setup.py
	$(VENV)/bin/ruff format --check coirl_ros test bench scripts setup.py

bench: venv
	$(PY) bench/store_bench.py
	$(PY) bench/sim_bench.py
	$(PY) bench/expert_success.py

# Re-resolve requirements/requirements.in into requirements/lock.txt in a scratch venv.
lock:
	rm -rf /tmp/coirl-lock-venv
	py=$$(bash scripts/setup_venv.sh --print-python) || { echo "make lock: no Python 3.12 found" >&2; exit 1; }; \
	$$py -m venv /tmp/coirl-lock-venv
	/tmp/coirl-lock-venv/bin/pip install -q -r requirements/requirements.in
	/tmp/coirl-lock-venv/bin/python scripts/venv_packages.py freeze requirements/lock.txt

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
