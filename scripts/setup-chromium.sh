#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (playwright-core drives /usr/bin/chromium; never
# `npx playwright install`, which downloads a browser). Idempotent, non-interactive; run as root.
# Ends by printing the browser version.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup-chromium: /usr/bin/chromium is missing; run as root to install it" >&2; exit 1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version
