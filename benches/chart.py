#!/usr/bin/env python3
"""Draws a chart from the JSON that `cargo bench --bench e2e -- --json FILE`
writes, one panel per kind of result found: ping-pong throughput against
connections and latency percentiles at 100 connections (docs/benchmarks.svg),
connection churn (cycles/s and server CPU per cycle) and the noisy neighbour
(the small clients' throughput kept beside a bulk group, their p99 growth,
the bulk group's MB/s) (docs/benchmarks-churn.svg). Several JSON files may
be given; their results are put together. Standard library only.

    python3 benches/chart.py results.json docs/benchmarks.svg
    python3 benches/chart.py churn.json noisy.json docs/benchmarks-churn.svg
"""

import json
import math
import sys

# One colour per peer of benches/e2e/peers.rs; a peer missing here is drawn
# in black.
COLORS = {
    "echod": "#d62728",
    "floor": "#2ca02c",
    "tokio-current": "#1f77b4",
    "tokio-multi": "#17becf",
    "threads": "#7f7f7f",
}
W, H = 460, 300  # one panel
PAD_L, PAD_R, PAD_T, PAD_B = 70, 20, 40, 55


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;")


def text(x, y, s, size=12, anchor="middle", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{esc(s)}</text>')


def human_rate(v):
    return f"{v / 1000:.0f}k" if v >= 1000 else f"{v:.0f}"


def human_ns(ns):
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if ns >= scale:
            return f"{ns / scale:g} {unit}"
    return f"{ns:g} ns"


def nice_ticks(top, n=5):
    step = 10 ** math.floor(math.log10(top / n))
    for m in (1, 2, 5, 10):
        if top / (step * m) <= n:
            step *= m
            break
    return [i * step for i in range(int(top // step) + 2)]


def throughput_panel(workloads, ox):
    """Lines per second against connections, one line per peer (log x)."""
    rows = sorted((w for w in workloads if w["workload"].startswith("pingpong-")),
                  key=lambda w: w["conns"])
    out = [text(ox + W / 2, 20, "Ping-pong throughput, 64 B lines", 14, weight="bold")]
    if not rows:
        return out
    xs = [w["conns"] for w in rows]
    top = max(p["lines_per_s"] for w in rows for p in w["peers"]) * 1.1
    ticks = nice_ticks(top)
    top = ticks[-1]
    x0, x1, y0, y1 = ox + PAD_L, ox + W - PAD_R, H - PAD_B, PAD_T
    lx = lambda c: x0 + (math.log10(c) - math.log10(xs[0])) / \
        max(math.log10(xs[-1]) - math.log10(xs[0]), 1e-9) * (x1 - x0)
    ly = lambda v: y0 - v / top * (y0 - y1)
    for t in ticks:
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{ly(t):.1f}" y2="{ly(t):.1f}" stroke="#ddd"/>')
        out.append(text(x0 - 6, ly(t) + 4, human_rate(t), 11, "end"))
    for c in xs:
        out.append(text(lx(c), y0 + 16, f"{c:,}", 11))
    out.append(text((x0 + x1) / 2, y0 + 36, "connections (log scale)", 12))
    out.append(text(ox + 16, (y0 + y1) / 2, "lines/s", 12, "middle")
               .replace("<text", f'<text transform="rotate(-90 {ox + 16} {(y0 + y1) / 2})"'))
    peers = [p["peer"] for p in rows[0]["peers"]]
    for i, peer in enumerate(peers):
        pts = [(lx(w["conns"]), ly(next(p["lines_per_s"] for p in w["peers"] if p["peer"] == peer)))
               for w in rows]
        color = COLORS.get(peer, "#000")
        width = 3 if peer == "echod" else 2
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        out.append(f'<rect x="{x0 + 10}" y="{y1 + 8 + i * 16}" width="12" height="3" fill="{color}"/>')
        out.append(text(x0 + 28, y1 + 13 + i * 16, peer, 11, "start"))
    return out


def latency_panel(workloads, ox):
    """p50, p99 and p99.9 by peer at 100 connections, bars on a log scale."""
    w = next((w for w in workloads if w["workload"] == "pingpong-100"), None)
    out = [text(ox + W / 2, 20, "Latency, 100 connections ping-pong", 14, weight="bold")]
    if w is None:
        return out
    keys = [("p50_ns", "p50"), ("p99_ns", "p99"), ("p999_ns", "p99.9")]
    values = [p[k] for p in w["peers"] for k, _ in keys if p[k] > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    x0, x1, y0, y1 = ox + PAD_L, ox + W - PAD_R, H - PAD_B, PAD_T
    ly = lambda v: y0 - (math.log10(max(v, lo)) - math.log10(lo)) / \
        (math.log10(hi) - math.log10(lo)) * (y0 - y1)
    t = lo
    while t <= hi:
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{ly(t):.1f}" y2="{ly(t):.1f}" stroke="#ddd"/>')
        out.append(text(x0 - 6, ly(t) + 4, human_ns(t), 11, "end"))
        t *= 10
    group = (x1 - x0) / len(w["peers"])
    bar = group / (len(keys) + 1)
    for i, p in enumerate(w["peers"]):
        gx = x0 + i * group + bar / 2
        color = COLORS.get(p["peer"], "#000")
        for j, (k, label) in enumerate(keys):
            x = gx + j * bar
            y = ly(p[k])
            opacity = [1.0, 0.65, 0.35][j]
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{y0 - y:.1f}" '
                       f'fill="{color}" fill-opacity="{opacity}"/>')
        out.append(text(gx + bar * len(keys) / 2, y0 + 16, p["peer"], 11))
    out.append(text((x0 + x1) / 2, y0 + 36, "bars: p50, p99, p99.9 (log scale)", 12))
    return out


def bar_panel(ox, oy, title, bars, top, tick_label, ylabel, note=None):
    """Bars by peer: `bars` is (peer, value, label above, label below)."""
    out = [text(ox + W / 2, oy + 20, title, 14, weight="bold")]
    if not bars:
        return out
    ticks = nice_ticks(top)
    top = ticks[-1]
    x0, x1, y0, y1 = ox + PAD_L, ox + W - PAD_R, oy + H - PAD_B, oy + PAD_T
    ly = lambda v: y0 - v / top * (y0 - y1)
    for t in ticks:
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{ly(t):.1f}" y2="{ly(t):.1f}" stroke="#ddd"/>')
        out.append(text(x0 - 6, ly(t) + 4, tick_label(t), 11, "end"))
    out.append(text(ox + 16, (y0 + y1) / 2, ylabel, 12, "middle")
               .replace("<text", f'<text transform="rotate(-90 {ox + 16} {(y0 + y1) / 2})"'))
    group = (x1 - x0) / len(bars)
    for i, (peer, value, above, below) in enumerate(bars):
        color = COLORS.get(peer, "#000")
        x = x0 + i * group + group * 0.15
        y = ly(max(value, 0))
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{group * 0.7:.1f}" height="{y0 - y:.1f}" '
                   f'fill="{color}"/>')
        out.append(text(x + group * 0.35, y - 4, above, 10))
        out.append(text(x + group * 0.35, y0 + 14, peer, 11))
        out.append(text(x + group * 0.35, y0 + 28, below, 10, fill="#555"))
    if note:
        out.append(text((x0 + x1) / 2, y0 + 46, note, 11))
    return out


def churn_panel(workloads, ox, oy):
    """Cycles per second by peer, server CPU per cycle under each bar."""
    w = next((w for w in workloads if w["workload"] == "churn"), None)
    if w is None:
        return []
    bars = [(p["peer"], p["cycles_per_s"], human_rate(p["cycles_per_s"]),
             f'{p["server_cpu_ns_per_cycle"] / 1000:.1f} µs CPU') for p in w["peers"]]
    top = max(b[1] for b in bars) * 1.15
    return bar_panel(ox, oy, f'Churn: {w["conns"]} cycles in flight, 1 line each', bars, top,
                     human_rate, "cycles/s", "under each bar: server CPU per cycle")


def noisy_panel(workloads, ox, oy):
    """The small clients' throughput kept beside the bulk group, by peer."""
    w = next((w for w in workloads if w["workload"] == "noisy"), None)
    if w is None:
        return []
    bars = [(p["peer"], 100 * p["kept"], f'{100 * p["kept"]:.0f}%, p99 x{p["p99_growth"]:.1f}',
             f'bulk {p["bulk_bytes_per_s"] / 1e6:.0f} MB/s') for p in w["peers"]]
    top = max(110, max(b[1] for b in bars) * 1.15)
    return bar_panel(ox, oy, f'Noisy neighbour: {w["small_conns"]} small clients, '
                     f'{w["bulk_conns"]} bulk', bars, top, lambda t: f"{t:.0f}%",
                     "small clients' throughput kept", "under each bar: the bulk group's MB/s")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    workloads = []
    for path in sys.argv[1:-1]:
        with open(path) as f:
            workloads += json.load(f)
    panels = []
    if any(w["workload"].startswith("pingpong-") for w in workloads):
        panels += [lambda ox, oy: throughput_panel(workloads, ox),
                   lambda ox, oy: latency_panel(workloads, ox)]
    if any(w["workload"] == "churn" for w in workloads):
        panels.append(lambda ox, oy: churn_panel(workloads, ox, oy))
    if any(w["workload"] == "noisy" for w in workloads):
        panels.append(lambda ox, oy: noisy_panel(workloads, ox, oy))
    if not panels:
        sys.exit("no result the chart knows how to draw")
    # The ping-pong panels draw at the top row only (they take no y offset).
    parts = []
    for i, panel in enumerate(panels):
        parts += panel((i % 2) * W, (i // 2) * H)
    rows = (len(panels) + 1) // 2
    width = W * min(2, len(panels))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{rows * H}" '
           f'viewBox="0 0 {width} {rows * H}" font-family="sans-serif">\n'
           f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(parts) + "\n</svg>\n")
    with open(sys.argv[-1], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
