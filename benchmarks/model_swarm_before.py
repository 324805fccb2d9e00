"""`model_swarm.py` with earlier behaviours put back, for same-run "before" rows and one-at-a-time tables.

The model runs the node's own code (`DHTPeer._nearest`, `Gossip._reading_plan`, `KeyRead`, the hedge in
`net/routing.py`), so a "before" needs that code as it was. The four behaviours of `4b4c046` are loaded from a checkout
of it (`--tree`); of the three of `16a538a`, two are this tree's code with a constant or class set back, and
`narrow-lookups` is loaded from a checkout of `16a538a` (`--tree`); the two of `bd568ac` are this tree's code set back.
Then `model_swarm.py` runs with the arguments after `--`:

    mkdir /tmp/before-4b4c046 && git archive 4b4c046 | tar -x -C /tmp/before-4b4c046
    python benchmarks/model_swarm_before.py --tree /tmp/before-4b4c046 -- --sizes 1000,10000 --rounds 3 --out F.json
    mkdir /tmp/before-16a538a && git archive 16a538a | tar -x -C /tmp/before-16a538a
    python benchmarks/model_swarm_before.py --tree /tmp/before-16a538a \
        --put-back store-waits-for-all,batch-reads-from-two,narrow-lookups -- --sizes 1000,10000 --rounds 3 --out F.json
    python benchmarks/model_swarm_before.py --put-back beacon-in-both-windows,ping-every-stranger -- --sizes 10000 --out F.json
"""

from __future__ import annotations

import argparse
import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

from swarmnode.lab import swarm_model
from swarmnode.lab.swarm_model import SwarmModel
from swarmnode.net import routing
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.net.replicas import REPLICAS, KeyRead

FROM_TREE = ("lookups-together", "both-windows", "half-second-hedge", "mixed-order")  # 4b4c046's, from --tree
OF_16A538A = ("store-waits-for-all", "batch-reads-from-two", "narrow-lookups")  # 16a538a's, this tree set back
OF_BD568AC = ("beacon-in-both-windows", "ping-every-stranger")  # bd568ac's, this tree set back
BEHAVIOURS = (*FROM_TREE, *OF_16A538A, *OF_BD568AC)


def load(tree: Path, module: str) -> ModuleType:
    """A module of the other tree under a name of its own (its imports resolve to this tree's package)."""
    name = f"before_{module.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, tree / (module.replace(".", "/") + ".py"))
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses look their module up while the class is built
    spec.loader.exec_module(loaded)
    return loaded


def put_back(tree: Path | None, behaviours: set[str]) -> None:
    if "beacon-in-both-windows" in behaviours:  # every beacon under its window's keys and the next's, standing or not
        swarm_model.beacon_places = lambda window, tiers, standing, rules, offset=0: [(w, t) for w in (window, window + 1) for t in tiers]
    if "ping-every-stranger" in behaviours:  # hivemind's own: a full bucket's oldest pinged at every stranger's contact
        swarm_model.ping_only_the_quiet = lambda table, quiet_s=0.0, clock=None: None
    if "store-waits-for-all" in behaviours:  # a store waited for every replica (or the hedge), not for 3
        swarm_model.STORE_QUORUM = REPLICAS
    if "batch-reads-from-two" in behaviours:  # a shard key read from 2 replicas, even for a known signer's batch
        swarm_model.KeyRead = lambda key_id, replicas, quorum, wanted=frozenset(): KeyRead(key_id, replicas, quorum)
    if tree is None:
        return
    # narrow-lookups (16a538a): one search of a beam of 5, however many of the nearest had left;
    # lookups-together (4b4c046): one hivemind lookup for all of an operation's keys
    if behaviours & {"narrow-lookups", "lookups-together"}:
        DHTPeer._nearest = load(tree, "swarmnode.net.peer").DHTPeer._nearest  # type: ignore[method-assign]
    if "both-windows" in behaviours:  # each known shard's windows side by side
        before = load(tree, "swarmnode.net.gossip").Gossip._reading_plan
        Gossip._reading_plan = lambda self, window, newest_first: before(self, window)  # type: ignore[method-assign]
    if "half-second-hedge" in behaviours:  # a store's fixed 0.5 s grace is the same at the model's 100 ms
        routing.SLOW_PEER_S, routing.SLOW_TIMES_TYPICAL = 0.5, 4
    if "mixed-order" in behaviours:  # listed signers not read first (the tree before has no `listed`)
        view = SwarmModel._gossip_view

        def mixed(self: SwarmModel, peer: object) -> object:
            seen = view(self, peer)  # type: ignore[arg-type]
            seen._directory.listed = dict
            return seen

        SwarmModel._gossip_view = mixed  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help=f"a checkout of 4b4c046 (for {', '.join(FROM_TREE)}) or 16a538a "
                        "(for narrow-lookups)")
    parser.add_argument("--put-back", default=",".join(FROM_TREE), help=f"comma-separated, of {', '.join(BEHAVIOURS)}")
    parser.add_argument("model_args", nargs=argparse.REMAINDER, help="-- then model_swarm.py's arguments")
    args = parser.parse_args()
    behaviours = set(args.put_back.split(",")) - {""}
    if unknown := behaviours - set(BEHAVIOURS):
        parser.error(f"--put-back: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BEHAVIOURS)}")
    if args.tree is None and (from_tree := behaviours & {*FROM_TREE, "narrow-lookups"}):
        parser.error(f"--put-back {', '.join(sorted(from_tree))} needs --tree (a checkout of the tree it comes from)")
    put_back(args.tree, behaviours)
    sys.argv = ["model_swarm.py", *[arg for arg in args.model_args if arg != "--"]]
    runpy.run_path(str(Path(__file__).with_name("model_swarm.py")), run_name="__main__")


if __name__ == "__main__":
    main()
