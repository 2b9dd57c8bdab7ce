//! kfleet: which kernels in a fleet have a prebuilt driver, which are missing, and what to build.

pub mod builds;
pub mod cli;
pub mod config;
pub mod coverage;
pub mod forge;
pub mod headers;
pub mod identity;
pub mod inventory;
pub mod report;
pub mod sample;
pub mod service;
pub mod tui;
