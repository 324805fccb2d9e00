"""Where the first run installs torch from (scripts/_torch_index.sh, #16): nothing is installed and nothing
goes to the network; the script only decides, asking pip for its configuration."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "_torch_index.sh"
CPU = "https://download.pytorch.org/whl/cpu"
PYPI = "https://pypi.org/simple"
# A loaded NVIDIA driver counts as a GPU whatever nvidia-smi says, and a test cannot hide it.
no_driver = pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this machine has an NVIDIA driver")


def choose(tmp_path, gpu=False, system="Linux", **env):
    """The index URL the script prints ('' for pip's own configuration) and its stderr line, on `system`
    with or without an NVIDIA GPU (a fake nvidia-smi), with no pip configuration but what `env` sets."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    smi = "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0)'" if gpu else "echo 'NVIDIA-SMI has failed'; exit 9"
    for name, body in {"nvidia-smi": smi, "uname": f"echo {system}"}.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    # os.devnull as PIP_CONFIG_FILE makes pip load no config file: the machine's own must not leak in.
    base = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run(
        ["bash", str(SCRIPT), sys.executable], env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "SWARMNODE_TORCH_INDEX=cpu, cuda" in result.stderr, result.stderr
    return result.stdout.strip(), result.stderr.strip()


@no_driver
def test_without_an_nvidia_gpu_the_cpu_build_from_pytorchs_own_index(tmp_path):
    url, said = choose(tmp_path)
    assert url == CPU and "no NVIDIA GPU: the CPU build" in said


def test_with_an_nvidia_gpu_pypis_cuda_build(tmp_path):
    url, said = choose(tmp_path, gpu=True)
    assert url == PYPI and "an NVIDIA GPU: PyPI's CUDA build" in said


def test_on_macos_pypis_build_which_has_no_cuda(tmp_path):
    url, said = choose(tmp_path, system="Darwin")
    assert url == PYPI and "Darwin" in said


@pytest.mark.parametrize(
    "env",
    [
        {"PIP_INDEX_URL": "https://mirror.example/simple"},
        {"PIP_EXTRA_INDEX_URL": "file:///opt/pypi/simple"},
        {"PIP_FIND_LINKS": "/opt/wheels"},
        {"PIP_NO_INDEX": "1"},
        {"PIP_CONFIG_FILE": "pip.conf"},
    ],
    ids=["index-url", "extra-index-url", "find-links", "no-index", "config-file"],
)
def test_a_pip_told_where_to_get_packages_is_used_as_it_is(tmp_path, env):
    """Nothing else is tried (an offline machine's CI must never wait on download.pytorch.org), even
    with a config long enough that pip is still writing when the first source is found."""
    if env.get("PIP_CONFIG_FILE"):
        config = tmp_path / env["PIP_CONFIG_FILE"]
        config.write_text(
            "[global]\nfind-links = /opt/wheels\nextra-index-url = file:///opt/pypi/simple\n"
            f"[install]\ntrusted-host = {' '.join(f'host{i}.example' for i in range(20000))}\n"
        )
        env = {"PIP_CONFIG_FILE": str(config)}
    url, said = choose(tmp_path, **env)
    assert url == "" and "from pip's configured sources" in said


@pytest.mark.parametrize(
    "choice, url",
    [
        ("cpu", CPU),
        ("cu128", "https://download.pytorch.org/whl/cu128"),
        ("rocm6.4", "https://download.pytorch.org/whl/rocm6.4"),
        ("cuda", PYPI),
        ("https://mirror.example/torch/simple", "https://mirror.example/torch/simple"),
    ],
)
def test_swarmnode_torch_index_overrides_the_hardware_and_pips_configuration(tmp_path, choice, url):
    chosen, said = choose(tmp_path, gpu=True, SWARMNODE_TORCH_INDEX=choice, PIP_INDEX_URL="https://mirror.example")
    assert chosen == url and f"(SWARMNODE_TORCH_INDEX={choice})" in said
