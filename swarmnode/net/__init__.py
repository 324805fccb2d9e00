"""The network: the DHT peer, storage and validation, reachability, gossip, directory and census."""
