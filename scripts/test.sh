#!/usr/bin/env bash
# The whole test suite: unit and integration tests of the normal build, then
# the simulator build (--cfg madsim, in target/sim so the two builds never
# invalidate each other), which runs every scenario in scenarios/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo sim-clippy --locked -- -D warnings
cargo sim-test --locked
