#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests of the
# normal build, the edge-attack and real-partition tests in a release build,
# then the simulator
# build (--cfg madsim, in target/sim so the
# two builds never invalidate each other), which runs every scenario in
# scenarios/ and compares the real partition figures with the simulator's,
# then sweeps the library over three more seeds. Ends with one line
# totalling every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { "$@" 2>&1 | tee -a "$log"; }

# The PostgreSQL engine's tests start throwaway servers of their own
# (initdb, pg_ctl on loopback, postgres_engines.rs and the *_postgres cases
# of cluster_kill.rs and cluster_chat.rs: about a minute): Debian's
# postgresql, installed if missing, before the tests run.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi
run cargo fmt --all --check
# One dependency direction: no module imports another in a circle.
run scripts/module-cycles
run cargo clippy --workspace --all-targets --locked -- -D warnings
# The benchmark's peer pipelines (node/tests/bench_sweep.rs): Debian's
# RabbitMQ and NATS servers, installed if missing; each test runs its own
# throwaway server on loopback and stops it.
peers=()
command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || peers+=(rabbitmq-server)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || peers+=(nats-server)
if [ ${#peers[@]} -gt 0 ]; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${peers[@]}"
fi
run cargo test --workspace --locked
# Trust at the edge on real processes, in the build operators run: oversize
# IMs, reused ids, a corrupted queue log, a full disk (a tmpfs, as root),
# a flood of 10,000 silent connections, private data files.
run cargo test --release -p holdfast --locked --test edge_attacks
# Real partitions: each node in its own network namespace, cuts made with
# nftables inside them (as root; ip and nft installed if missing). Five
# cases at once, the longest a 4-minute cut: about 5 minutes.
# The status page in a real browser (Debian's chromium, headless).
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
run cargo test --release -p holdfast --locked --test real_partitions
run cargo test -p holdfast --locked --test status_page -- --ignored
run cargo sim-clippy --locked -- -D warnings
run cargo sim-test --locked
# Calibration, kept: the real partition cases above run again as scenario
# files (scenarios/calibration/*.toml) and their figures must agree with
# the real ones within the tolerances of sim/src/report/calibration.rs. Ignored
# in a plain `cargo sim-test`: it needs the real suite's figures.
run cargo sim-test --locked --test calibration -- --ignored
# Every scenario once more under a seed it was not written for, with a
# sample of runs repeated to check that their traces are identical.
run cargo sim sweep scenarios --seeds 3 --first-seed 1000 --check-determinism-every 6

awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "all tests: %d passed, %d failed\n", passed, failed }' "$log"
