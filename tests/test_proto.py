import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_committed_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True)
    for name in ("swarmnode_pb2.py", "swarmnode_pb2.pyi"):
        committed = (ROOT / "swarmnode" / "wire" / "proto" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run python scripts/gen_proto.py"
