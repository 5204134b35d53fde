# The two commands of README.md:  `make book`  and  `make test`.
# Both create .venv and install the project into it first; nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install book test clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

book: install
	$(VENV)/bin/jupyter-book build . --all --warningiserror --nitpick --keep-going

# The whole suite: unit tests, graders against the reference solutions (and, inside
# tests/test_exercises_both_ways.py, against the untouched stubs), nbval on every chapter,
# the warning-free book build and the browser check. Two workers, one file each at a time.
test: install
	bash scripts/setup_chromium.sh
	MINILOOPED_GRADE_TARGET=reference OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	    $(PY) -m pytest tests chapters -n 2 --dist loadfile \
	    --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

clean:
	rm -rf _build $(VENV)
