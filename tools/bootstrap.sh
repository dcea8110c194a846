#!/usr/bin/env bash
# Make this checkout ready to run: Debian tools (dig, dnsperf when asked), a virtual env in
# .venv with the project and its test dependencies. Safe to run again; does nothing twice.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: please install ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: $PYTHON is older than 3.11; set PYTHON to a 3.11+ interpreter" >&2
  exit 1
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
