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
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going

test: install
	bash scripts/setup_chromium.sh
	$(PY) -m pytest

clean:
	rm -rf _build $(VENV)
