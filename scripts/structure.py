"""The package's shape, measured from the code: modules per folder, the longest chain of imports, imports that
point from a lower layer to a higher one, import cycles; and, with --trace, the modules one peer rollout
crosses at run time, from the DHT's bytes to the gradient step (two real nodes in one process).

Runs on this checkout or another (`--code DIR`, e.g. a worktree of an older commit), flat or in layer folders.
Usage: python scripts/structure.py [--code DIR] [--trace] [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("base", "wire", "net", "learn", "ops", "top", "lab")  # a layer may import those before it (net and learn: siblings)
SIBLINGS = {frozenset({"net", "learn"})}
# Modules of the flat layout (before the layer folders) by the layer their docstrings put them in.
FLAT_LAYERS = {
    "config": "base", "files": "base", "host": "base", "proto": "base", "__init__": "base",
    "identity": "wire", "envelope": "wire", "rollout": "wire", "presence": "wire", "beacon": "wire",
    "dht": "net", "record": "net", "reachability": "net", "gossip": "net", "census": "net", "peerbook": "net",
    "reputation": "net",
    "tasks": "learn", "verifiers": "learn", "policy": "learn", "memory": "learn", "sapo": "learn", "intake": "learn",
    "learner": "learn", "evaluation": "learn", "checkpoint": "learn",
    "metrics": "ops", "dashboard": "ops", "report": "ops", "doctor": "ops", "export": "ops",
    "node": "top", "cli": "top", "__main__": "top",
    "simulation": "lab", "efficiency": "lab",
}
FOLDER_LAYERS = {"wire": "wire", "net": "net", "learn": "learn", "ops": "ops", "lab": "lab"}


def modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        if "proto" in path.relative_to(package).parts:
            continue
        parts = ["swarmnode", *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in FOLDER_LAYERS:
        return FOLDER_LAYERS[parts[1]]
    if len(parts) == 2 and parts[1] in FOLDER_LAYERS:
        return FOLDER_LAYERS[parts[1]]
    return FLAT_LAYERS.get(parts[-1], "top") if len(parts) > 1 else "base"


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in it (lazy imports inside functions too; not those under
    `if TYPE_CHECKING:`, which never run)."""
    found = set()
    tree = ast.parse(path.read_text())
    for guard in [node for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]:
        guard.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "swarmnode":
                found.add(name)
    return found


def upward(source: str, target: str) -> bool:
    """An import against the layering: to a higher layer, or between the two siblings."""
    low, high = layer_of(source), layer_of(target)
    if low == high:
        return False
    return frozenset({low, high}) in SIBLINGS or ORDER.index(high) > ORDER.index(low)


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    memo: dict[str, list[str]] = {}

    def chain(module: str, visiting: frozenset[str]) -> list[str]:
        if module in memo:
            return memo[module]
        best: list[str] = []
        for target in graph.get(module, ()):
            if target not in visiting:
                candidate = chain(target, visiting | {target})
                best = candidate if len(candidate) > len(best) else best
        memo[module] = [module, *best]
        return memo[module]

    return max((chain(module, frozenset({module})) for module in graph), key=len)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in graph:
        if module not in index:
            visit(module)
    return found


def shape(code: Path) -> dict:
    found = modules(code / "swarmnode")
    graph = {module: imports(path, set(found)) - {module} for module, path in found.items()}
    folders: dict[str, int] = defaultdict(int)
    for path in found.values():
        folders[str(path.parent.relative_to(code))] += path.name != "__init__.py"
    up = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets if upward(source, target))
    chain = longest_chain(graph)
    return {
        "modules": sum(folders.values()),
        "modules_per_folder": dict(sorted(folders.items())),
        "longest_chain": len(chain),
        "chain": chain,
        "upward_imports": up,
        "cycles": cycles(graph),
    }


TRACE = r'''
import json, sys, tempfile, threading, time
from pathlib import Path
from swarmnode.config import load_config
from swarmnode.node import Node

def config(*extra):
    return load_config(None, ["gossip.beacon=false", "gossip.refresh_for_s=0", "eval.every_rounds=0",
                              "metrics.port=null", "model.threads=1", *extra])

entered = []
checks = {"publish": 0, "read": 0}  # signature checks while the sender publishes, and while the receiver reads
window = [None]

def profile(frame, event, arg):
    if event != "call" or window[0] is None:
        return
    module = frame.f_globals.get("__name__", "")
    if not module.startswith("swarmnode"):
        return
    if frame.f_code.co_name == "verify_signature":
        checks[window[0]] += 1
    if window[0] == "read":
        entered.append(module)

with tempfile.TemporaryDirectory() as scratch:
    sender = Node(config(), Path(scratch) / "sender", log=lambda event: None)
    sender.start()
    join = [address for address in sender.status.maddrs]
    receiver = Node(config("network.initial_peers=" + json.dumps(join)), Path(scratch) / "receiver", log=lambda event: None)
    threading.setprofile(profile)
    sys.setprofile(profile)
    receiver.start()
    try:
        window[0] = "publish"
        sender.run_round()
        window[0] = None
        original = receiver._phase

        def phase(name, *args, **kwargs):
            window[0] = "read" if name in ("collect", "rescore", "train") else None
            return original(name, *args, **kwargs)

        receiver._phase = phase
        record = receiver.run_round()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        receiver.close()
        sender.close()
crossings = sum(1 for a, b in zip(entered, entered[1:]) if a != b)
print(json.dumps({"rollouts_in": record.rollouts_in, "groups_external": record.groups_external,
                  "modules": sorted(set(entered)), "boundaries_crossed": crossings,
                  "checks_at_publish": checks["publish"], "checks_at_read": checks["read"]}))
'''


def trace(code: Path) -> dict:
    """Two real nodes (p2pd on 127.0.0.1, the embedded model): the sender's round, then the receiver's. Modules
    are those entered from the start of the receiver's collect to the end of its training step; signature checks
    are counted while the sender publishes (its own check of what it sends, replicas storing it) and while the
    receiver reads."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", TRACE], capture_output=True, text=True, env=env, cwd=code, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the trace failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--trace", action="store_true", help="also trace one peer rollout through two real nodes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = shape(args.code)
    if args.trace:
        result["rollout"] = trace(args.code)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.code}: {result['modules']} modules")
    for folder, count in result["modules_per_folder"].items():
        print(f"  {folder:<24} {count}")
    print(f"longest import chain: {result['longest_chain']} modules: {' -> '.join(result['chain'])}")
    layers = [layer_of(module) for module in result["chain"]]
    print(f"  through the layers: {' -> '.join(layer for index, layer in enumerate(layers) if not index or layers[index - 1] != layer)}")
    print(f"imports from a lower layer to a higher one: {len(result['upward_imports'])}")
    for line in result["upward_imports"]:
        print(f"  {line}")
    print(f"cycles: {len(result['cycles'])} {result['cycles'] or ''}")
    if args.trace:
        rollout = result["rollout"]
        print(f"one peer rollout (collect -> train; {rollout['rollouts_in']} rollouts in, {rollout['groups_external']} "
              f"peers' groups trained): {len(rollout['modules'])} modules, {rollout['boundaries_crossed']} crossings")
        print(f"  signature checks of the sender's batch and directory entry: {rollout['checks_at_publish']} while it "
              f"publishes (its own check, replicas storing them), {rollout['checks_at_read']} while the receiver reads them")
        print("  " + ", ".join(rollout["modules"]))


if __name__ == "__main__":
    main()
