#!/usr/bin/env bash
# Set up Canaria on a fresh machine: Debian's prometheus (for analysis tests and the sandbox), openssl (the
# tenant-safety tests make a test CA with it) and a virtualenv in .venv with the package, its test tools and the Helm library used by the install tests.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test,helm,sandbox]"
echo "Canaria is set up in .venv ($(.venv/bin/canaria --version 2>/dev/null || echo canaria))"
