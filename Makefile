# Everything runs in a virtual environment this Makefile builds from pyproject.toml, so a
# package installed by hand elsewhere can never hide a missing dependency.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-slow demo lint refresh-model gpu-prepare

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q -e '.[test,align]'

# Azurite, Microsoft's Azure Storage emulator (a Node program), serves the az:// tests; without npm they skip.
AZURITE_VERSION ?= 3.35.0
AZURITE := .test-servers/node_modules/.bin/azurite-blob

$(AZURITE):
	@if command -v npm >/dev/null; then \
	    npm install --prefix .test-servers --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION); \
	else echo "npm is not installed: the az:// object-store tests will skip"; fi

test: install $(AZURITE)
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The main job on real faces: the built-in celeba64 generator projects CelebA `val` faces (people it
# never saw) and the run is scored. Without ../shared/data it projects the model's own samples
# instead, and says so.
CELEBA ?= ../shared/data/celeba10k
DEMO_G ?= celeba64
DEMO_N ?= 16
DEMO_IN ?= demo-in
DEMO_OUT ?= demo-out
# The encoder's code refined for 25 steps: on 8 val faces 17.8 dB in 1.3 s per face at 2 threads, against
# `fast`'s 100 steps from the mean face (20.0 dB, 4.8 s); the demo's 16 faces take well under a minute
# (bench/out/encoder-2threads.md). DEMO_PRESET=fast DEMO_STEPS=100 shows the slower, sharper recipe.
DEMO_PRESET ?= hybrid
DEMO_STEPS ?= 25

demo: install
	@rm -rf $(DEMO_IN) && mkdir -p $(DEMO_IN)
	@if [ -f $(CELEBA)/split.csv ]; then \
	    echo "demo input: the first $(DEMO_N) val faces of $(CELEBA) (people $(DEMO_G) never saw), linked into $(DEMO_IN)/"; \
	    awk -F, '$$3 == "val" {print $$1}' $(CELEBA)/split.csv | head -n $(DEMO_N) | \
	        while read -r f; do ln -s "$$(realpath $(CELEBA)/images/$$f)" "$(DEMO_IN)/$$f"; done; \
	else \
	    echo "$(CELEBA) is absent: the demo projects $(DEMO_N) of $(DEMO_G)'s own samples instead of real faces"; \
	    $(PY) -m facebatch sample -g $(DEMO_G) -n $(DEMO_N) --out $(DEMO_OUT)-samples --overwrite --quiet; \
	    cp $(DEMO_OUT)-samples/images/*.png $(DEMO_IN)/; \
	fi
	$(PY) -m facebatch project $(DEMO_IN) -g $(DEMO_G) --out $(DEMO_OUT) --preset $(DEMO_PRESET) --steps $(DEMO_STEPS) \
	    --save-reconstructions --overwrite
	$(PY) -m facebatch score $(DEMO_OUT) --report $(DEMO_OUT)/report

# Swap a new celeba64 generator in everywhere (registry pin, boundaries, measured figures, test floors,
# pictures): CANDIDATE is a latest.safetensors written by models/celeba64/train.py. Resumable; ~30 min at
# one thread (models/celeba64/refresh.py says what it redoes and what not).
refresh-model: install
	@test -n "$(CANDIDATE)" || { echo "usage: make refresh-model CANDIDATE=path/to/latest.safetensors" >&2; exit 2; }
	OMP_NUM_THREADS=1 $(PY) models/celeba64/refresh.py $(CANDIDATE)

# What bench/gpu_day.sh needs beside the checkout on a lent GPU machine (.gpu/: wheels, the training pack).
gpu-prepare: install
	PYTHON=$(PY) bench/gpu_prepare.sh
