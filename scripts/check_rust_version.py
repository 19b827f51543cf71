#!/usr/bin/env python3
"""Checks that Cargo.toml's rust-version is at least the rust-version every dependency of the
library declares (all features, normal and build dependencies; dev-dependencies excluded).

The toolchain of that version cannot be installed on our CI machines (only crates.io, PyPI,
Debian and npm are reachable), so this and clippy's `incompatible_msrv` lint (which checks
our own use of the standard library against rust-version) stand in for building with it.
"""
import json
import subprocess
import sys


# Dependencies behind these cfgs exist only in a dependency's own concurrency tests (loom
# builds set `--cfg loom`); no build of elvon sets them. (evmap's left-right has loom
# behind `cfg(loom)`, and loom's generator pulls windows crates needing Rust 1.95.)
TEST_ONLY_CFGS = {"cfg(loom)"}


def parse(v):
    return tuple(int(x) for x in v.split(".")) + (0,) * (3 - len(v.split(".")))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]
declared = packages[root].get("rust_version")
if not declared:
    sys.exit("error: Cargo.toml declares no rust-version")

seen, stack = set(), [root]
while stack:
    node = stack.pop()
    if node in seen:
        continue
    seen.add(node)
    for dep in nodes[node]["deps"]:
        if any(
            k["kind"] in (None, "build") and k.get("target") not in TEST_ONLY_CFGS
            for k in dep["dep_kinds"]
        ):
            stack.append(dep["pkg"])

needs = max(
    (parse(packages[i]["rust_version"]), packages[i]["name"])
    for i in seen
    if i != root and packages[i].get("rust_version")
)
if parse(declared) < needs[0]:
    sys.exit(
        f"error: rust-version {declared} is below {'.'.join(map(str, needs[0]))}, "
        f"which {needs[1]} needs; raise it in Cargo.toml"
    )
print(f"rust-version {declared} covers every dependency (highest: {needs[1]}, "
      f"{'.'.join(map(str, needs[0]))})")
