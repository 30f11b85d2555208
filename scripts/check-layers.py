#!/usr/bin/env python3
"""check-layers.py - calls and #includes only go down the layers.

The layers are drawn in docs/architecture.md ("Layers") and listed in
scripts/layers.txt: one module per line, "layer module", where a module is a
source file's stem (src/net/ring.c is "ring") and its header
include/ringchat/<module>.h. This check fails when

  * a source file #includes "ringchat/<m>.h" of a module in a higher layer;
  * an object file uses a function (or object) defined by a module in a
    higher layer (read from `nm` of the built objects);
  * modules of the same layer use each other in a circle.

Usage: check-layers.py BUILD_DIR   (a configured and built meson directory)
Exit status 0 when clean, 1 with one line per violation, 2 on usage errors.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_layers():
    layers, order = {}, []
    with open(os.path.join(ROOT, "scripts", "layers.txt"), encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            if len(line) != 2:
                sys.exit(f"layers.txt:{ln}: want 'LAYER MODULE'")
            name, mod = line
            if name not in order:
                order.append(name)
            layers[mod] = order.index(name)
    return layers, order


def sources():
    for d, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if f.endswith(".c"):
                yield os.path.join(d, f)


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    build = sys.argv[1]
    layers, order = load_layers()
    bad = []
    srcs = [s for s in sources() if "/tools/" not in s]
    for s in srcs:
        m = stem(s)
        if m not in layers:
            bad.append(f"{os.path.relpath(s, ROOT)}: module '{m}' has no layer in scripts/layers.txt")
    for h in os.listdir(os.path.join(ROOT, "include", "ringchat")):
        if h.endswith(".h") and stem(h) not in layers:
            bad.append(f"include/ringchat/{h}: module '{stem(h)}' has no layer in scripts/layers.txt")
    if bad:
        print("\n".join(bad))
        return 1

    inc_re = re.compile(r'^\s*#\s*include\s+"ringchat/([A-Za-z0-9_]+)\.h"', re.M)
    files = srcs + [os.path.join(ROOT, "include", "ringchat", h)
                    for h in os.listdir(os.path.join(ROOT, "include", "ringchat")) if h.endswith(".h")]
    for s in files:
        m = stem(s)
        with open(s, encoding="utf-8") as f:
            text = f.read()
        for inc in inc_re.findall(text):
            if inc in layers and layers[inc] > layers[m]:
                bad.append(f"{os.path.relpath(s, ROOT)} ({order[layers[m]]}) includes "
                           f"ringchat/{inc}.h ({order[layers[inc]]})")

    # Symbols from the objects meson built for the node's modules: an object
    # is named after its source path with '/' as '_' (src/net/ring.c ->
    # net_ring.c.o or src_net_ring.c.o).
    flat = {}
    for s in srcs:
        rel = os.path.relpath(s, os.path.join(ROOT, "src"))[:-2].replace(os.sep, "_")
        flat[rel] = stem(s)
        flat["src_" + rel] = stem(s)
    defined, used = {}, {}
    for d, _, fs in os.walk(build):
        if not os.path.basename(d).startswith(("libringchat_core", "libringchat_proto", "libringchat_link", "ringchatd")):
            continue
        for f in fs:
            if not f.endswith(".c.o") or f[:-4] not in flat:
                continue
            m = flat[f[:-4]]
            out = subprocess.run(["nm", os.path.join(d, f)], capture_output=True, text=True).stdout
            for line in out.splitlines():
                p = line.split()
                if len(p) == 3 and p[1] in "TDBR":
                    defined.setdefault(p[2], m)
                elif len(p) == 2 and p[0] == "U":
                    used.setdefault(m, set()).add(p[1])
    edges = set()
    for m, syms in used.items():
        for sym in syms:
            d = defined.get(sym)
            if not d or d == m:
                continue
            if layers[d] > layers[m]:
                bad.append(f"{m} ({order[layers[m]]}) calls {sym}() of {d} ({order[layers[d]]})")
            elif layers[d] == layers[m]:
                edges.add((m, d))
    # circles inside a layer
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    seen, stack, onstack = {}, [], set()
    cycles = []

    def dfs(v):
        seen[v] = True
        stack.append(v)
        onstack.add(v)
        for w in sorted(graph.get(v, ())):
            if w in onstack:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in seen:
                dfs(w)
        stack.pop()
        onstack.discard(v)

    for v in sorted(graph):
        if v not in seen:
            dfs(v)
    for c in cycles:
        bad.append("circle in layer " + order[layers[c[0]]] + ": " + " -> ".join(c))
    if bad:
        print("\n".join(sorted(set(bad))))
        print(f"check-layers: {len(set(bad))} violation(s); see docs/architecture.md, Layers")
        return 1
    print(f"check-layers: {len(srcs)} modules, calls and includes go down the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
