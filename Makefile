PY ?= python3

.PHONY: install test test-slow demo bench

install:
	$(PY) -m pip install -q -e '.[test,align]'

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	facebatch info
