# Two commands matter: `make demo` (the main job on built-in data) and `make test`.
PY := .venv/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: setup test demo clean

setup:
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	# torch is pinned in the same command as everything that depends on it, so pip never pulls a CUDA build.
	$(PY) -m pip install "$(TORCH_PIN)" -e ".[dev]"

.venv/bin/muon-ad:
	$(MAKE) setup

test: .venv/bin/muon-ad
	$(PY) -m pytest

demo: .venv/bin/muon-ad
	.venv/bin/muon-ad demo

clean:
	rm -rf demo-report bench-results runs .pytest_cache
