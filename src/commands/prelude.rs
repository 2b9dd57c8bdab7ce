//! What every command file uses: the command line's prelude, the definitions, and the command
//! layer's own helpers.

pub(crate) use super::read_keys_csv;
#[cfg(feature = "fleet")]
pub(crate) use super::{emit, load_listing, read_fleet};
pub(crate) use crate::cli::prelude::*;
pub(crate) use crate::cli::*;
