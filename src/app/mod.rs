//! Use cases: what the commands and the dashboard both do, written once. They read and compute;
//! showing the result is the caller's job. (The build service keeps its own flows in
//! `service/`.)

pub mod compatible;
pub mod snapshot;
