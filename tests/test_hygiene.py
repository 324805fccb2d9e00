"""A gate over the package source: no code paths that turn peer bytes into code or objects."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swarmnode"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "proto" not in p.parts)
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec"}
WILDCARD = re.compile(r"(/ip4/)?0\.0\.0\.0(/tcp/\d+.*)?|/ip6/::(/tcp/\d+.*)?")


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and name in FORBIDDEN_CALLS:
                found.append(f"{where} calls {name}()")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append(f"{where} calls torch.load without weights_only=True")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "yaml":
                found.append(f"{where} calls yaml.load (use yaml.safe_load)")
            trust = keywords.get("trust_remote_code")
            if isinstance(trust, ast.Constant) and trust.value is True:
                found.append(f"{where} passes trust_remote_code=True")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if WILDCARD.fullmatch(node.value.strip()):  # a value to bind to; prose may name it as a fix
                found.append(f"{where} hard-codes a wildcard address {node.value!r}")
    return found


def test_sources_are_found():
    assert len(SOURCES) >= 5


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_pickle_eval_unsafe_torch_load_or_wildcard_bind(path):
    assert violations(path) == []


def test_the_gate_itself_catches_each_pattern(tmp_path):
    bad = tmp_path / "swarmnode" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import pickle\nimport torch, yaml\n"
        "eval('1')\ntorch.load('x')\nyaml.load('a')\n"
        "f(trust_remote_code=True)\nhost = '0.0.0.0'\nlisten = '/ip4/0.0.0.0/tcp/4001'\n"
        "hint = 'set network.host=0.0.0.0 to accept peers'\n"  # prose naming the fix is fine
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "swarmnode"
    try:
        assert len(violations(bad)) == 7
    finally:
        PACKAGE = saved


def test_ruff_finds_nothing():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    result = subprocess.run([ruff, "check", str(PACKAGE.parent)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
