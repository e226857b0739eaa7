# The two commands a new user runs (see README):
#   make demo   - set up .venv and run the live ROS 2 demo (node + player over real photos)
#   make test   - set up .venv and run the whole test suite
# and while editing code: make test-fast - the tests not marked slow (no node processes, no training, under a minute)
.PHONY: setup demo test test-fast lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/goodpoint-demo

test: setup
	.venv/bin/python -m pytest -q -ra test

# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep instead of spinning when they wait. Beside a
# training run on the other core, spinning made small tensor ops up to ~50x slower
# (this tier: 63 s spinning, 18 s passive on a 2-core AMD EPYC); results are the same either way.
test-fast: setup
	OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m pytest -q -ra -m "not slow" test

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python bench/extract.py
