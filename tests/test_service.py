import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "scripts" / "swarmnode.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies_against_this_install(tmp_path):
    swarmnode = Path(sys.executable).with_name("swarmnode")
    text = UNIT.read_text().replace("/opt/swarmnode/.venv/bin/swarmnode", str(swarmnode))
    unit = tmp_path / "swarmnode.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_the_unit_stops_with_sigterm_and_runs_headless():
    text = UNIT.read_text()
    assert "KillSignal=SIGTERM" in text and "join --headless" in text and "Restart=on-failure" in text
