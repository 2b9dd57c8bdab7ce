//! Artifacts: how a driver package is named for an identity (the naming template, both ways),
//! releases with their assets matched to identities, and a driver as an OCI artifact (its tag
//! and manifest). Below the forge (which fetches listings) and coverage (which counts them);
//! above identity.

mod naming;
pub mod oci;
mod releases;

pub use naming::{AssetName, AssetTemplate, DEFAULT_ASSET_TEMPLATE, TemplateError};
pub use releases::{
    AssetIndex, CHECKSUM_SUFFIX, KABI_SUFFIX, MatchedAsset, Release, ReleaseAsset, ReleaseError,
    UnrecognisedAsset, immutable_reason, index_assets, parse_release_listing, read_release_file,
    select_release,
};
