#!/usr/bin/env python3
"""Benchmark `kfleet report` against the same coverage query in DuckDB, in one run.

Generates fleets with `kfleet gen-fleet` (CSV, and Parquet with the same rows), writes the same
fleet as Parquet from DuckDB and from pyarrow (fleets' Parquet comes from data-lake tools, not from
kfleet), then runs each engine as its own process several times on the same file and records wall
time, CPU time and peak resident memory (getrusage of the child). Beside each input it prints the
read floor: the time to read the file's bytes from the page cache, which no engine beats. With --dashboard, also times the dashboard from
start to its first full screen in a pseudo-terminal. Prints Markdown tables and writes them to
OUT/report-bench.md.

    python3 benches/report_vs_duckdb.py --sizes 1000000,10000000,100000000 \
        --formats csv,parquet,parquet-duckdb,parquet-pyarrow --runs 3 --dashboard

DuckDB and pyarrow come from PyPI into OUT/venv on first use. Both engines use every core of the machine.
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
  FROM {"read_parquet" if fleet.endswith(".parquet") else "read_csv"}('{fleet}'{"" if fleet.endswith(".parquet") else ", header = true, all_varchar = true"})
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
    """Runs cmd, returns (wall seconds, CPU seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def dashboard_first_screen(kfleet, fleet, releases, marker=b"q quit"):
    """Starts the dashboard in a pseudo-terminal; seconds until its first full screen is drawn
    (the footer, the last row of the first frame, has arrived; the report is computed before the
    first frame), then quits it with q."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.environ["TERM"] = "xterm-256color"
        os.execv(kfleet, [kfleet, "tui", "-i", str(fleet), "-r", str(releases)])
    start = time.perf_counter()
    seen = b""
    elapsed = None
    try:
        while time.perf_counter() - start < 600:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            if marker in seen:
                elapsed = time.perf_counter() - start
                break
        os.write(fd, b"q")
        for _ in range(50):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if elapsed is None:
        sys.exit("the dashboard never drew its first screen")
    return elapsed


def ensure_duckdb(out: Path) -> str:
    venv = out / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import duckdb, pyarrow"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "duckdb", "pyarrow"], check=True)
    return str(python)


# Writes fleet.csv as Parquet the way DuckDB or pyarrow does by default (dictionary pages,
# snappy, their own row-group sizes), all columns as text.
WRITE_PARQUET = r"""
import sys
writer, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
if writer == "duckdb":
    import duckdb
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_csv('{src}', header = true, all_varchar = true)) TO '{dst}' (FORMAT parquet)")
else:
    import pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
    cols = ["node", "distribution", "distro_version", "architecture", "kernel_version"]
    reader = pc.open_csv(src, convert_options=pc.ConvertOptions(column_types={c: pa.string() for c in cols}))
    # pyarrow's own default row group (1Mi rows), written as the CSV streams in.
    with pq.ParquetWriter(dst, reader.schema) as w:
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows >= 1 << 20:
                w.write_table(pa.Table.from_batches(batches))
                batches, rows = [], 0
        if batches:
            w.write_table(pa.Table.from_batches(batches))
"""


def read_floor(path: Path, runs: int) -> float:
    """Median seconds to read the file's bytes (from the page cache after the first run)."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(1 << 20)
            while f.readinto(buf):
                pass
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="node counts, comma-separated")
    ap.add_argument("--runs", type=int, default=5, help="runs per engine and size (median is reported)")
    ap.add_argument("--out", default=str(ROOT / "bench-out"), help="work directory")
    ap.add_argument("--formats", default="csv,parquet", help="inventory formats, comma-separated")
    ap.add_argument("--dashboard", action="store_true", help="also time the dashboard's first screen (CSV)")
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
    screens = []
    duck = f"DuckDB {duck_version}"
    for size in [int(s) for s in args.sizes.split(",")]:
        data = out / f"fleet-{size}"
        if not (data / "fleet.csv").exists():
            subprocess.run(
                [kfleet, "gen-fleet", "--nodes", str(size), "--seed", "1", "--out", str(data)],
                check=True, stdout=subprocess.DEVNULL,
            )
        for fmt in args.formats.split(","):
            if fmt == "csv":
                fleet = data / "fleet.csv"
            elif fmt in ("parquet-duckdb", "parquet-pyarrow"):
                fleet = out / f"fleet-{size}-{fmt}.parquet"
                if not fleet.exists():
                    writer = fmt.split("-")[1]
                    subprocess.run([python, "-c", WRITE_PARQUET, writer, str(data / "fleet.csv"),
                                    str(fleet) + ".part"], check=True)
                    os.replace(str(fleet) + ".part", fleet)
            else:
                pq = out / f"fleet-{size}-parquet"
                fleet = pq / "fleet.parquet"
                if not fleet.exists():
                    subprocess.run(
                        [kfleet, "gen-fleet", "--nodes", str(size), "--seed", "1", "--out", str(pq),
                         "--format", "parquet"],
                        check=True, stdout=subprocess.DEVNULL,
                    )
            mib = fleet.stat().st_size / 2**20
            floor = read_floor(fleet, args.runs)
            engines = {
                "kfleet report": [kfleet, "report", "-i", str(fleet), "-r", str(data / "releases.json"),
                                  "--format", "json"],
                duck: [python, "-c", DUCKDB_SCRIPT, str(fleet), str(data / "releases.json"), "v0.5.16"],
            }
            results = {name: [] for name in engines}
            for _ in range(args.runs):
                # Interleave the engines so both see the same machine state and page cache.
                for name, cmd in engines.items():
                    results[name].append(run_measured(cmd))
            base = statistics.median(t for t, _, _ in results[duck])
            for name, samples in results.items():
                wall = statistics.median(t for t, _, _ in samples)
                cpu = statistics.median(c for _, c, _ in samples)
                rss = max(m for _, _, m in samples)
                rows.append((f"{size:,}", fmt, f"{mib:,.0f} MiB", floor, name, wall, cpu, rss, wall / base))
            if args.dashboard and fmt == "csv":
                report = statistics.median(t for t, _, _ in results["kfleet report"])
                first = statistics.median(
                    dashboard_first_screen(kfleet, fleet, data / "releases.json") for _ in range(args.runs)
                )
                screens.append((f"{size:,}", report, first, first / report))

    lines = [
        f"Machine: {os.cpu_count()} cores; {args.runs} runs per cell, median wall and CPU time, "
        "peak RSS over the runs.",
        "",
        "| nodes | input | size | read floor | engine | median wall | CPU | peak RSS | wall vs DuckDB |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for size, fmt, mib, floor, name, wall, cpu, rss, ratio in rows:
        lines.append(
            f"| {size} | {fmt} | {mib} | {floor:.3f} s | {name} | {wall:.3f} s | {cpu:.2f} s | {rss:,.0f} MiB "
            f"| {ratio:.2f}x |"
        )
    if screens:
        lines += [
            "",
            "| nodes | report wall | dashboard first screen | ratio |",
            "|---:|---:|---:|---:|",
        ]
        for size, report, first, ratio in screens:
            lines.append(f"| {size} | {report:.2f} s | {first:.2f} s | {ratio:.2f}x |")
    table = "\n".join(lines) + "\n"
    (out / "report-bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
