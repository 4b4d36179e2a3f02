#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite. The tests compare
# pktvault with tcpdump on the capture corpus in ../shared/corpus (set
# PKTVAULT_CORPUS to use another folder) and record the loopback interface,
# so they run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
corpus="${PKTVAULT_CORPUS:-../shared/corpus}"
if [ ! -f "$corpus/MANIFEST.tsv" ]; then
    echo "test: the capture corpus is missing at $corpus; put it there or set PKTVAULT_CORPUS" >&2
    exit 1
fi
# One target folder outside the clone, shared by every checkout, so the
# RocksDB build (over ten minutes on two cores) is reused.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pktvault-target}"
# Cargo may take another checkout's build of these crates as up to date, and
# their tests find the corpus through the checkout they were built in. So
# they are always rebuilt here, while dependencies such as RocksDB stay cached.
cargo clean --quiet -p pktvault-schema -p pktvault-engine -p pktvault-server -p pktvault-cli -p pktvault-suite
cargo build --workspace --all-targets
# The macro-benchmark runs on a small trace as a smoke test; its numbers mean
# nothing in a debug build and are not checked.
python3 benches/compare.py --smoke --bin "$CARGO_TARGET_DIR/debug"
cargo test --workspace --all-targets
