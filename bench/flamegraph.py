#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws them as a flame graph (SVG), and prints the
functions with the most samples on top of the stack (self time) and in the stack (total).

Usage: perf script -i perf.data | bench/flamegraph.py --title TITLE --svg out.svg [--top 25] > top.txt
Our own small tool (no Perl FlameGraph on these machines): one frame per rectangle, width in
proportion to samples, the root at the bottom, the thread name as the first frame.
"""
import argparse
import collections
import html
import re
import sys


def fold(lines):
    """Yields (stack tuple root first, 1) per sample of `perf script` default output."""
    header = None
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if header is not None:
                yield header, frames
            header, frames = None, []
            continue
        if not line.startswith((" ", "\t")):
            header = line.split()[0] if line.split() else "?"
            frames = []
            continue
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else parts[0]
        sym = re.sub(r"\+0x[0-9a-f]+", "", sym)
        sym = re.sub(r" \((?:/[^)]*/)?([^)/]*)\)$", r" [\1]", sym)
        sym = sym.replace("[unknown] [unknown]", "[unknown]")
        # .NET perf-map names carry the tier and a parameter list; keep the method.
        sym = re.sub(r"\[(?:Optimized|OptimizedTier1|Tier0|Tier1|PreJIT|QuickJitted|Instrumented)[^\]]*\]", "", sym)
        sym = re.sub(r"\(.*\)(?= \[|$)", "", sym).strip()
        # "instance void [Vnet.Core] Vnet.Links.UdpLinkTransport::SendBatch [perf-1.map]": the method.
        sym = re.sub(r"^(?:instance )?.*?\[[\w.]+\] ([\w.`<>,]+::[\w.`<>|$]+).*$", r"\1", sym)
        frames.append(sym)
    if header is not None:
        yield header, frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--svg", required=True)
    ap.add_argument("--title", default="profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    stacks = collections.Counter()
    for comm, frames in fold(sys.stdin):
        stacks[tuple([comm] + list(reversed(frames)))] += 1
    total = sum(stacks.values())
    if total == 0:
        print("no samples", file=sys.stderr)
        return 1

    self_time = collections.Counter()
    in_stack = collections.Counter()
    by_thread = collections.Counter()
    for stack, n in stacks.items():
        by_thread[re.sub(r"[-_]?\d+$", "", stack[0])] += n
        if len(stack) > 1:
            self_time[stack[-1]] += n
        for f in set(stack[1:]):
            in_stack[f] += n
    print(f"{total} samples")
    print("\nby thread (name without its number):")
    for name, n in by_thread.most_common(12):
        print(f"  {100.0 * n / total:5.1f}%  {name}")
    print(f"\nself (top of stack), top {args.top}:")
    for name, n in self_time.most_common(args.top):
        print(f"  {100.0 * n / total:5.1f}%  {name}")
    print(f"\ntotal (anywhere in the stack), top {args.top}:")
    for name, n in in_stack.most_common(args.top):
        print(f"  {100.0 * n / total:5.1f}%  {name}")

    # A tree of frames: node = [count, children dict].
    root = [0, {}]
    for stack, n in stacks.items():
        node = root
        node[0] += n
        for f in stack:
            node = node[1].setdefault(f, [0, {}])
            node[0] += n
    width, row = 1600.0, 16
    depth = [0]

    def measure(node, d):
        depth[0] = max(depth[0], d)
        for child in node[1].values():
            measure(child, d + 1)

    measure(root, 0)
    height = (depth[0] + 3) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(width)}" height="{height}" font-family="monospace" font-size="11">',
           f'<text x="4" y="13">{html.escape(args.title)} ({total} samples; width = share of samples; hover for names)</text>']

    def colour(name):
        h = sum(map(ord, name)) % 60
        return f"hsl({h + 10},80%,{55 + h % 15}%)"

    def draw(node, name, x, d):
        w = width * node[0] / total
        if w < 0.5:
            return
        y = height - (d + 1) * row
        pct = 100.0 * node[0] / total
        label = html.escape(name)
        out.append(f'<g><title>{label} ({node[0]} samples, {pct:.1f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{colour(name)}"/>')
        chars = int(w / 6.6)
        if chars > 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + 11}">{html.escape(text)}</text>')
        out.append("</g>")
        cx = x
        for child_name, child in sorted(node[1].items()):
            draw(child, child_name, cx, d + 1)
            cx += width * child[0] / total

    cx = 0.0
    for name, child in sorted(root[1].items()):
        draw(child, name, cx, 0)
        cx += width * child[0] / total
    out.append("</svg>")
    with open(args.svg, "w") as f:
        f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
