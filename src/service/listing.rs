//! The release listing requests are answered from: the last good one, refreshed in the
//! background when stale (one refresh at a time), each release's artifacts indexed by identity
//! once per listing.

use super::ServiceState;
use crate::artifacts::{MatchedAsset, Release, index_assets, select_release};
use crate::locks::{Lock, ReadWrite};
use crate::protocol::{BuildStatus, ServiceStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One release listing as fetched; requests read it while a refresh runs in the background.
pub(super) struct Listing {
    releases: Vec<Release>,
    /// Per release tag: its artifacts by identity key, built on first use.
    indexes: std::sync::Mutex<HashMap<String, Arc<ReleaseIndex>>>,
    pub(super) fetched: Instant,
}

/// One release's artifacts by identity key, and whether it can take new ones.
struct ReleaseIndex {
    tag: String,
    immutable: bool,
    assets: HashMap<String, MatchedAsset>,
}

/// What the service knows of a driver version from the listing.
pub(super) enum Lookup {
    Found(MatchedAsset),
    NotBuilt,
    /// The release lacks it and is immutable: nothing can be added to it.
    Immutable(String),
    /// The listing has no such release.
    NoRelease,
}

/// The current listing and the single flight that refreshes it.
pub(super) struct Listings {
    /// The last good listing; replaced whole by a refresh.
    current: std::sync::RwLock<Option<Arc<Listing>>>,
    /// Single flight for listing refreshes.
    refreshing: tokio::sync::Mutex<()>,
}

impl Listings {
    pub(super) fn new() -> Self {
        Self {
            current: std::sync::RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }
}

impl ServiceState {
    /// Fetches the listing now, unless another task is already at it (then waits for that one).
    pub(super) async fn refresh_listing(
        &self,
        since: Option<Instant>,
    ) -> Result<Arc<Listing>, String> {
        let _one = self.listings.refreshing.lock().await;
        let current = self.listings.current.read_now().clone();
        if let Some(current) = &current
            && since.is_none_or(|s| current.fetched > s)
        {
            // Someone refreshed while this task waited.
            return Ok(current.clone());
        }
        match self.forge.list_releases().await {
            Ok(fresh) => {
                let listing = Arc::new(Listing {
                    releases: fresh.releases,
                    indexes: std::sync::Mutex::new(HashMap::new()),
                    fetched: self.clock().instant(),
                });
                *self.listings.current.write_now() = Some(listing.clone());
                Ok(listing)
            }
            Err(e) => {
                tracing::warn!("cannot refresh the release listing: {e}");
                match current {
                    Some(c) => Ok(c),
                    None => Err(e.to_string()),
                }
            }
        }
    }

    /// The listing to answer from: the last good one (a stale one starts a refresh in the
    /// background and is still served), or the first one fetched now.
    pub(super) async fn current_listing(self: &Arc<Self>) -> Result<Arc<Listing>, String> {
        let current = self.listings.current.read_now().clone();
        match current {
            Some(listing) => {
                self.refresh_if_older(&listing, self.options.listing_ttl);
                Ok(listing)
            }
            None => self.refresh_listing(None).await,
        }
    }

    /// Reads the listing again in the background when `listing` is at least `age` old and no
    /// refresh is under way.
    pub(super) fn refresh_if_older(self: &Arc<Self>, listing: &Listing, age: Duration) {
        if self.elapsed_since(listing.fetched) >= age && self.listings.refreshing.try_lock().is_ok()
        {
            let me = self.clone();
            let seen = listing.fetched;
            tokio::spawn(async move {
                let _ = me.refresh_listing(Some(seen)).await;
            });
        }
    }

    /// The artifact of `key` in release `driver_version`. Each release's assets are matched to
    /// identities once per listing, so a request is a hash lookup.
    pub(super) fn find(&self, listing: &Listing, key: &str, driver_version: &str) -> Lookup {
        let index = {
            let mut indexes = listing.indexes.locked();
            match indexes.get(driver_version) {
                Some(index) => Some(index.clone()),
                None => match select_release(&listing.releases, Some(driver_version)) {
                    Ok(release) => {
                        let index = Arc::new(ReleaseIndex {
                            tag: release.tag_name.clone(),
                            immutable: release.immutable,
                            assets: index_assets(release, &self.template)
                                .matched
                                .into_iter()
                                .map(|a| (a.key.clone(), a))
                                .collect(),
                        });
                        indexes.insert(driver_version.to_string(), index.clone());
                        Some(index)
                    }
                    Err(_) => None,
                },
            }
        };
        match index {
            None => Lookup::NoRelease,
            Some(index) => match index.assets.get(key) {
                Some(asset) => Lookup::Found(asset.clone()),
                None if index.immutable => Lookup::Immutable(index.tag.clone()),
                None => Lookup::NotBuilt,
            },
        }
    }

    pub(super) fn available_status(key: String, asset: MatchedAsset) -> BuildStatus {
        BuildStatus {
            id: None,
            status: ServiceStatus::Available,
            identity: Some(key),
            download_url: asset.url,
            sha256: asset
                .digest
                .map(|d| d.trim_start_matches("sha256:").to_string()),
            sha256_url: asset.checksum_url,
            provenance_url: asset.provenance_url,
            run_url: None,
            reason: None,
        }
    }
}
