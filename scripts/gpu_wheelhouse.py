"""Wheels for a GPU machine that has torch and many packages but nothing to download from: what swarmnode[lora] and
its benchmarks need that the machine lacks, downloaded here for its Python, and the step that installs them there.

build (here, with the venv's python and a pip that reaches PyPI): walks swarmnode[lora]'s requirements through this
venv's installed metadata and decides, distribution by distribution, whether the machine's copy will do (--have:
its package list, scripts/gpu_machine_packages.txt) or ours must be carried. The machine's copy does where its
version meets every requirement on it that swarmnode or a carried distribution makes; the requirements of a copy
the machine keeps are the machine's affair (pip installed them together), so the walk stops there. Where the list
gives no version, the copy is trusted only with requirements an older release than ours also meets (floors below
our version, no pin, no ceiling): a guess, which the install step checks there before anything runs. Each carried
distribution is downloaded at our installed version as a wheel for the machine (CPython 3.12, manylinux x86_64);
where PyPI has none, ours is repacked from its installed files if it is pure Python, or one is built from PyPI's
source with --build-python (a CPython 3.12 here) and kept only if it asks no newer glibc than manylinux_2_28.
Prints the wheels' sizes against --limit-mib and, with the checkout, against what one call to the machine carries;
writes DIR/manifest.json.

install (there, with the python that has torch): pip install --no-index --no-deps --target DIR of the wheels this
interpreter can run; bench_gpu.sh puts DIR on PYTHONPATH after the checkout. --target rather than a venv with
--system-site-packages: where that python is itself a venv (the lent machines' is), a venv made from it sees its
base interpreter's packages, not its torch. Before installing, it walks swarmnode[lora]'s requirements through the
wheels and this machine's packages and stops, listing them all, where one is missing or at a version outside its
specifier.

Usage: python scripts/gpu_wheelhouse.py build [--have scripts/gpu_machine_packages.txt] [--out wheelhouse]
                                              [--limit-mib 64] [--build-python python3.12]
       python3 scripts/gpu_wheelhouse.py install [--wheelhouse wheelhouse] [--target .gpu-site]
"""

from __future__ import annotations

import argparse
import base64
import csv
import email
import hashlib
import importlib.metadata as metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a machine with pip but without packaging: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT, EXTRAS = "swarmnode", ("lora",)  # not carried: the benchmarks run it from the checkout
MACHINE_TORCH = "torch"  # never carried, listed or not: the machine's own (CUDA) build is the one to measure
LEFT_OUT = {
    "scipy": "hivemind declares it for averaging and MoE, transformers imports it only where it is installed: "
             "the DHT and p2p a node uses never do",
    "grpcio-tools": "hivemind declares it to compile its protos; nothing imports it at run time",
    "grpcio": "only grpcio-tools requires it",
    "hf-xet": "huggingface_hub's download accelerator: nothing is downloaded",
}
# The lent machines (the workplace's device notes): python3 is CPython 3.12.3 on x86-64 Linux. Markers are read
# for it, not for this venv's Python; the platforms are those the notes give for carrying wheels there.
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "platform_machine": "x86_64", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
HAVE = ROOT / "scripts" / "gpu_machine_packages.txt"
CALL_CARRY_MIB = 64  # the working tree and the carried paths of one call to the machine, together
DROPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}  # pip writes these when it installs
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the same wheel bytes from the same installed files
MANIFEST = "manifest.json"
MIB = 2**20


def load_have(path: Path) -> dict[str, str | None]:
    """{distribution: its version there, or None where unread} from a package list: `name` or `name==version`
    a line, '#' comments."""
    have: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            have[canonicalize_name(name)] = version.strip() or None
    return have


def plan(have: dict[str, str | None]) -> tuple[dict[str, dict], dict[str, str]]:
    """({carried distribution: {"why", "required_by"}}, {distribution kept on the machine: why}). Carrying one adds
    its requirements, which may in turn rule out a machine's copy, so it repeats until nothing changes."""
    carried: dict[str, str] = {}
    while True:
        wanted = _requirers(set(carried), have)
        verdicts = {name: verdict(name, requirers, have) for name, requirers in wanted.items()}
        now = {name: why for name, (carry, why) in verdicts.items() if carry}
        if now.keys() == carried.keys():
            break
        carried = now
    return ({name: {"why": why, "required_by": sorted({parent for parent, _ in wanted[name]})}
             for name, why in sorted(carried.items())},
            {name: why for name, (carry, why) in sorted(verdicts.items()) if not carry})


def _requirers(carried: set[str], have: dict[str, str | None]) -> dict[str, list[tuple[str, Requirement]]]:
    """{distribution: [(requirer, requirement)]} over the requirements of swarmnode[lora] and of every distribution
    that will be carried (not on the machine, or in `carried`)."""
    found: dict[str, list[tuple[str, Requirement]]] = {}
    expanded: set[tuple[str, str]] = set()
    queue = [(requirement, PROJECT) for requirement in _requires(PROJECT, {"", *EXTRAS})]
    while queue:
        requirement, parent = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in LEFT_OUT:
            continue
        found.setdefault(name, []).append((parent, requirement))
        if (name in have or name == MACHINE_TORCH) and name not in carried:
            continue
        for extra in requirement.extras or {""}:
            if (name, extra) not in expanded:
                expanded.add((name, extra))
                queue.extend((child, name) for child in _requires(name, {extra}))
    return found


def _requires(name: str, extras: set[str]) -> list[Requirement]:
    """The installed `name`'s requirements that apply on the GPU machine with these extras."""
    requirements = [Requirement(line) for line in metadata.requires(name) or []]
    return [r for r in requirements if r.marker is None or any(r.marker.evaluate({**MARKERS, "extra": e}) for e in extras)]


def verdict(name: str, requirers: list[tuple[str, Requirement]], have: dict[str, str | None]) -> tuple[bool, str]:
    """(carry it?, why) for `name`, given who requires it how and what the machine has."""
    asked = ", ".join(sorted({_shown(r, parent) for parent, r in requirers}))
    if name == MACHINE_TORCH:
        return False, f"the machine's own (CUDA) build is the one to measure; asked: {asked}"
    if name not in have:
        return True, "not on the machine"
    there = have[name]
    if there is not None:
        missed = sorted({_shown(r, parent) for parent, r in requirers if not r.specifier.contains(there, prereleases=True)})
        if missed:
            return True, f"the machine's {there} misses {', '.join(missed)}"
        return False, f"the machine's {there} meets {asked}"
    ours = Version(metadata.version(name))
    doubtful = sorted({_shown(r, parent) for parent, r in requirers if not _older_release_meets(r, ours)})
    if doubtful:
        return True, f"its version there is unread, and an older release than ours ({ours}) may miss {', '.join(doubtful)}"
    return False, f"its version there is unread; older releases than ours ({ours}) meet {asked} (checked at install)"


def _shown(requirement: Requirement, parent: str) -> str:
    return f"{requirement.name}{requirement.specifier or ''} ({parent})"


def _older_release_meets(requirement: Requirement, ours: Version) -> bool:
    """Whether a release older than `ours` likely meets `requirement`: only floors, each below our version. The
    machine's image need be no newer than this venv: a floor at our own version may be above it, and a pin or a
    ceiling says nothing of a version nobody has read."""
    return all(s.operator == "!=" or (s.operator in (">=", ">") and Version(s.version) < ours)
               for s in requirement.specifier)


def fetch(name: str, version: str, out: Path, build_python: str | None) -> tuple[Path, str]:
    """`name`'s wheel at `version` for the GPU machine in `out`, and where it came from: PyPI's; where PyPI has none,
    ours repacked if it is pure Python, else one built from PyPI's source with `build_python` (the machine's
    Python version)."""
    target = ["--python-version", MARKERS["python_version"], "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS)]
    with tempfile.TemporaryDirectory() as scratch:
        if _pip(sys.executable, "download", *target, "--only-binary=:all:", "--dest", scratch, f"{name}=={version}"):
            (wheel,) = Path(scratch).glob("*.whl")
            return Path(shutil.move(wheel, out / wheel.name)), "PyPI"
        if _pure(name):
            return repack(name, out)[0], "repacked"
        if build_python is None:
            raise SystemExit(f"{name}=={version}: PyPI has no wheel for CPython {MARKERS['python_version']} on "
                             f"{PLATFORMS[0]} or older, ours is compiled, and there is no python"
                             f"{MARKERS['python_version']} to build one from source with: name one (--build-python)")
        _pip(build_python, "wheel", "--no-binary=:all:", "--wheel-dir", scratch, f"{name}=={version}", check=True)
        (wheel,) = Path(scratch).glob("*.whl")
        newest = _newest_glibc(wheel)
        if newest > _glibc(PLATFORMS[0]):
            raise SystemExit(f"{wheel.name}, built here, needs glibc {newest[0]}.{newest[1]}: newer than {PLATFORMS[0]}")
        return Path(shutil.move(wheel, out / wheel.name)), f"built (glibc {newest[0]}.{newest[1]})"


def _pip(python: str, command: str, *args: str, check: bool = False) -> bool:
    """Whether `python -m pip command --no-deps args` found what it was asked for; anything but a missing
    distribution stops the build."""
    run = subprocess.run([python, "-m", "pip", command, "--quiet", "--disable-pip-version-check", "--no-deps", *args],
                         capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if run.returncode != 0 and (check or "No matching distribution" not in run.stderr):
        raise SystemExit(f"{python} -m pip {command} {args[-1]} failed:\n{run.stderr[-2000:]}")
    return run.returncode == 0


def _glibc(platform: str) -> tuple[int, int]:
    """The glibc a manylinux platform tag promises: manylinux_2_28_x86_64 -> (2, 28)."""
    major, minor = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", platform).groups()
    return int(major), int(minor)


def _newest_glibc(wheel: Path) -> tuple[int, int]:
    """The newest glibc symbol version the shared objects in `wheel` ask for (their GLIBC_x.y version names)."""
    with zipfile.ZipFile(wheel) as archive:
        needs = [(int(major), int(minor)) for member in archive.namelist() if re.search(r"\.so(\.|$)", member)
                 for major, minor in re.findall(rb"GLIBC_(\d+)\.(\d+)", archive.read(member))]
    return max(needs, default=(2, 0))


def _pure(name: str) -> bool:
    """Whether the installed `name` came from a pure-Python wheel, which any Python 3 can install."""
    wheel = metadata.distribution(name).read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    return "Root-Is-Purelib: true" in wheel and bool(tags) and all(tag.endswith("-none-any") for tag in tags)


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
            member.external_attr = (source.stat().st_mode & 0xFFFF) << 16  # what was executable stays so
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


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of `wheel`'s own METADATA: what the install step checks there."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name)).get_all("Requires-Dist") or []


def checkout_bytes() -> int:
    """The bytes of what a call to the GPU machine sends besides carried paths: the files git tracks, and those
    it neither tracks nor ignores."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((ROOT / path).lstat().st_size for path in listed if path and (ROOT / path).is_file())


def build(out: Path, have_path: Path, limit_mib: float, build_python: str | None) -> None:
    """The wheelhouse in `out`, its sizes against both limits, and the manifest the install step works from."""
    from rich.console import Console
    from rich.table import Table

    carried, kept = plan(load_have(have_path))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = []
    for name, why in carried.items():
        version = metadata.version(name)
        wheel, source = fetch(name, version, out, build_python)
        rows.append({"name": name, "version": version, "wheel": wheel.name, "bytes": wheel.stat().st_size,
                     "source": source, **why, "requires": wheel_requires(wheel)})
    rows.sort(key=lambda row: -row["bytes"])
    total, checkout = sum(row["bytes"] for row in rows), checkout_bytes()
    table = Table(title=f"wheelhouse {out}: {len(rows)} wheels for CPython {MARKERS['python_full_version']} "
                        f"x86_64, {total / MIB:.2f} MiB")
    for column in ("wheel", "MiB", "from", "why carried", "required by"):
        table.add_column(column, justify="right" if column == "MiB" else "left")
    for row in rows:
        table.add_row(row["wheel"], f"{row['bytes'] / MIB:.2f}", row["source"], row["why"], ", ".join(row["required_by"]))
    Console(width=240).print(table)
    for name, why in kept.items():
        print(f"kept the machine's {name}: {why}")
    for name, why in LEFT_OUT.items():
        print(f"left out {name}: {why}")
    within = {True: "within", False: "OVER"}
    print(f"wheels: {total / MIB:.2f} MiB, {within[total <= limit_mib * MIB]} the {limit_mib:g} MiB limit")
    print(f"with the checkout ({checkout / MIB:.2f} MiB): {(total + checkout) / MIB:.2f} MiB, "
          f"{within[total + checkout <= CALL_CARRY_MIB * MIB]} the {CALL_CARRY_MIB} MiB one call carries", flush=True)
    (out / MANIFEST).write_text(json.dumps({
        "built_on": f"{sys.implementation.name} {sys.version.split()[0]}", "for": MARKERS, "have": str(have_path),
        "bytes": total, "limit_mib": limit_mib, "checkout_bytes": checkout,
        "root": {"name": PROJECT, "extras": list(EXTRAS), "requires": metadata.requires(PROJECT) or []},
        "wheels": rows, "kept": kept, "left_out": LEFT_OUT,
    }, indent=1) + "\n")


def fits(wheel: str, supported: set[str]) -> bool:
    """Whether this interpreter can install `wheel`, by the tags its file name carries."""
    pythons, abis, platforms = wheel.removesuffix(".whl").split("-")[-3:]
    return any(f"{p}-{a}-{x}" in supported for p in pythons.split(".") for a in abis.split(".") for x in platforms.split("."))


def install(wheelhouse: Path, target: Path) -> None:
    """The wheelhouse into `target` for this python, once its requirements are known to be met; nothing twice."""
    manifest = json.loads((wheelhouse / MANIFEST).read_text())
    stamp = target / MANIFEST
    if stamp.exists() and json.loads(stamp.read_text()) == manifest:
        print(f"{target}: the wheelhouse is installed already")
        return
    supported = {str(tag) for tag in sys_tags()}
    runnable = [row for row in manifest["wheels"] if fits(row["wheel"], supported)]
    unmet = unmet_requirements(manifest["root"], runnable, set(manifest["left_out"]))
    if unmet:
        strays = sorted(row["wheel"] for row in manifest["wheels"] if row not in runnable)
        raise SystemExit(
            f"this machine ({sys.executable}, Python {sys.version.split()[0]}) and the wheelhouse it can install "
            f"leave these unmet:\n  " + "\n  ".join(unmet)
            + (f"\nwheels this python cannot install: {', '.join(strays)}" if strays else "")
        )
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps",
         "--no-compile", "--target", str(target), *(str(wheelhouse / row["wheel"]) for row in runnable)],
        check=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    stamp.write_text(json.dumps(manifest))
    print(f"installed {len(runnable)} wheels into {target}")


def unmet_requirements(root: dict, packed: list[dict], left_out: set[str]) -> list[str]:
    """What swarmnode[lora] (`root`) needs, walked through the `packed` wheels over this interpreter's installed
    distributions, that neither meets. A machine package's requirement on another of the machine's is the image's
    affair and not listed; one on a packed wheel is: that wheel replaces the machine's copy for it too."""
    ours = {canonicalize_name(row["name"]): row for row in packed}
    unmet: set[str] = set()
    expanded: set[tuple[str, str]] = set()
    queue = [(Requirement(line), root["name"], set(root["extras"]) | {""}) for line in root["requires"]]
    while queue:
        requirement, parent, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in left_out or (requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras)):
            continue
        ours_asks = parent == root["name"] or canonicalize_name(parent) in ours or name in ours
        if name in ours:
            version, requires = ours[name]["version"], ours[name]["requires"]
        else:
            try:
                version, requires = metadata.version(name), metadata.requires(name) or []
            except metadata.PackageNotFoundError:
                if ours_asks:
                    unmet.add(f"{requirement} (for {parent}): not installed")
                continue
        if ours_asks and not requirement.specifier.contains(version, prereleases=True):
            unmet.add(f"{requirement} (for {parent}): {version} is {'in the wheelhouse' if name in ours else 'installed'}")
        for extra in requirement.extras or {""}:
            if (name, extra) not in expanded:
                expanded.add((name, extra))
                queue.extend((Requirement(line), name, {extra}) for line in requires)
    return sorted(unmet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("build", help="download (or repack) the wheels the GPU machine lacks")
    made.add_argument("--have", type=Path, default=HAVE, help="the GPU machine's packages: `name` or `name==version` a line")
    made.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    made.add_argument("--limit-mib", type=float, default=64.0, help="what the wheels may come to (#27: 64 MiB)")
    made.add_argument("--build-python", default=shutil.which(f"python{MARKERS['python_version']}"),
                      help="a CPython of the machine's version, to build what PyPI has only as source")
    put = commands.add_parser("install", help="install the wheelhouse for this python (on the GPU machine)")
    put.add_argument("--wheelhouse", type=Path, default=ROOT / "wheelhouse")
    put.add_argument("--target", type=Path, default=ROOT / ".gpu-site")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.have, args.limit_mib, args.build_python)
    else:
        install(args.wheelhouse, args.target)


if __name__ == "__main__":
    main()
