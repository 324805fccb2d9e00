#!/usr/bin/env bash
# Where the first run installs torch from (scripts/_venv.sh): prints the index URL for pip's --index-url,
# or nothing to leave pip's own configuration in charge, and says on stderr what it chose and why.
# Usage: _torch_index.sh PYTHON (the venv's python: its pip configuration is the one that counts).
#
# Why: with default settings pip installs PyPI's Linux torch, a CUDA build with GBs of NVIDIA libraries,
# even where there is no GPU; so without an NVIDIA GPU, PyTorch's CPU build from its own index.
# A pip configured with its sources (a mirror, a wheelhouse, an offline machine) is the user's choice
# and is used as it is: an index pip was not told about may not be reachable at all.
# SWARMNODE_TORCH_INDEX overrides both: a PyTorch index name (cpu, cu126, cu128, rocm6.4, ...: the
# names on pytorch.org's install selector), cuda for PyPI's build, or any index URL.
set -euo pipefail
PYTHON="$1"
PYTORCH=https://download.pytorch.org/whl
PYPI=https://pypi.org/simple
CHOOSE="SWARMNODE_TORCH_INDEX=cpu, cuda, cu126, rocm6.4, ... or an index URL chooses"

if [ -n "${SWARMNODE_TORCH_INDEX:-}" ]; then
    case "$SWARMNODE_TORCH_INDEX" in
        *://*) URL="$SWARMNODE_TORCH_INDEX" ;;
        cuda) URL="$PYPI" ;;  # PyPI's Linux torch is the CUDA build
        *) URL="$PYTORCH/$SWARMNODE_TORCH_INDEX" ;;
    esac
    WHY="SWARMNODE_TORCH_INDEX=$SWARMNODE_TORCH_INDEX"
# pip config list shows PIP_* environment variables (":env:.index-url") as well as every config file;
# read whole, not piped: grep -q stops at the first match, and pip's broken pipe would fail under pipefail.
elif grep -Eq '^[^=]*\.(index-url|extra-index-url|find-links|no-index)=' <<<"$("$PYTHON" -m pip config list 2>/dev/null)"; then
    echo "installing torch from pip's configured sources (pip config list); $CHOOSE otherwise" >&2
    exit 0
elif [ "$(uname -s)" != Linux ]; then
    URL="$PYPI" WHY="$(uname -s): PyPI's build, no CUDA"
elif nvidia-smi -L >/dev/null 2>&1 || [ -e /proc/driver/nvidia/version ]; then
    URL="$PYPI" WHY="an NVIDIA GPU: PyPI's CUDA build"
else
    URL="$PYTORCH/cpu" WHY="no NVIDIA GPU: the CPU build"
fi
echo "installing torch from $URL ($WHY); $CHOOSE otherwise" >&2
echo "$URL"
