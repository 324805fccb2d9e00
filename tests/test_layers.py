"""The package's layers (docs/DESIGN.md §1): the wire format knows bytes and keys, the network knows the wire and
hivemind, learning knows tasks and torch, operations show and export, the node and the CLI compose them, the
lab stays out of all of it. A bootstrap peer or a census reader never loads torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peer_process import PeerProcess

PACKAGE = Path(__file__).resolve().parents[1] / "swarmnode"
HEAVY = ("torch", "transformers", "reasoning_gym")
# what each layer may import of the package, besides itself: only layers below it
ALLOWED = {
    "config": set(),
    "files": set(),
    "host": set(),
    "wire": {"config", "files"},
    "net": {"wire", "config", "files"},
    "learn": {"wire", "config", "files", "host"},
    "ops": {"learn", "net", "wire", "config", "files", "host"},
    "node": {"ops", "learn", "net", "wire", "config", "files", "host", "__init__"},
    "cli": {"node", "ops", "learn", "net", "wire", "config", "files", "host", "__init__"},
    "lab": {"node", "ops", "learn", "net", "wire", "config", "files", "host", "cli", "__init__"},
}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_layers(path: Path) -> set[str]:
    """The package's layers a module imports, at the top or inside a function (lazy imports count too)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "swarmnode" and len(parts) > 1:
                layers.add(parts[1])
            elif isinstance(node, ast.ImportFrom) and name == "swarmnode":
                layers.update(alias.name for alias in node.names)
    return layers


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "proto" not in path.parts and path.name != "__main__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_module_imports_only_its_own_layer_and_those_below(path):
    layer = layer_of(path)
    if layer == "__init__":
        return
    foreign = imported_layers(path) - ALLOWED[layer] - {layer, "__version__"}
    assert not foreign, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(foreign)}"


def fresh_interpreter(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_of_the_wire_and_the_network_imports_without_the_learning_stack():
    loaded = fresh_interpreter(
        "import importlib, json, pkgutil, sys\n"
        "import swarmnode.wire, swarmnode.net\n"
        "names = [info.name for package in (swarmnode.wire, swarmnode.net)\n"
        "         for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps({'modules': len(names), 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in"
        f" {HEAVY!r} or m.startswith(('swarmnode.learn', 'swarmnode.ops', 'swarmnode.lab')))}}))\n"
    )
    assert loaded["modules"] >= 25 and loaded["loaded"] == []


RECORD_HEAVY = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['LOADED_OUT'], 'w').write(json.dumps("
    f"sorted(m for m in {HEAVY!r} if m in sys.modules))))\n"
    "from swarmnode.cli import main\n"
    "sys.argv = ['swarmnode', *sys.argv[1:]]\n"
    "main()\n"
)


def heavy_modules_of(tmp_path: Path, *args: str, timeout_s: float = 120) -> tuple[list[str], subprocess.CompletedProcess]:
    out = tmp_path / f"loaded-{args[0]}.json"
    done = subprocess.run(
        [sys.executable, "-c", RECORD_HEAVY, *args], capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, "LOADED_OUT": str(out)},
    )
    return json.loads(out.read_text()), done


@pytest.mark.network
def test_a_bootstrap_peer_and_the_census_and_reachability_tools_never_load_torch(tmp_path, monkeypatch):
    out = tmp_path / "loaded-bootstrap.json"
    monkeypatch.setenv("LOADED_OUT", str(out))
    bootstrap = PeerProcess(["-c", RECORD_HEAVY, "bootstrap", "--identity", str(tmp_path / "boot.key")], tmp_path / "bootstrap.log")
    try:
        maddr = bootstrap.read_line()
        swarm, done = heavy_modules_of(tmp_path, "swarm", "--peers", maddr, "--json", "--timeout", "10")
        assert done.returncode == 0 and json.loads(done.stdout)["swarm_id"], done.stderr
        assert swarm == []
        doctor, done = heavy_modules_of(
            tmp_path, "doctor", "--check", "reachability", "--json", "--set", f"network.initial_peers=[{maddr}]",
            "--data-dir", str(tmp_path / "doctor"),
        )
        results = {result["name"]: result["outcome"] for result in json.loads(done.stdout)}
        assert results["reachability"] == "pass", done.stdout
        assert doctor == []
    finally:
        bootstrap.signal(2)
        assert bootstrap.close() == 0, bootstrap.log_tail()
    assert json.loads(out.read_text()) == []
