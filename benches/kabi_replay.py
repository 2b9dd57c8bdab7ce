#!/usr/bin/env python3
"""Replay kABI compatibility over real kernels: every amd64 kernel Debian's archive serves, and
the Ubuntu x86_64 kernels of assets/real-kernels.csv that Ubuntu's archive still serves.

How many builds does `--kabi` save on real kernels, and is every `compatible` verdict right? This
reads the archives' own package indexes (Debian's bookworm and trixie with their updates,
backports and security suites, each `linux-headers-RELEASE` of the amd64, cloud-amd64 and
rt-amd64 flavours; Ubuntu's focal and jammy with their updates and security pockets) and makes a
fleet of one node per kernel. Then, as a fleet that met each line first on its oldest kernel:

1. builds the example driver (`assets/example-module`) once per kernel line, for the line's
   oldest kernel, with the workflow's own steps: `kfleet headers fetch` through the built-in
   chain, `kfleet build-plan --format env`, and `assets/build-module.sh --plan --extract` inside
   a debootstrap of the kernel's own release (its gcc and kbuild; Ubuntu's checked with kfleet's
   built-in Ubuntu archive key);
2. pushes those builds to an OCI registry (Debian's `docker-registry`) with `kfleet store push`,
   which attaches each package's kABI record;
3. runs `kfleet report --target 100` against the store without and with `--kabi` (the kernels'
   symbol versions read through the built-in header chain from the archive), and counts the
   builds each plan still needs;
4. checks every verdict on its own: each kernel's real `Module.symvers` (from its headers
   package) against `modprobe --dump-modversions` of its line's built module. A kernel kfleet
   calls `compatible` whose CRCs differ would be a false verdict; the run fails if there is one.

Needs root (debootstrap, chroot, bind mounts), the network (deb.debian.org, archive.ubuntu.com), gpg, a built kfleet
(default: target/release/kfleet, or --kfleet), and `docker-registry` installed. Everything it
fetches and builds stays under --work (default ~/.cache/kfleet-kabi-replay), and a second run
reuses the roots and packages. Writes WORK/kabi-replay.md and WORK/kabi-replay.json.

    cargo build --release --locked && sudo python3 benches/kabi_replay.py
"""

import argparse
import functools
import io
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = "https://deb.debian.org/debian"
UBUNTU = "https://archive.ubuntu.com/ubuntu"
# Per distribution: the suites read (suite, release, index base), each release's suite for the
# build root, the root's extra packages (build-module.sh's tools, by the release's names), which
# headers packages are kernels, and whether only the real kernel list's kernels count.
DISTROS = {
    "debian": {
        "suites": [
            ("bookworm", "12", DEBIAN),
            ("bookworm-updates", "12", DEBIAN),
            ("bookworm-backports", "12", DEBIAN),
            ("bookworm-security", "12", "https://deb.debian.org/debian-security"),
            ("trixie", "13", DEBIAN),
            ("trixie-updates", "13", DEBIAN),
            ("trixie-backports", "13", DEBIAN),
            ("trixie-security", "13", "https://deb.debian.org/debian-security"),
        ],
        "roots": {"12": "bookworm", "13": "trixie"},
        "mirror": DEBIAN,
        "components": "main",
        "tools": {
            "12": "gcc,make,libc6-dev,libelf1,binutils,kmod,xz-utils,file,dwarves",
            "13": "gcc,make,libc6-dev,libelf1t64,binutils,kmod,xz-utils,file,dwarves",
        },
        "headers": re.compile(
            r"^linux-headers-((?P<abi>\d+\.\d+\.\d+(?:-\d+|\+deb\d+(?:\.\d+)?))-(?P<flavour>amd64|cloud-amd64|rt-amd64))$"
        ),
        "only_real": False,
    },
    "ubuntu": {
        "suites": [
            (f"{codename}{pocket}", release, UBUNTU)
            for codename, release in (("focal", "20.04"), ("jammy", "22.04"))
            for pocket in ("", "-updates", "-security")
        ],
        "roots": {"20.04": "focal", "22.04": "jammy"},
        # apt in the root over http (the archive's signatures vouch for it): the root's CA
        # bundle is not the host's.
        "mirror": "http://archive.ubuntu.com/ubuntu",
        "components": "main,universe",
        "tools": {
            "20.04": "gcc,make,libc6-dev,libelf1,binutils,kmod,xz-utils,file,dwarves",
            "22.04": "gcc,make,libc6-dev,libelf1,binutils,kmod,xz-utils,file,dwarves",
        },
        "headers": re.compile(r"^linux-headers-((?P<abi>\d+\.\d+\.\d+-\d+)-(?P<flavour>[a-z][a-z0-9-]*))$"),
        "only_real": True,
    },
}
DRIVER_VERSION = "1.0.0"
MODULE = "kdriver"


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def fetch(url):
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def stanzas(text):
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def dpkg_cmp(a, b):
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1


def real_kernels(distro):
    """The x86_64 kernels of `distro` in assets/real-kernels.csv."""
    with open(ROOT / "assets" / "real-kernels.csv") as f:
        return {
            row[3]
            for row in (line.rstrip("\n").split(",") for line in f)
            if len(row) > 3 and row[0] == distro and row[2] == "x86_64"
        }


def archive_kernels():
    """The kernels of every distribution's suites: (distro, uname -r) -> (release, package
    version, .deb URL)."""
    kernels = {}
    for distro, facts in DISTROS.items():
        wanted = real_kernels(distro) if facts["only_real"] else None
        for suite, release, base in facts["suites"]:
            url = f"{base}/dists/{suite}/main/binary-amd64/Packages.xz"
            try:
                text = lzma.decompress(fetch(url)).decode()
            except Exception as e:  # noqa: BLE001 - say which index and go on
                log(f"{url}: {e}")
                continue
            for p in stanzas(text):
                m = facts["headers"].match(p.get("Package", ""))
                if not m or (wanted is not None and m.group(1) not in wanted):
                    continue
                key = (distro, m.group(1))
                seen = kernels.get(key)
                if seen is None or dpkg_cmp(seen[1], p["Version"]) < 0:
                    kernels[key] = (release, p["Version"], f"{base}/{p['Filename']}")
    return kernels


def line_of(distro, release, kernel):
    """kfleet's line for a Debian or Ubuntu kernel (headers::line_of): the series for Debian's
    +debN ABIs, the upstream version for N.N.0-NN ones, and the flavour."""
    m = DISTROS[distro]["headers"].match(f"linux-headers-{kernel}")
    abi, flavour = m.group("abi"), m.group("flavour")
    stem = ".".join(abi.split(".")[:2]) if "+" in abi else abi.split("-")[0]
    return f"{distro}/{release}/x86_64 {stem}-*-{flavour}"


class Mounted:
    """/dev and /proc bound into a chroot while a build runs."""

    def __init__(self, root):
        self.root = root

    def __enter__(self):
        run(["mount", "--bind", "/dev", str(self.root / "dev")])
        run(["mount", "-t", "proc", "proc", str(self.root / "proc")])
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", str(self.root / "proc")])
        subprocess.run(["umount", str(self.root / "dev")])


def chroot_for(work, distro, release):
    facts = DISTROS[distro]
    suite = facts["roots"][release]
    root = work / f"root-{suite}"
    if not (root / ".kfleet-ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        log(f"debootstrap {suite} into {root}")
        keyring = []
        if distro == "ubuntu":
            # kfleet's own built-in key of Ubuntu's archive (Debian does not package Ubuntu's).
            armored = (ROOT / "assets" / "keyrings" / "ubuntu-archive-2018.asc").read_bytes()
            key = work / "ubuntu-archive.gpg"
            key.write_bytes(subprocess.run(["gpg", "--dearmor"], input=armored, capture_output=True,
                                           check=True).stdout)
            keyring = [f"--keyring={key}"]
        run(["debootstrap", "--variant=minbase", f"--components={facts['components']}",
             f"--include={facts['tools'][release]}", *keyring, suite, str(root), facts["mirror"]])
        (root / ".kfleet-ready").write_text("")
    return root


def build(kfleet, work, env, distro, release, kernel):
    """The example driver built for `kernel` by the workflow's steps; the package's path."""
    key = f"{distro}/{release}/x86_64/{kernel}"
    out = work / "packages"
    out.mkdir(exist_ok=True)
    name = f"{MODULE}-{DRIVER_VERSION}-{distro}-{release}-x86_64-{kernel}.tar.xz"
    if (out / name).exists():
        return out / name
    root = chroot_for(work, distro, release)
    job = root / "replay" / kernel
    shutil.rmtree(job, ignore_errors=True)
    (job / "headers").mkdir(parents=True)
    run([kfleet, "headers", "fetch", "--out", str(job / "headers"), key], env=env)
    plan = run([kfleet, "build-plan", key, "--format", "env"], env=env).stdout
    (job / "plan.env").write_text(plan)
    # The compilers the plan lists for the release (MAJOR=PACKAGE:COMMAND), as its container
    # build would install them.
    compilers = next((l.split("=", 1)[1] for l in plan.splitlines() if l.startswith("KFLEET_COMPILERS=")), "")
    packages = [c.split("=", 1)[1].split(":")[0] for c in compilers.split() if "=" in c]
    missing = [p for p in packages if not (root / "usr" / "bin" / p).exists()]
    if missing:
        with Mounted(root):
            run(["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                 "-y", "-qq", "--no-install-recommends", *missing])
    shutil.copytree(ROOT / "assets" / "example-module", job / "module")
    shutil.copy(ROOT / "assets" / "build-module.sh", job / "build-module.sh")
    inside = f"/replay/{kernel}"
    with Mounted(root):
        result = run(["chroot", str(root), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                      "HOME=/root", f"DISTRIBUTION={distro}", f"DISTRO_VERSION={release}",
                      "ARCHITECTURE=x86_64", f"KERNEL_VERSION={kernel}",
                      f"DRIVER_VERSION={DRIVER_VERSION}", f"MODULE={MODULE}", "bash",
                      f"{inside}/build-module.sh", "--plan", f"{inside}/plan.env", "--headers",
                      f"{inside}/headers", "--extract", "--module", f"{inside}/module", "--out",
                      f"{inside}/out"])
    built = root / result.stdout.strip().splitlines()[-1].lstrip("/")
    shutil.copy(built, out / name)
    shutil.rmtree(job)
    return out / name


def module_crcs(root, package):
    """`modprobe --dump-modversions` (kmod's, in the chroot `root`) of the package's module:
    symbol -> CRC."""
    with tarfile.open(package) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".ko"))
        data = tar.extractfile(member).read()
    path = root / "replay" / "dump.ko"
    path.write_bytes(data)
    vermagic = run(["chroot", str(root), "modinfo", "-F", "vermagic", "/replay/dump.ko"]).stdout
    if "modversions" not in vermagic.split():
        # Built without CONFIG_MODVERSIONS: the kernel checks the whole vermagic, release
        # included, so no other kernel loads it.
        path.unlink()
        return None
    dump = run(["chroot", str(root), "modprobe", "--dump-modversions", "/replay/dump.ko"]).stdout
    path.unlink()
    crcs = {}
    for line in dump.splitlines():
        crc, symbol = line.split()
        crcs[symbol] = int(crc, 16)
    return crcs


def kernel_symvers(work, kernel, url):
    """The kernel's Module.symvers, from its headers package: symbol -> CRC."""
    cache = work / "symvers" / f"{kernel}.symvers"
    if not cache.exists():
        cache.parent.mkdir(exist_ok=True)
        deb = work / "symvers" / f"{kernel}.deb"
        deb.write_bytes(fetch(url))
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        deb.unlink()
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            member = next(m for m in t.getmembers() if m.name.endswith(f"linux-headers-{kernel}/Module.symvers"))
            cache.write_bytes(t.extractfile(member).read())
    crcs = {}
    for line in cache.read_text().splitlines():
        fields = line.split("\t")
        crcs[fields[1]] = int(fields[0], 16)
    return crcs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work):
    binary = next((b for b in ("/usr/bin/docker-registry", "/usr/bin/registry") if Path(b).exists()), None)
    if binary is None:
        sys.exit("no OCI registry: apt-get install docker-registry")
    data = work / "registry"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    port = free_port()
    config = data / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
        f"  filesystem:\n    rootdirectory: {data / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    child = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child, f"oci://127.0.0.1:{port}/replay/{MODULE}"
        except OSError:
            time.sleep(0.05)
    child.kill()
    sys.exit("the registry did not start")


def report(kfleet, env, fleet, store, kabi):
    cmd = [kfleet, "report", "-i", str(fleet), "--store", store, "--target", "100", "--format", "json"]
    if kabi:
        cmd.append("--kabi")
    started = time.monotonic()
    result = run(cmd, env=env)
    return json.loads(result.stdout), time.monotonic() - started, result.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "kfleet-kabi-replay")
    parser.add_argument("--kfleet", default=str(ROOT / "target" / "release" / "kfleet"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the builds run in debootstrapped chroots of each Debian release")
    if not Path(args.kfleet).exists():
        sys.exit(f"no kfleet at {args.kfleet}: cargo build --release --locked, or pass --kfleet")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFLEET_")}
    env.update(XDG_CONFIG_HOME="/nonexistent", KFLEET_STATE_DIR=str(work / "state"))

    kernels = archive_kernels()
    lines = {}
    for (distro, kernel), (release, version, _) in kernels.items():
        lines.setdefault(line_of(distro, release, kernel), []).append((version, kernel, release, distro))
    for members in lines.values():
        members.sort(key=functools.cmp_to_key(lambda a, b: dpkg_cmp(a[0], b[0])))
    log(f"{len(kernels)} kernels on {len(lines)} lines in the archives")

    fleet = work / "fleet.csv"
    fleet.write_text("distribution,distro_version,architecture,kernel_version\n" + "".join(
        f"{distro},{release},x86_64,{kernel}\n"
        for (distro, kernel), (release, _, _) in sorted(kernels.items())))

    built = {}
    for line, members in sorted(lines.items()):
        _, kernel, release, distro = members[0]
        log(f"build {line}: {kernel}")
        built[line] = build(args.kfleet, work, env, distro, release, kernel)

    registry, store = start_registry(work)
    try:
        for package in built.values():
            run([args.kfleet, "store", "push", "--store", store, "--driver-version", DRIVER_VERSION,
                 "--module", MODULE, str(package)], env=env)
        shutil.rmtree(work / "state", ignore_errors=True)
        plain, plain_s, _ = report(args.kfleet, env, fleet, store, kabi=False)
        kabi, kabi_s, kabi_log = report(args.kfleet, env, fleet, store, kabi=True)
        _, warm_s, _ = report(args.kfleet, env, fleet, store, kabi=True)
    finally:
        registry.kill()
        registry.wait()

    status = {(row["distribution"], row["kernel_version"]): row["status"] for row in kabi["identities"]}
    planned = set(tuple(row.split("/")[::3]) for row in kabi["summary"]["batch_plan"]["identities"])
    rows, false_compatible, missed, false_shared = [], [], [], []
    for line, members in sorted(lines.items()):
        distro = members[0][3]
        imports = module_crcs(chroot_for(work, distro, members[0][2]), built[line])
        compatible = 0

        def crcs(kernel):
            symvers = kernel_symvers(work, kernel, kernels[(distro, kernel)][2])
            return {s: symvers.get(s) for s in imports}

        for _, kernel, _, _ in members:
            loads = imports is not None and crcs(kernel) == imports
            verdict = status[(distro, kernel)]
            if verdict == "compatible":
                compatible += 1
                if not loads:
                    false_compatible.append(kernel)
            elif verdict != "covered" and loads:
                missed.append(kernel)
            elif verdict != "covered" and (distro, kernel) not in planned:
                # Left to another kernel's build (a kABI class): that build must carry this
                # kernel's CRC for every import, so some planned kernel of the line must export
                # the same ones, all of them, with modversions.
                shared = imports is not None and None not in crcs(kernel).values() and any(
                    crcs(other) == crcs(kernel) for _, other, _, _ in members if (distro, other) in planned)
                if not shared:
                    false_shared.append(kernel)
        builds = 1 + sum(1 for _, k, _, _ in members if (distro, k) in planned)
        rows.append((line, len(members), compatible, builds,
                     "no modversions" if imports is None else len(imports)))

    plain_builds = len(built) + plain["summary"]["batch_plan"]["builds"]
    kabi_builds = len(built) + kabi["summary"]["batch_plan"]["builds"]
    md = [
        f"kABI replay over {len(kernels)} real x86_64 kernels the archives serve on "
        f"{time.strftime('%Y-%m-%d')} (every one of Debian's; Ubuntu's of assets/real-kernels.csv), "
        f"on {len(lines)} lines, with the example driver:",
        "",
        "| line | kernels | driver's imports | compatible with the line's first build | builds with --kabi |",
        "|---|---:|---:|---:|---:|",
        *[f"| `{line}` | {n} | {i} | {c} | {b} |" for line, n, c, b, i in rows],
        f"| **all** | **{len(kernels)}** | | **{sum(r[2] for r in rows)}** | **{kabi_builds}** |",
        "",
        f"Builds for every kernel: {plain_builds} without `--kabi`, {kabi_builds} with it "
        f"({plain_builds - kabi_builds} saved). `report` took {plain_s:.1f} s without `--kabi`, "
        f"{kabi_s:.1f} s with it on a cold cache (every kernel's headers package read from the "
        f"archive), {warm_s:.1f} s warm.",
        "",
        f"Independent check (each kernel's Module.symvers against `modprobe --dump-modversions`): "
        f"{len(false_compatible)} false `compatible` verdicts, {len(missed)} kernels whose CRCs all "
        f"match but kfleet did not call compatible"
        + (f" ({', '.join(missed)})" if missed else "") + ", "
        f"{len(false_shared)} kernels left to another kernel's build whose CRCs that build does not carry"
        + (f" ({', '.join(false_shared)})" if false_shared else "") + ".",
    ]
    text = "\n".join(md) + "\n"
    (work / "kabi-replay.md").write_text(text)
    (work / "kabi-replay.json").write_text(json.dumps({
        "kernels": len(kernels), "lines": rows, "builds_without_kabi": plain_builds,
        "builds_with_kabi": kabi_builds, "false_compatible": false_compatible, "missed": missed,
        "false_shared": false_shared,
        "report_seconds": {"plain": plain_s, "kabi_cold": kabi_s, "kabi_warm": warm_s},
        "kabi_notes": [l for l in kabi_log.splitlines() if "kabi" in l],
    }, indent=2))
    print(text)
    if false_compatible or false_shared:
        sys.exit(f"false verdicts: {', '.join(false_compatible + false_shared)}")


if __name__ == "__main__":
    main()
