#!/usr/bin/env bash
# Prints the path of Debian's Chromium, installing it first (apt-get: the `chromium` package) when absent.
# The report's browser test (tests/report/test_report_browser.py) drives it headless through playwright's
# Python API; playwright never downloads a browser of its own.
#
#   bash tests/report/browser.sh      # a no-op (milliseconds) once chromium is installed
#
# Needs root or sudo to install. Fails loudly, saying what to install, when it cannot.
set -euo pipefail

for candidate in "${DATAOPS_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then
    echo "$candidate"
    exit 0
  fi
done

if [[ "$(id -u)" == "0" ]]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  echo "error: Debian's chromium is not installed and there is no sudo to install it: run 'apt-get install chromium' as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "error: chromium is not installed and apt-get is missing: install Chromium and set DATAOPS_CHROMIUM to its path" >&2
  exit 1
fi

echo "installing Debian's chromium (apt-get)..." >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >&2 || { echo "error: apt-get update failed" >&2; exit 1; }
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2 \
  || { echo "error: apt-get install chromium failed: install Debian's chromium package by hand" >&2; exit 1; }
[[ -x /usr/bin/chromium ]] || { echo "error: apt-get installed chromium but /usr/bin/chromium is missing" >&2; exit 1; }
echo /usr/bin/chromium
