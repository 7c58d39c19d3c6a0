#!/usr/bin/env bash
# Install what the local stack and the tests need on a fresh Debian 12 machine (idempotent):
# Debian packages (MariaDB, PostgreSQL, JDK, Maven, Chromium + chromedriver), the Python venv with cdc-claims, its toolchain and the dev stack package (dev/).
# Maven and pip caches live in the home directory, so later runs are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server mariadb-client)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# the desk's browser tests: Debian's Chromium and the chromedriver built with it (no download at test time)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  say "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  say "python venv (.venv) with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml dev/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  say "pip install -e '.[dev]' -e dev/ (the product, its toolchain, the local stack tooling)"
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -e '.[dev]' -e ./dev
  rm -f .venv/.installed-* && touch "$stamp"
fi
