#!/usr/bin/env bash
# Sets everything up, builds pktvault, generates a sample capture, imports it
# into ./pktvault-data and extracts one host's HTTPS packets as a pcap.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pktvault-target}"
# The same targets as scripts/test.sh, so both share one build of RocksDB:
# a build without the test targets unifies other crate features and
# compiles RocksDB again.
cargo build --workspace --all-targets
bin="$CARGO_TARGET_DIR/debug"

sample=pktvault-sample.pcap
data=pktvault-data
"$bin/pktvault-gen" --seed 7 --packets 200000 -w "$sample"
rm -rf "$data"
"$bin/pktvault" import --data-dir "$data" "$sample"
"$bin/pktvault" status --data-dir "$data"
"$bin/pktvault" extract --data-dir "$data" --begin 1700000000 --end 1700000002 \
    -w host-https.pcap host 10.0.0.5 and port 443
echo "first packets of host-https.pcap:"
tcpdump -nr host-https.pcap -c 5 2>/dev/null
