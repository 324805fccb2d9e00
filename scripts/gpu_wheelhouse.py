"""Wheels for a GPU machine that has torch and nothing to download from: everything else swarmnode[lora] and its
benchmarks need, repacked from this venv's installed files (no network: pip can neither download here nor rebuild
an installed package into a wheel), and the step that installs them there.

build (here, with the venv's python): walks swarmnode[lora]'s requirements through the installed metadata, leaving
out what the GPU machine has with its torch (ON_THE_GPU_MACHINE), the declared requirements that nothing a node or
a benchmark runs imports (LEFT_OUT, with why) and those --omit names (with all they alone require); writes each
distribution back into a wheel from its RECORD, every file checked against RECORD's hash, tagged as the wheel it
was installed from was (bytecode, console scripts and man pages are left out: pip makes the first two). Prints each
wheel's size against --limit-mib and writes DIR/manifest.json.

install (there, with the python that has torch): pip install --no-index --no-deps --target DIR of the wheels this
interpreter can run; bench_gpu.sh puts DIR on PYTHONPATH after the checkout. --target rather than a venv with
--system-site-packages: where that python is itself a venv (the lent machines' is), a venv made from it sees its
base interpreter's packages, not its torch. Every requirement of a wheel that the wheelhouse does not meet here (a
distribution left to the machine, or a compiled wheel of another Python version) must be met by what the machine
has installed, at a version its specifier allows; if one is not, it stops and lists them all.

Usage: python scripts/gpu_wheelhouse.py build [--out wheelhouse] [--limit-mib 64] [--omit NAME ...]
       python3 scripts/gpu_wheelhouse.py install [--wheelhouse wheelhouse] [--target .gpu-site]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name
except ImportError:  # a machine with pip but without packaging: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("swarmnode[lora]",)
ON_THE_GPU_MACHINE = {  # the rest of torch's requirements that ours share are packed: then their versions are ours
    "torch": "the machine's own (CUDA) build is the one to measure",
    "sympy": "torch requires it (its floor, 1.13.3, is above reasoning-gym's): 6 MiB less to carry",
    "mpmath": "sympy's requirement, installed with it",
}
LEFT_OUT = {
    "scipy": "hivemind declares it for averaging and MoE, transformers imports it only where it is installed: "
             "the DHT and p2p a node uses never do",
    "grpcio-tools": "hivemind declares it to compile its protos; nothing imports it at run time",
    "grpcio": "only grpcio-tools requires it",
    "hf-xet": "huggingface_hub's download accelerator: nothing is downloaded",
}
DROPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}  # pip writes these when it installs
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the same wheel bytes from the same installed files
MANIFEST = "manifest.json"


def needed(omit: set[str]) -> dict[str, list[str]]:
    """{distribution: the distributions requiring it} for ROOTS' requirements, without what the machine has, what
    nothing imports and `omit`. swarmnode itself is not among them: the benchmarks run it from the checkout."""
    wanted = _closure(list(ROOTS), {*ON_THE_GPU_MACHINE, *LEFT_OUT, *omit})
    for root in ROOTS:
        del wanted[canonicalize_name(Requirement(root).name)]
    return wanted


def _closure(roots: list[str], stop: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    queue = [(Requirement(root), "(root)") for root in roots]
    while queue:
        requirement, parent = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in stop:
            continue
        if name in found:
            found[name].append(parent)
            continue
        found[name] = [parent]
        for line in metadata.requires(name) or []:
            child = Requirement(line)
            environments = [{"extra": extra} for extra in requirement.extras or {""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                queue.append((child, name))
    return found


def repack(name: str, out: Path) -> tuple[Path, int]:
    """The installed distribution `name` as a wheel in `out`, and its installed bytes."""
    dist = metadata.distribution(name)
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    if not tags:
        raise SystemExit(f"{name}: installed without a WHEEL file (an egg or a legacy install): cannot say its tags")
    info_dir = next(str(f.parent) for f in dist.files if f.name == "METADATA" and f.parent.name.endswith(".dist-info"))
    escaped = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    wheel = out / f"{escaped}-{dist.version}-{_compressed(tags)}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    installed = 0
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for entry in dist.files:
            path = entry.as_posix()
            if path.startswith("../") or "__pycache__" in entry.parts or path.endswith(".pyc"):
                continue
            if entry.parent.as_posix() == info_dir and entry.name in DROPPED_DIST_INFO:
                continue
            source = Path(dist.locate_file(entry))
            data = source.read_bytes()
            digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if entry.hash is not None and f"{entry.hash.mode}={entry.hash.value}" != digest:
                raise SystemExit(f"{name}: {path} differs from what was installed (RECORD's hash): reinstall it first")
            member = zipfile.ZipInfo(path, ZIP_TIME)
            member.external_attr = (source.stat().st_mode & 0xFFFF) << 16  # p2pd stays executable
            archive.writestr(member, data, zipfile.ZIP_DEFLATED)
            writer.writerow((path, digest, len(data)))
            installed += len(data)
        writer.writerow((f"{info_dir}/RECORD", "", ""))
        archive.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", ZIP_TIME), record.getvalue(), zipfile.ZIP_DEFLATED)
    return wheel, installed


def _compressed(tags: list[str]) -> str:
    """A wheel file name's tag part (PEP 425's compressed tag set) for the tags its WHEEL file lists."""
    parts = [[tag.split("-")[i] for tag in tags] for i in range(3)]
    return "-".join(".".join(dict.fromkeys(values)) for values in parts)


def build(out: Path, limit_mib: float, omit: set[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    wanted = needed(omit)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = []
    for name in sorted(wanted):
        wheel, installed = repack(name, out)
        rows.append({"name": name, "version": metadata.version(name), "wheel": wheel.name, "bytes": wheel.stat().st_size,
                     "installed_bytes": installed, "required_by": sorted(set(wanted[name])),
                     "requires": metadata.requires(name) or []})
    rows.sort(key=lambda row: -row["bytes"])
    total = sum(row["bytes"] for row in rows)
    mib = 2**20
    table = Table(title=f"wheelhouse {out}: {len(rows)} wheels, {total / mib:.2f} MiB (limit {limit_mib:g} MiB)")
    for column in ("wheel", "MiB", "installed MiB", "share", "required by"):
        table.add_column(column, justify="right" if column in ("MiB", "installed MiB", "share") else "left")
    for row in rows:
        table.add_row(row["wheel"], f"{row['bytes'] / mib:.2f}", f"{row['installed_bytes'] / mib:.1f}",
                      f"{100 * row['bytes'] / total:.1f}%", ", ".join(row["required_by"])[:60])
    Console(width=170).print(table)
    for name, why in {**ON_THE_GPU_MACHINE, **LEFT_OUT, **dict.fromkeys(sorted(omit), "--omit")}.items():
        print(f"left out {name}: {why}")
    verdict = "within" if total <= limit_mib * mib else "OVER"
    print(f"{total / mib:.2f} MiB: {verdict} the {limit_mib:g} MiB limit", flush=True)
    (out / MANIFEST).write_text(json.dumps({
        "python": f"{sys.implementation.name} {sys.version.split()[0]}", "bytes": total, "limit_mib": limit_mib,
        "wheels": rows, "on_the_gpu_machine": ON_THE_GPU_MACHINE, "left_out": LEFT_OUT, "omitted": sorted(omit),
    }, indent=1) + "\n")


def fits(wheel: str, supported: set[str]) -> bool:
    """Whether this interpreter can install `wheel`, by the tags its file name carries."""
    pythons, abis, platforms = wheel.removesuffix(".whl").split("-")[-3:]
    return any(f"{p}-{a}-{x}" in supported for p in pythons.split(".") for a in abis.split(".") for x in platforms.split("."))


def install(wheelhouse: Path, target: Path) -> None:
    manifest = json.loads((wheelhouse / MANIFEST).read_text())
    stamp = target / MANIFEST
    if stamp.exists() and json.loads(stamp.read_text()) == manifest:
        print(f"{target}: the wheelhouse is installed already")
        return
    supported = {str(tag) for tag in sys_tags()}
    runnable = [row for row in manifest["wheels"] if fits(row["wheel"], supported)]
    unmet = unmet_requirements(runnable, set(manifest["left_out"]))
    if unmet:
        raise SystemExit(
            f"this machine ({sys.executable}, Python {sys.version.split()[0]}) lacks what the wheelhouse (made on "
            f"{manifest['python']}) leaves to it:\n  " + "\n  ".join(unmet)
            + "\nbuild the wheelhouse from a venv of this Python version, or install those here"
        )
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps",
         "--no-compile", "--target", str(target), *(str(wheelhouse / row["wheel"]) for row in runnable)],
        check=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    stamp.write_text(json.dumps(manifest))
    print(f"installed {len(runnable)} wheels into {target}")


def unmet_requirements(packed: list[dict], left_out: set[str]) -> list[str]:
    """Requirements of the `packed` wheels that neither they nor this interpreter's installed distributions meet
    (a compiled wheel of another Python counts as not packed: the machine's own copy must do)."""
    ours = {canonicalize_name(row["name"]) for row in packed}
    unmet = []
    for row in packed:
        for line in row["requires"]:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if name in ours or name in left_out or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
                continue
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                unmet.append(f"{requirement} (for {row['name']}): not installed")
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                unmet.append(f"{requirement} (for {row['name']}): {version} is installed")
    return sorted(set(unmet))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("build", help="repack this venv's installed distributions into wheels")
    made.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    made.add_argument("--limit-mib", type=float, default=64.0, help="what one transfer to the GPU machine may carry")
    made.add_argument("--omit", action="append", default=[], help="a distribution the GPU machine has (repeatable)")
    put = commands.add_parser("install", help="install the wheelhouse for this python (on the GPU machine)")
    put.add_argument("--wheelhouse", type=Path, default=ROOT / "wheelhouse")
    put.add_argument("--target", type=Path, default=ROOT / ".gpu-site")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.limit_mib, {canonicalize_name(name) for name in args.omit})
    else:
        install(args.wheelhouse, args.target)


if __name__ == "__main__":
    main()
