//! What to do about a library error, in the command line's words. The library's errors say what
//! failed and on which input; the flag or variable that changes it is named here, once, for every
//! command that can meet the error.

use crate::forge::ForgeError;
use crate::localrun::SetupError;
use crate::node::ensure::EnsureError;
use crate::node::install::InstallError;
use crate::readiness::ReadinessError;
use crate::service::tls::TlsError;

/// The hint for `err`, the first of its chain that has one.
pub(crate) fn hint(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = hint_of(e) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// `err` and what to do about it, on one line.
pub(crate) fn with_hint(err: &(dyn std::error::Error + 'static)) -> String {
    match hint(err) {
        Some(hint) => format!("{err}; {hint}"),
        None => err.to_string(),
    }
}

fn hint_of(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<ForgeError>() {
        return match e {
            ForgeError::BadRepo(_) => Some("pass --repo OWNER/NAME"),
            ForgeError::NotFound { .. } => Some("check --repo and --api-url"),
            ForgeError::ApiUrl { .. } => Some("check --api-url"),
            ForgeError::AppKey(_) => Some("--github-app-key takes the App's private key file"),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<ReadinessError>() {
        return match e {
            ReadinessError::NoNodeName => Some("or pass --node-name"),
            ReadinessError::NoApiServer => Some("pass --kube-api URL"),
            _ => None,
        };
    }
    #[cfg(feature = "fleet")]
    if let Some(crate::inventory::InventoryError::Strict { .. }) =
        e.downcast_ref::<crate::inventory::InventoryError>()
    {
        return Some("--strict refuses any bad row; without it bad rows are counted and skipped");
    }
    if let Some(e) = e.downcast_ref::<SetupError>() {
        return match e {
            SetupError::Checkout { .. } | SetupError::NoWorkflow { .. } => Some("check --checkout"),
            SetupError::WorkDir { .. } => Some("check --runner-dir"),
            SetupError::Stage(_) => None,
        };
    }
    if let Some(TlsError::Key { .. }) = e.downcast_ref::<TlsError>() {
        return Some("check --tls-key");
    }
    if let Some(e) = e.downcast_ref::<EnsureError>() {
        return match e {
            EnsureError::Unauthorized(_) => Some("check KFLEET_SERVICE_TOKEN or --token-file"),
            EnsureError::TooLarge { .. } => Some("raise --max-download if it is right"),
            EnsureError::Insecure(crate::net::TransportError::PlainHttp { .. }) => {
                Some("or pass --insecure-http on a network you trust")
            }
            EnsureError::NeedsStore(_) => {
                Some("pass --store oci://REGISTRY/NAMESPACE/NAME (the registry, or a mirror of it)")
            }
            _ => None,
        };
    }
    if let Some(crate::artifacts::ReleaseError::NoPublished { .. }) =
        e.downcast_ref::<crate::artifacts::ReleaseError>()
    {
        return Some("pass --driver-version TAG to pick one");
    }
    if let Some(crate::state::StoreError::Invalid { store, .. }) =
        e.downcast_ref::<crate::state::StoreError>()
        && store == crate::state::POSTGRES_URL
    {
        return Some("check --state (or KFLEET_STATE_URL)");
    }
    if let Some(e) = e.downcast_ref::<InstallError>() {
        return match e {
            InstallError::UntrustedSigner { .. } => Some("--no-signer-check skips this check"),
            InstallError::OtherVersionLoaded { .. } => {
                Some("pass --replace to unload it and load the new one")
            }
            _ => None,
        };
    }
    None
}
