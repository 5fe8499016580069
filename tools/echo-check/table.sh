#!/bin/sh
# Regenerates the echo-check table in docs/LEARN.md: builds the ladder's
# examples, echod and the benchmark peers, runs echo-check against each
# (tools/echo-check/tests/ladder.rs does the running) and writes the
# verdicts between the table's markers. Without ECHO_CHECK_BLESS the same
# test only compares, which is how CI keeps the table true.
set -eu
cd "$(dirname "$0")/../.."
ECHO_CHECK_BLESS=1 CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" \
    cargo test --locked -p echo-check --test ladder -- --nocapture
