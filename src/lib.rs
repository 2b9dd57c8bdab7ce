//! kfleet: which kernels in a fleet have a prebuilt driver, which are missing, and what to build.

pub mod artifacts;
pub mod bounded;
pub mod builds;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
#[cfg(feature = "fleet")]
pub mod coverage;
pub mod distros;
pub mod forge;
pub mod fsio;
pub mod headers;
pub mod identity;
#[cfg(feature = "fleet")]
pub mod inventory;
pub mod kmod;
pub mod locks;
pub mod net;
pub mod notice;
pub mod report;
#[cfg(feature = "fleet")]
pub mod sample;
pub mod service;
#[cfg(feature = "fleet")]
pub mod tui;
