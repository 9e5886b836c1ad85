# The two commands of the README. Both set up a fresh machine first (scripts/setup.sh).
.PHONY: setup demo test lint bench

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/pgdr demo

test: setup
	.venv/bin/python -m pytest -n 2 --durations=25

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports
