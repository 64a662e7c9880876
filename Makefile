# The two commands most people need:
#   make demo   local Synapse + the bot + alice and bob in an encrypted "Demo pod"
#   make test   lint, unit and end-to-end tests against a real Synapse
PYTHON ?= python3
VENV := .venv
SYNAPSE_VENV := .venv-synapse
SYNAPSE_SPEC ?= matrix-synapse>=1.100,<2

.PHONY: demo test console bench lint clean signal-cli

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Synapse gets a virtual environment of its own: its pins must not meet the bot's.
$(SYNAPSE_VENV)/.installed:
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
	MAB_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python $(VENV)/bin/python bench/roundtrip.py

clean:
	rm -rf $(VENV) $(SYNAPSE_VENV) .demo .pytest_cache .cache
