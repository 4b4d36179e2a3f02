#!/usr/bin/env bash
# Installs what building and testing pktvault needs on Debian or Ubuntu, as root:
# libpcap and clang headers for the build; tcpdump, tshark, curl and iproute2
# (network namespaces) for the tests.
# Packages already present are left alone.
set -euo pipefail

packages=(libpcap-dev libclang-dev clang tcpdump tshark time curl iproute2)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "setup: installing ${missing[*]}"
    # The tshark package prompts whether non-root users may capture; preseed "no".
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install Rust 1.85 or newer (https://rustup.rs) and run this again" >&2
    exit 1
fi
