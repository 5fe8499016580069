#!/usr/bin/env python3
"""How long an upgrade in place (SIGUSR2) takes with many connections open,
and what a busy client sees meanwhile. Starts the echod binary given on an
ephemeral loopback port, opens CONNS connections that each hold half a line,
then upgrades ROUNDS times while one more client does echo round trips back
to back. For each upgrade it prints the time from SIGUSR2 to the new
program's "took over" line and the longest round trip the busy client saw;
at the end every held line is finished and must come back whole, exactly
once. Exits 1 if any does not. Standard library only.

    cargo build --release
    python3 benches/upgrade.py target/release/echod 10000
    python3 benches/upgrade.py target/release/echod 10000 3 --workers 2

Arguments after ROUNDS go to echod; with --workers N, an upgrade is over
once every worker of the new program has logged "took over".

The open-file limit must allow CONNS descriptors for this script and as
many for echod (the script raises its soft limit to the hard one).
"""

import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

DEADLINE = 10.0  # seconds any one wait may take before the run fails


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    program, conns = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) >= 4 else 3
    extra = sys.argv[4:]
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    echod = subprocess.Popen(
        [program, "-l", "127.0.0.1:0", "--max-connections", str(conns + 100), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        return run(echod, conns, rounds, workers)
    finally:
        echod.kill()
        echod.wait()


def run(echod, conns, rounds, workers):
    port = None
    for line in echod.stdout:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    if port is None:
        sys.exit("echod exited before it listened")

    # The log is read on a thread of its own, so a line waiting in a buffer
    # is seen at once rather than at the next read that happens to come.
    took_over = threading.Event()
    taken = [0]  # loops of the new program that have taken over, this round

    def follow():
        for line in echod.stdout:
            if "took over" in line:
                taken[0] += 1
                if taken[0] == workers:
                    took_over.set()
            if "upgrade failed" in line:
                print(line.strip(), file=sys.stderr)

    threading.Thread(target=follow, daemon=True).start()

    held = []
    for _ in range(conns):
        client = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        client.sendall(b"half")
        held.append(client)
    busy = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)

    def round_trip():
        start = time.monotonic()
        busy.sendall(b"ping\r\n")
        echoed = b""
        while len(echoed) < 6:
            echoed += busy.recv(16)
        if echoed != b"ping\r\n":
            sys.exit(f"the busy client got {echoed!r}")
        return time.monotonic() - start

    round_trip()
    for n in range(1, rounds + 1):
        took_over.clear()
        taken[0] = 0
        start = time.monotonic()
        echod.send_signal(signal.SIGUSR2)
        worst = 0.0
        while not took_over.is_set():
            worst = max(worst, round_trip())
            if time.monotonic() - start > DEADLINE:
                sys.exit(f"upgrade {n}: no 'took over' line within {DEADLINE} s")
        took = time.monotonic() - start
        worst = max(worst, round_trip())
        print(
            f"upgrade {n}: {conns} connections: SIGUSR2 to 'took over' "
            f"{1000 * took:.1f} ms; longest round trip meanwhile {1000 * worst:.1f} ms",
            flush=True,
        )

    for client in held:
        client.sendall(b" done\r\n")
    whole = 0
    for client in held:
        echoed = b""
        while not echoed.endswith(b"\r\n"):
            chunk = client.recv(64)
            if not chunk:
                break
            echoed += chunk
        whole += echoed == b"half done\r\n"
    print(f"{whole}/{conns} held lines came back whole after {rounds} upgrades")
    return 0 if whole == conns else 1


if __name__ == "__main__":
    sys.exit(main())
