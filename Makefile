# Two commands for a fresh machine: `make demo` and `make test`.
# Each makes a virtual environment with nox in .venv, then runs nox sessions,
# which install what they need. A second run reuses the sessions' environments
# and installs nothing that has not changed; CI (CI set) rebuilds them all.
PYTHON ?= python3
VENV ?= .venv
NOX := $(VENV)/bin/nox

.PHONY: demo test bench docs

$(NOX):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip nox

# The demo runs outside nox, with your PATH, as you would run it: the commands
# it prints at the end then work as printed.
demo: $(NOX)
	$(NOX) --session demo --install-only
	.nox/demo/bin/anybreaker demo

test: $(NOX)
	$(NOX)

bench: $(NOX)
	$(NOX) --session bench

docs: $(NOX)
	$(NOX) --session docs
