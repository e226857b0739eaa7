# The two commands a new user runs (see README):
#   make demo   - set up .venv and run the live ROS 2 demo (node + player over real photos)
#   make test   - set up .venv and run the whole test suite
.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/goodpoint-demo

test: setup
	.venv/bin/python -m pytest -q -ra test

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python bench/extract.py
