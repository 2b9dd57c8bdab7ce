#!/usr/bin/env python3
"""Benchmark `kfleet report` against the same coverage query in DuckDB, in one run.

Generates fleets with `kfleet gen-fleet`, then runs each engine as its own process several times
and records wall time and peak resident memory (getrusage of the child). Prints a Markdown table
and writes it to OUT/report-bench.md.

    python3 benches/report_vs_duckdb.py --sizes 1000000,10000000 --runs 5

DuckDB comes from PyPI into OUT/venv on first use. Both engines use every core of the machine.
The DuckDB query does the same relational work (CSV scan, group-by per identity with the
architecture aliases folded, join with the release's assets parsed from releases.json through the
naming template, head ranking by a running sum, status counts); it does not validate kernel
strings, which kfleet does once per distinct identity.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DUCKDB_SCRIPT = r"""
import csv, json, re, sys, tempfile, os
import duckdb
fleet, releases, tag = sys.argv[1], sys.argv[2], sys.argv[3]
pattern = re.compile(r'^kdriver-' + re.escape(tag) + r'-([a-z0-9]+)-([0-9.]+)-(x86_64|aarch64)-(.+)\.tar\.xz$')
with open(releases) as f:
    rel = next(r for r in json.load(f) if r['tag_name'] == tag)
fd, assets_csv = tempfile.mkstemp(suffix='.csv')
with os.fdopen(fd, 'w', newline='') as out:
    w = csv.writer(out)
    w.writerow(['key', 'asset'])
    for a in rel['assets']:
        m = pattern.match(a['name'])
        if m:
            w.writerow(['/'.join(m.groups()), a['name']])
con = duckdb.connect()
rows = con.execute(f'''
WITH g AS (
  SELECT distribution || '/' || distro_version || '/' ||
         CASE architecture WHEN 'amd64' THEN 'x86_64' WHEN 'arm64' THEN 'aarch64' ELSE architecture END
         || '/' || kernel_version AS key,
         count(*) AS n
  FROM read_csv('{fleet}', header = true, all_varchar = true)
  WHERE distribution IS NOT NULL AND distro_version IS NOT NULL
    AND architecture IS NOT NULL AND kernel_version IS NOT NULL
  GROUP BY ALL
), j AS (
  SELECT g.key, g.n, a.asset FROM g LEFT JOIN read_csv('{assets_csv}', header = true) a USING (key)
), r AS (
  SELECT *, sum(n) OVER (ORDER BY n DESC, key ROWS UNBOUNDED PRECEDING) - n AS before,
         sum(n) OVER () AS total
  FROM j
)
SELECT CASE WHEN asset IS NOT NULL THEN 'covered'
            WHEN before < 0.9 * total THEN 'missing' ELSE 'long-tail' END AS status,
       count(*) AS identities, sum(n) AS nodes
FROM r GROUP BY 1 ORDER BY 1
''').fetchall()
os.unlink(assets_csv)
print(rows)
"""


def run_measured(cmd, env=None):
    """Runs cmd, returns (seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024.0


def ensure_duckdb(out: Path) -> str:
    venv = out / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "duckdb"], check=True)
    return str(python)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="node counts, comma-separated")
    ap.add_argument("--runs", type=int, default=5, help="runs per engine and size (median is reported)")
    ap.add_argument("--out", default=str(ROOT / "bench-out"), help="work directory")
    ap.add_argument("--kfleet", help="kfleet binary (default: build it with cargo build --release)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    kfleet = args.kfleet
    if not kfleet:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
        kfleet = str(target / "release" / "kfleet")
    python = ensure_duckdb(out)
    duck_version = subprocess.run(
        [python, "-c", "import duckdb; print(duckdb.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        data = out / f"fleet-{size}"
        if not (data / "fleet.csv").exists():
            subprocess.run(
                [kfleet, "gen-fleet", "--nodes", str(size), "--seed", "1", "--out", str(data)],
                check=True, stdout=subprocess.DEVNULL,
            )
        csv_mib = (data / "fleet.csv").stat().st_size / 2**20
        engines = {
            "kfleet report": [kfleet, "report", "-i", str(data / "fleet.csv"), "-r", str(data / "releases.json"),
                              "--format", "json"],
            f"DuckDB {duck_version}": [python, "-c", DUCKDB_SCRIPT, str(data / "fleet.csv"),
                                       str(data / "releases.json"), "v0.5.16"],
        }
        results = {name: [] for name in engines}
        for _ in range(args.runs):
            # Interleave the engines so both see the same machine state and page cache.
            for name, cmd in engines.items():
                results[name].append(run_measured(cmd))
        base = statistics.median(t for t, _ in results[f"DuckDB {duck_version}"])
        for name, samples in results.items():
            wall = statistics.median(t for t, _ in samples)
            rss = max(m for _, m in samples)
            rows.append((f"{size:,}", f"{csv_mib:,.0f} MiB", name, wall, rss, wall / base))

    lines = [
        f"Machine: {os.cpu_count()} cores; {args.runs} runs per cell, median wall time, peak RSS over the runs.",
        "",
        "| nodes | fleet.csv | engine | median wall | peak RSS | wall vs DuckDB |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for size, mib, name, wall, rss, ratio in rows:
        lines.append(f"| {size} | {mib} | {name} | {wall:.2f} s | {rss:,.0f} MiB | {ratio:.2f}x |")
    table = "\n".join(lines) + "\n"
    (out / "report-bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
