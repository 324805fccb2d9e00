"""Regenerate swarmnode/wire/proto/swarmnode_pb2.py(.pyi) from protocol/swarmnode.proto with grpcio-tools.

Usage: python scripts/gen_proto.py [OUT_DIR]   (default: the package's proto directory)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT / 'protocol'}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", "swarmnode.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "swarmnode" / "wire" / "proto")
