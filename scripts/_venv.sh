# Sourced by scripts/swarmnode and scripts/test: make sure .venv exists and holds this checkout.
# torch 2.13.0 goes in first when no torch is importable, from where scripts/_torch_index.sh says (the
# CPU build without an NVIDIA GPU): a bare `torch` requirement would make pip fetch a multi-GB CUDA
# build; users who already have a torch (e.g. a CUDA one) keep theirs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SWARMNODE_VENV:-$ROOT/.venv}"
EXTRAS="${SWARMNODE_EXTRAS:-}"

if [ ! -x "$VENV/bin/python" ]; then
    PYTHON="${PYTHON:-python3}"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "swarmnode needs Python >= 3.10 (found $("$PYTHON" --version)); set PYTHON=..." >&2; exit 1; }
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi

# the stamp names pyproject.toml's hash (Python's: macOS has no sha256sum): a changed dependency list reinstalls
HASH="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' "$ROOT/pyproject.toml")"
STAMP="$VENV/.swarmnode-installed-${EXTRAS:-base}-$HASH"
if [ ! -f "$STAMP" ]; then
    if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
        TORCH_INDEX="$(bash "$ROOT/scripts/_torch_index.sh" "$VENV/bin/python")"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.13.0"
    fi
    echo "installing swarmnode${EXTRAS:+[$EXTRAS]} into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}"
    rm -f "$VENV"/.swarmnode-installed-"${EXTRAS:-base}"-*
    touch "$STAMP"
fi
