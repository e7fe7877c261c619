#!/usr/bin/env bash
# The test command of README.md: builds and runs every test of the workspace, including the
# replay of the committed fuzz corpus and the golden vectors of docs/protocol.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
