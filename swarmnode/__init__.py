"""swarmnode: a decentralized swarm post-training node (SAPO over a signed hivemind DHT)."""

__version__ = "0.1.0"
