#!/usr/bin/env python3
"""The reboot storm under real load generators: `hey` and `wrk` (Debian packages) against one
`kfleet serve` process on 127.0.0.1, with the sandbox forge in-process behind it.

Three storms, each followed by the service's own counters from /metrics:

1. `POST /build` for one new kernel the release does not have, NODES requests from CLIENTS
   concurrent clients (hey): the whole fleet rebooted into it. One dispatch must come of it.
2. `GET /status/{id}` of that build, NODES requests (hey): the nodes waiting for it.
3. `POST /build` over IDENTITIES kernels of the sample fleet, most of them released, for
   SECONDS seconds (wrk with a Lua script cycling through the bodies): one dispatch per missing
   kernel, every other answer from the listing.

    python3 benches/reboot_storm_load.py --nodes 10000 --clients 200

Prints a Markdown table (requests per second, p50 and p99 latency, non-2xx answers, dispatches,
GitHub requests charged) and writes it to OUT/reboot-storm-load.md.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "storm-load-client-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(base: str) -> dict:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


def counter(m: dict, prefix: str) -> float:
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def charged(m: dict) -> float:
    return counter(m, "kfleet_github_requests_total") - counter(m, "kfleet_github_not_modified_total")


def post(base: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base}/build", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def hey(args: list) -> dict:
    out = subprocess.run(["hey"] + args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = float(re.search(r"50% in ([\d.]+) secs", out).group(1))
    p99 = float(re.search(r"99% in ([\d.]+) secs", out).group(1))
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {"rps": rps, "p50": p50, "p99": p99, "codes": codes,
            "requests": sum(codes.values())}


def unit(value: str) -> float:
    """wrk's latency ('1.23ms', '850.00us', '1.02s') in seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]
    return float(m.group(1)) * scale


WRK_SCRIPT = r"""
local bodies = {}
for line in io.lines(os.getenv("STORM_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/build", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("STORM_TOKEN"),
  }, bodies[(i % #bodies) + 1])
end
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
"""


def wrk(base: str, bodies: Path, clients: int, seconds: int, work: Path) -> dict:
    script = work / "storm.lua"
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, STORM_BODIES=str(bodies), STORM_TOKEN=TOKEN)
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--latency", "-s", str(script), base],
        capture_output=True, text=True, check=True, env=env).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = unit(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = unit(re.search(r"\s99%\s+(\S+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "requests": total,
            "non2xx": int(bad.group(1)) if bad else 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10000, help="requests per hey storm")
    ap.add_argument("--clients", type=int, default=200, help="concurrent connections")
    ap.add_argument("--seconds", type=int, default=10, help="duration of the wrk storm")
    ap.add_argument("--identities", type=int, default=120, help="kernels in the wrk storm")
    ap.add_argument("--new", type=int, default=20, help="of them, kernels the release lacks")
    ap.add_argument("--out", default=str(ROOT / "bench-out"))
    ap.add_argument("--kfleet", help="kfleet binary (default: build it with cargo build --release)")
    args = ap.parse_args()
    for tool in ("hey", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: apt-get install hey wrk")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kfleet = args.kfleet
    if not kfleet:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
        kfleet = str(target / "release" / "kfleet")

    work = Path(tempfile.mkdtemp(prefix="kfleet-storm-"))
    sandbox = work / "sandbox"
    sandbox.mkdir()
    shutil.copy(ROOT / "sample-data" / "releases.json", sandbox / "releases.json")
    releases = json.loads((sandbox / "releases.json").read_text())
    tag = max(releases, key=lambda r: len(r["assets"]))["tag_name"]
    (work / "tokens").write_text(TOKEN + "\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "w")
    env = dict(os.environ, HOME=str(work), XDG_STATE_HOME=str(work / "state"))
    serve = subprocess.Popen(
        [kfleet, "serve", "--sandbox", str(sandbox), "--listen", f"127.0.0.1:{port}",
         "--client-tokens", str(work / "tokens"), "--metrics-public",
         "--state-dir", str(work / "state"), "--client-builds-per-hour", "100000"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit(f"serve did not become ready: {(work / 'serve.log').read_text()[-2000:]}")
        rows = []

        # 1. The whole fleet reboots into one new kernel.
        new = {"distribution": "ubuntu", "distro_version": "24.04", "architecture": "x86_64",
               "kernel_version": "6.8.0-1999-generic", "driver_version": tag}
        body = work / "new.json"
        body.write_text(json.dumps(new))
        before = metrics(base)
        r = hey(["-n", str(args.nodes), "-c", str(args.clients), "-m", "POST", "-T", "application/json",
                 "-H", f"Authorization: Bearer {TOKEN}", "-D", str(body), f"{base}/build"])
        after = metrics(base)
        rows.append(("POST /build, one new kernel (hey)", r["requests"], r["rps"], r["p50"], r["p99"],
                     r["requests"] - r["codes"].get(200, 0) - r["codes"].get(202, 0),
                     counter(after, "kfleet_dispatches_total") - counter(before, "kfleet_dispatches_total"),
                     charged(after) - charged(before), 1))

        # 2. The nodes poll the build they joined.
        build = post(base, new)
        before = metrics(base)
        r = hey(["-n", str(args.nodes), "-c", str(args.clients),
                 "-H", f"Authorization: Bearer {TOKEN}", f"{base}/status/{build['id']}"])
        after = metrics(base)
        rows.append(("GET /status/{id} (hey)", r["requests"], r["rps"], r["p50"], r["p99"],
                     r["requests"] - r["codes"].get(200, 0),
                     counter(after, "kfleet_dispatches_total") - counter(before, "kfleet_dispatches_total"),
                     charged(after) - charged(before), 0))

        # 3. A storm over many kernels: those the release has (from its asset names), and NEW
        #    kernels it lacks, each asked for by many nodes at once.
        pattern = re.compile(r"^kdriver-" + re.escape(tag) + r"-([a-z0-9]+)-([0-9.]+)-(x86_64|aarch64)-(.+)\.tar\.xz$")
        bodies = []
        for asset in next(r for r in releases if r["tag_name"] == tag)["assets"]:
            m = pattern.match(asset["name"])
            if m and len(bodies) < args.identities - args.new:
                bodies.append(dict(zip(("distribution", "distro_version", "architecture", "kernel_version"),
                                       m.groups()), driver_version=tag))
        released = len(bodies)
        for i in range(args.new):
            bodies.append({"distribution": "ubuntu", "distro_version": "24.04", "architecture": "x86_64",
                           "kernel_version": f"6.8.0-{2000 + i}-generic", "driver_version": tag})
        lines = work / "bodies.txt"
        lines.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
        before = metrics(base)
        r = wrk(base, lines, args.clients, args.seconds, work)
        # Dispatches are paced (--dispatch-interval): wait for the claims to go out.
        deadline = time.time() + 120
        while time.time() < deadline:
            after = metrics(base)
            done = counter(after, "kfleet_dispatches_total") - counter(before, "kfleet_dispatches_total")
            if done >= args.new:
                break
            time.sleep(1)
        rows.append((f"POST /build, {released} released + {args.new} new kernels (wrk, {args.seconds} s)",
                     r["requests"], r["rps"], r["p50"], r["p99"], r["non2xx"],
                     counter(after, "kfleet_dispatches_total") - counter(before, "kfleet_dispatches_total"),
                     charged(after) - charged(before), args.new))
        outcomes = {k[len('kfleet_requests_total{outcome="'):-2]: after.get(k, 0) - before.get(k, 0)
                    for k in after if k.startswith("kfleet_requests_total{")}
        total = metrics(base)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()

    lines = [
        f"Machine: {os.cpu_count()} cores; one `kfleet serve` (SQLite state, sandbox forge in-process) "
        f"on 127.0.0.1, {args.clients} concurrent connections. Dispatches and GitHub requests "
        "are the service's /metrics counters over each storm (requests answered 304 are not charged).",
        "",
        "| storm | requests | requests/s | p50 | p99 | not 2xx | dispatches (expected) | GitHub requests charged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, rps, p50, p99, bad, dispatches, gh, expected in rows:
        lines.append(f"| {name} | {n:,} | {rps:,.0f} | {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms | {bad:,} "
                     f"| {dispatches:.0f} ({expected}) | {gh:.0f} |")
    lines += ["", "Answers of the wrk storm by outcome: "
              + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(outcomes.items()) if v) + "; "
              f"dispatches over the whole run: {counter(total, 'kfleet_dispatches_total'):.0f}."]
    table = "\n".join(lines) + "\n"
    (out / "reboot-storm-load.md").write_text(table)
    print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
