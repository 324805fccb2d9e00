"""The wire format: identities, signed records and their checks; bytes and keys, nothing of the network."""
