# The two commands most people need:
#   make demo   local Synapse + the bot + alice and bob in an encrypted "Demo pod"
#   make test   lint, unit and end-to-end tests against a real Synapse
# Dependencies come from requirements/*.txt (exact versions with hashes); `make lock` refreshes them.
PYTHON ?= python3
VENV := .venv
SYNAPSE_VENV := .venv-synapse
SYNAPSE_SPEC ?= matrix-synapse>=1.100,<2

# `make lock` keeps the pinned versions that still fit pyproject.toml; `make lock LOCK_ARGS=--upgrade`
# moves every package to its newest fitting version.
LOCK_ARGS ?=
LOCK := uv pip compile pyproject.toml --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)

.PHONY: demo test console bench lint lock clean signal-cli

$(VENV)/.installed: pyproject.toml requirements/dev.txt
	@echo "Installing the bot's Python packages into $(VENV)/ (first time only, about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements/dev.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

# Synapse gets a virtual environment of its own: its pins must not meet the bot's.
$(SYNAPSE_VENV)/.installed:
	@echo "Installing Synapse, the Matrix homeserver the demo and tests run, into $(SYNAPSE_VENV)/ (first time only, about a minute)..."
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install --quiet --upgrade pip
	$(SYNAPSE_VENV)/bin/pip install --quiet '$(SYNAPSE_SPEC)'
	touch $@

# signal-cli and a Java runtime for the contract tests against the real daemon (cached in .cache/).
signal-cli: $(VENV)/.installed
	scripts/install-signal-cli.sh $(VENV)

demo: $(VENV)/.installed $(SYNAPSE_VENV)/.installed
	MAB_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python $(VENV)/bin/mutual-aid-bot demo

console: $(VENV)/.installed
	$(VENV)/bin/mutual-aid-bot console

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bot tests $(wildcard bench)

test: $(VENV)/.installed $(SYNAPSE_VENV)/.installed signal-cli lint
	MAB_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python MAB_REQUIRE_SYNAPSE=1 \
		MAB_SIGNAL_CLI=$(CURDIR)/.cache/signal-cli/bin/signal-cli \
		$(VENV)/bin/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed $(SYNAPSE_VENV)/.installed
	$(VENV)/bin/python bench/pipeline.py
	$(VENV)/bin/python bench/signal_roundtrip.py
	$(VENV)/bin/python bench/inputsize.py
	$(VENV)/bin/python bench/report.py
	$(VENV)/bin/python bench/looplag.py
	MAB_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python $(VENV)/bin/python bench/roundtrip.py
	MAB_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python $(VENV)/bin/python bench/manyrooms.py \
		--workdir .cache/manyrooms

# Refresh the pinned versions after changing dependencies in pyproject.toml (needs the network).
lock: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/$(LOCK) -o requirements/runtime.txt
	$(VENV)/bin/$(LOCK) --extra dev -o requirements/dev.txt

clean:
	rm -rf $(VENV) $(SYNAPSE_VENV) .demo .pytest_cache .cache
