"""hivemind's DHT and p2p without torch: the packages `hivemind`, `hivemind.utils` and `hivemind.dht` import
every name of their `__init__` eagerly, and some of those names (the averager, MoE, `MPFuture`, tensor
descriptors) import torch, 2 s and hundreds of MB that a bootstrap peer, a census reader or a DHT-only test
never use. `install()` registers these three packages as lazy ones: a name of their `__init__` is imported from
its own submodule when first used, so `import hivemind.dht.node` loads only what the DHT needs, and
`hivemind.DHT` or `hivemind.utils.MPFuture` still work, torch and all, for whoever asks.

The `__init__` files must hold nothing but a docstring, `from ... import` lines and literal assignments (true
of hivemind 1.1.x); anything else fails loudly here, and tests/test_hivemind_internals.py checks every name
of the real packages resolves the same way.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types

LAZY_PACKAGES = ("hivemind", "hivemind.utils", "hivemind.dht")


class HivemindLayoutChanged(ImportError):
    """A lazily imported hivemind package's __init__ does more than import names: this module needs updating."""


def names_of(package: str) -> dict[str, tuple[str, str]]:
    """What `package`'s __init__ exports: name -> (module it comes from, name there); literal assignments map to
    ("", repr of the value)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise HivemindLayoutChanged(f"{package} is not installed")
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), spec.origin)
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                names[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = ("", repr(ast.literal_eval(node.value)))
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):  # a docstring
            raise HivemindLayoutChanged(f"{spec.origin} line {node.lineno}: not an import, a literal or a docstring")
    return names


def _lazy_package(package: str) -> types.ModuleType:
    spec = importlib.util.find_spec(package)
    module = importlib.util.module_from_spec(spec)
    names = names_of(package)
    for name, (source, value) in names.items():
        if not source:
            module.__dict__[name] = ast.literal_eval(value)

    def __getattr__(name: str) -> object:
        if name not in names or not names[name][0]:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        source, original = names[name]
        try:
            value = getattr(importlib.import_module(source), original)
        except AttributeError:  # `from package import submodule`
            value = importlib.import_module(f"{source}.{original}")
        module.__dict__[name] = value
        return value

    module.__getattr__ = __getattr__  # PEP 562
    module.__lazy__ = True
    return module


def install() -> None:
    """Register the lazy packages, unless hivemind is imported already (then it is the real one, and stays)."""
    if "hivemind" in sys.modules:
        return
    for package in LAZY_PACKAGES:
        module = _lazy_package(package)
        sys.modules[package] = module
        parent, _, child = package.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
