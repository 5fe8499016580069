#!/usr/bin/env python3
"""How long an idle echod takes to answer a Prometheus scrape. Starts the
echod binary given with `--metrics-listen` on an ephemeral loopback port,
then makes SCRAPES scrapes one after another (each a new connection, as
Prometheus makes them: `GET /metrics`, `Connection: close`) and prints the
median, 99th percentile and longest time from connect to the end of the
response. Every response must be `200 OK` with the `echod_build_info`
series, or the run fails. Standard library only.

    cargo build --release
    python3 benches/scrape.py target/release/echod 1000
"""

import re
import socket
import subprocess
import sys
import time

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: text/plain\r\n\r\n"


def scrape(address):
    start = time.perf_counter()
    with socket.create_connection(address, timeout=10) as stream:
        stream.sendall(REQUEST)
        response = b""
        while True:
            chunk = stream.recv(65536)
            if not chunk:
                break
            response += chunk
    took = time.perf_counter() - start
    if not response.startswith(b"HTTP/1.1 200 OK") or b"echod_build_info" not in response:
        sys.exit(f"not a good scrape: {response[:200]!r}")
    return took


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    scrapes = int(sys.argv[2]) if len(sys.argv) == 3 else 1000
    echod = subprocess.Popen(
        [sys.argv[1], "-l", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        for line in echod.stdout:
            found = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", line)
            if found:
                address = ("127.0.0.1", int(found.group(1)))
                break
        if address is None:
            sys.exit("echod exited before it served metrics")
        scrape(address)  # warm-up
        times = sorted(scrape(address) for _ in range(scrapes))
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(
            f"{scrapes} scrapes of an idle echod: median {1000 * pick(0.5):.2f} ms, "
            f"p99 {1000 * pick(0.99):.2f} ms, longest {1000 * times[-1]:.2f} ms"
        )
    finally:
        echod.kill()
        echod.wait()


if __name__ == "__main__":
    main()
