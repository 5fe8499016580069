#!/usr/bin/env bash
# Fuzzes echod with AFL++ (through cargo-afl, on the stable toolchain) for a
# bounded time, then prints what each run found.
#
#   fuzz/run.sh [TARGET] [SECONDS]
#
# TARGET is `framing`, `connection`, `handover`, `http_head`, `proxy_header` or `all` (the default); SECONDS is the
# time per target (default 300). A second run resumes from the corpus the
# first left in fuzz/out/TARGET.
#
# Needs cargo-afl, which builds AFL++ from source once per toolchain:
#   cargo install cargo-afl
#   cargo afl config --build    # only if cargo-afl did not build AFL++ on install
#
# A crash is an input under fuzz/out/TARGET/default/crashes/. Replay it with
# a trace, then add it to tests/simulation.rs as a regression test:
#   ECHOD_SIM_BYTES=FILE cargo test --test simulation seeded -- --nocapture
#   ECHOD_FRAMING_BYTES=FILE cargo test --test simulation framing
set -euo pipefail
cd "$(dirname "$0")"

target=${1:-all}
seconds=${2:-300}
case "$target" in
  all) targets=(framing connection handover http_head proxy_header) ;;
  framing | connection | handover | http_head | proxy_header) targets=("$target") ;;
  *) echo "usage: $0 [framing|connection|handover|http_head|proxy_header|all] [SECONDS]" >&2; exit 64 ;;
esac
if ! cargo afl --version >/dev/null 2>&1; then
  echo "cargo-afl is missing: cargo install cargo-afl" >&2
  exit 69
fi

cargo afl build --release
mkdir -p out

for name in "${targets[@]}"; do
  echo "== $name: fuzzing for $seconds s"
  # No UI (the output is a log); no core_pattern or CPU governor changes
  # (they need a root that touches the host); resume a previous corpus.
  AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_AUTORESUME=1 AFL_NO_AFFINITY=1 \
    cargo afl fuzz -i "seeds/$name" -o "out/$name" -V "$seconds" -t 5000 \
      "target/release/$name" >"out-$name.log" 2>&1 || {
        echo "afl-fuzz failed; its log:" >&2
        tail -20 "out-$name.log" >&2
        exit 70
      }
  stats="out/$name/default/fuzzer_stats"
  grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|edges_found|total_edges|saved_crashes|saved_hangs|stability) ' "$stats"
  crashes=$(find "out/$name/default/crashes" -name 'id:*' | wc -l)
  hangs=$(find "out/$name/default/hangs" -name 'id:*' | wc -l)
  echo "$name: $crashes crashes, $hangs hangs (inputs under fuzz/out/$name/default/)"
done
