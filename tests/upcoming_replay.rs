//! What prebuilding upcoming kernels buys: a replay over a fixture history of kernel
//! publications and node boots, under three policies.
//!
//! - **demand-only**: a kernel is built when the first node boots it; every boot of it that day
//!   waits for the build (up to the 15-minute deadline).
//! - **speculative-everything**: every kernel every line of the release publishes is built the
//!   day it is published.
//! - **upcoming-on-fleet-lines** (`kfleet dispatch --upcoming`, nightly): each night, the kernels
//!   published on the lines the fleet runs that day are built; anything else on demand.
//!
//! The history is generated here from stated rules (deterministic, no randomness), with line
//! names `kfleet::headers::line_of` gives real kernels:
//! - 180 days; Ubuntu 22.04 publishes on 8 x86_64 lines (GA and HWE of generic, aws, azure,
//!   gcp, lowlatency), Amazon Linux 2023 on 2 (kernel 6.1 and kernel6.12), each a new kernel
//!   every 21 days (the SRU cadence), lines offset by a few days;
//! - 1,000 nodes: 600 on 22.04 GA generic, 200 on HWE generic, 150 on GA aws, 50 on AL2023 6.1;
//!   on day 90 the AL2023 nodes move to the kernel6.12 line (a line new to the fleet);
//! - every node reboots once a week (on the weekday of its number) into the newest kernel of its
//!   line published at least 2 days earlier (the update lag of unattended upgrades).
//!
//! The counts are deterministic, so the test asserts how the policies compare and prints the
//! table docs/commands.md quotes:
//!
//!   cargo test --test upcoming_replay -- --nocapture

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use kfleet::headers::line_of;
use kfleet::identity::KernelIdentity;
use std::collections::{BTreeMap, HashSet};

const DAYS: u32 = 180;
const CADENCE: u32 = 21;
const LAG: u32 = 2;

/// A line the distributions publish on: an identity template with the kernel's ABI number.
struct PublishedLine {
    /// Makes the kernel with ABI number `n`.
    kernel: fn(u32) -> String,
    distribution: &'static str,
    version: &'static str,
    first_abi: u32,
    offset: u32,
}

fn lines() -> Vec<PublishedLine> {
    let ubuntu = |kernel: fn(u32) -> String, first_abi, offset| PublishedLine {
        kernel,
        distribution: "ubuntu",
        version: "22.04",
        first_abi,
        offset,
    };
    let al = |kernel: fn(u32) -> String, first_abi, offset| PublishedLine {
        kernel,
        distribution: "amazonlinux",
        version: "2023",
        first_abi,
        offset,
    };
    vec![
        ubuntu(|n| format!("5.15.0-{n}-generic"), 100, 0),
        ubuntu(|n| format!("6.8.0-{n}-generic"), 40, 3),
        ubuntu(|n| format!("5.15.0-{n}-aws"), 1050, 5),
        ubuntu(|n| format!("6.8.0-{n}-aws"), 1010, 7),
        ubuntu(|n| format!("5.15.0-{n}-azure"), 1060, 9),
        ubuntu(|n| format!("5.15.0-{n}-gcp"), 1055, 11),
        ubuntu(|n| format!("6.8.0-{n}-gcp"), 1015, 13),
        ubuntu(|n| format!("5.15.0-{n}-lowlatency"), 100, 15),
        al(|n| format!("6.1.{n}-1.amzn2023.x86_64"), 100, 2),
        al(|n| format!("6.12.{n}-1.amzn2023.x86_64"), 10, 4),
    ]
}

fn identity(line: &PublishedLine, abi: u32) -> KernelIdentity {
    KernelIdentity::parse(
        line.distribution,
        line.version,
        "x86_64",
        &(line.kernel)(abi),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", (line.kernel)(abi)))
}

/// The kernels line `l` has published by `day` (the ABI numbers).
fn published(l: &PublishedLine, day: u32) -> Option<u32> {
    (day >= l.offset).then(|| l.first_abi + (day - l.offset) / CADENCE)
}

/// The line index node `n` runs on `day`.
fn node_line(n: u32, day: u32) -> usize {
    match n {
        0..600 => 0,
        600..800 => 1,
        800..950 => 2,
        _ if day < 90 => 8,
        _ => 9,
    }
}

#[derive(Default)]
struct Outcome {
    builds: usize,
    boots: u64,
    waits: u64,
}

fn replay(policy: &str, lines: &[PublishedLine]) -> Outcome {
    let mut built: HashSet<String> = HashSet::new();
    let mut out = Outcome::default();
    for day in 0..DAYS {
        // Speculative: everything published today is built today.
        if policy == "speculative-everything" {
            for l in lines {
                if let Some(abi) = published(l, day) {
                    built.insert(identity(l, abi).key());
                }
            }
        }
        let mut demanded: Vec<String> = Vec::new();
        for n in 0..1000u32 {
            if day % 7 != n % 7 {
                continue;
            }
            let l = &lines[node_line(n, day)];
            let Some(abi) = day.checked_sub(LAG).and_then(|d| published(l, d)) else {
                continue;
            };
            let key = identity(l, abi).key();
            out.boots += 1;
            if !built.contains(&key) {
                out.waits += 1;
                demanded.push(key);
            }
        }
        // Demand builds finish within the day.
        built.extend(demanded);
        // Nightly: the kernels published on the lines the fleet runs today.
        if policy == "upcoming-on-fleet-lines" {
            let fleet_lines: HashSet<String> = (0..1000)
                .map(|n| {
                    let l = &lines[node_line(n, day)];
                    line_of(&identity(l, l.first_abi))
                })
                .collect();
            for l in lines {
                if let Some(abi) = published(l, day) {
                    let id = identity(l, abi);
                    if fleet_lines.contains(&line_of(&id)) {
                        built.insert(id.key());
                    }
                }
            }
        }
    }
    out.builds = built.len();
    out
}

#[test]
fn prebuilding_the_fleets_lines_removes_the_waits_for_a_fraction_of_the_builds() {
    let lines = lines();
    let distinct: BTreeMap<String, ()> = lines
        .iter()
        .map(|l| (line_of(&identity(l, l.first_abi)), ()))
        .collect();
    assert_eq!(
        distinct.len(),
        lines.len(),
        "every published line is its own line"
    );
    println!(
        "| policy | builds | node boots | boots that waited for a build | share waited |\n|---|---:|---:|---:|---:|"
    );
    let mut results = BTreeMap::new();
    for policy in [
        "demand-only",
        "speculative-everything",
        "upcoming-on-fleet-lines",
    ] {
        let o = replay(policy, &lines);
        println!(
            "| {policy} | {} | {} | {} | {:.2}% |",
            o.builds,
            o.boots,
            o.waits,
            o.waits as f64 * 100.0 / o.boots.max(1) as f64
        );
        results.insert(policy, o);
    }
    let (demand, everything, upcoming) = (
        &results["demand-only"],
        &results["speculative-everything"],
        &results["upcoming-on-fleet-lines"],
    );
    assert!(demand.waits > 0 && everything.waits == 0);
    assert!(
        upcoming.waits < demand.waits / 5,
        "upcoming {} vs demand {}",
        upcoming.waits,
        demand.waits
    );
    assert!(
        upcoming.builds * 2 < everything.builds,
        "upcoming {} builds vs everything {}",
        upcoming.builds,
        everything.builds
    );
}
