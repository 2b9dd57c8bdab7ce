//! Where releases and builds live. For now: GitHub release listings read from files.

mod releases;

pub use releases::{
    AssetIndex, MatchedAsset, Release, ReleaseAsset, ReleaseError, UnrecognisedAsset, index_assets,
    read_release_file, select_release,
};
