# Everything runs in a virtual environment this Makefile builds from pyproject.toml, so a
# package installed by hand elsewhere can never hide a missing dependency.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-slow demo lint

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q -e '.[test,align]'

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The main job on the sample photos, with the random 64-px fixture generator (no pretrained
# weights can be downloaded on our build machines): project, then score the run.
FIXTURE_G ?= ../shared/fixtures/reference/nvlabs_sg2ada_64_weights.pt
DEMO_IN ?= ../shared/data/faces_aligned
DEMO_OUT ?= demo-out

demo: install
	$(PY) -m facebatch project $(DEMO_IN) --generator $(FIXTURE_G) --out $(DEMO_OUT) --preset fast --steps 30
	$(PY) -m facebatch score $(DEMO_OUT) --report $(DEMO_OUT)/report
