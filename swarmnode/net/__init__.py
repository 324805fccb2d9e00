"""The network: the DHT peer, storage and validation, reachability, gossip, directory and census.

Nothing here needs torch: hivemind's DHT is imported without the package-level imports that load it
(`lazy_hivemind`), so a bootstrap peer or a census reader starts in a fraction of a second.
"""

from swarmnode.net import lazy_hivemind

lazy_hivemind.install()
