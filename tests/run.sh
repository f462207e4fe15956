#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls exactly this).
# Installs what the tests need, starts what they use, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use. Installed only when missing, quietly.
# bind9 + bind9-dnsutils: tests/e2e_ddns.rs starts its own named (in a test
# namespace, on [::1]:53) and checks the records with dig.
PACKAGES=(iproute2 procps isc-dhcp-client dhcpcd-base kea-admin bind9 bind9-dnsutils)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --release --locked --bins
# Benchmarks and fuzz targets are built, not run (they are measurements).
cargo build --locked --benches
# The package test also starts the unit's command line as a throwaway user.
export TANDEM_TEST_SERVICE=1
cargo test --locked --lib --bins --tests -- --test-threads=2
