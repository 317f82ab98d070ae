#!/usr/bin/env bash
# Set up Canaria on a fresh machine: Debian's prometheus (for analysis tests and the sandbox) and a
# virtualenv in .venv with the package, its test tools and the Helm library used by the install tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test,helm,sandbox]"
echo "Canaria is set up in .venv ($(.venv/bin/canaria --version 2>/dev/null || echo canaria))"
