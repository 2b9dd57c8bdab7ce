//! A driver as an OCI artifact: its tag (the asset name, readable and reversible, or a digest
//! of the identity where the name cannot be a tag), its manifest (kfleet's `artifactType`, the
//! `.tar.xz` as its first layer, the build's Sigstore bundle and kABI record as optional further
//! layers, the identity in annotations), and the checks a reader makes before trusting one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `artifactType` of a kfleet driver.
pub const ARTIFACT_TYPE: &str = "application/vnd.kfleet.driver.v1";
/// The media type of its one layer, the driver package.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.kfleet.driver.v1.tar+xz";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of its optional second layer: the build's Sigstore bundle (signed
/// provenance of the package).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The media type of its optional kABI record: what each module imports, with CRCs, and its
/// vermagic (`NAME.kabi.json` in a release; [`crate::kabi::PackageAbi`]).
pub const KABI_MEDIA_TYPE: &str = "application/vnd.kfleet.kabi.v1+json";
/// The empty config an artifact manifest points at (`{}`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";

pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_IDENTITY: &str = "io.kfleet.identity";
pub const ANNOTATION_DRIVER_VERSION: &str = "io.kfleet.driver-version";
pub const ANNOTATION_VERMAGIC: &str = "io.kfleet.vermagic";
pub const ANNOTATION_SHA256: &str = "io.kfleet.sha256";

/// The longest tag a registry takes.
pub const MAX_TAG: usize = 128;
/// Tags that hash the identity start with this; an escaped asset name never does.
const HASHED_PREFIX: &str = "_h";

/// The tag of a driver: the asset name with `_` written `__`, `+` written `_p` and `~` written
/// `_t` (tags allow letters, digits, `_ . -`), so it reads back to the asset name. Where that
/// is not a tag (another character, over 128 characters, a leading `.` or `-`), a digest of the
/// driver version and identity: `_h` and 64 hex digits, with the identity in the annotations.
pub fn tag_for(asset_name: &str, driver_version: &str, key: &str) -> String {
    let mut tag = String::with_capacity(asset_name.len() + 8);
    for c in asset_name.chars() {
        match c {
            '_' => tag.push_str("__"),
            '+' => tag.push_str("_p"),
            '~' => tag.push_str("_t"),
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => tag.push(c),
            _ => return hashed_tag(driver_version, key),
        }
    }
    let starts_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !starts_ok || tag.len() > MAX_TAG {
        return hashed_tag(driver_version, key);
    }
    tag
}

fn hashed_tag(driver_version: &str, key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{driver_version}\n{key}"));
    format!("{HASHED_PREFIX}{}", crate::fsio::hex(&digest))
}

/// What a tag says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagName {
    /// An asset name, read back from its escapes.
    Asset(String),
    /// A digest tag: its manifest's annotations name the identity.
    Hashed,
    /// Not a tag kfleet writes.
    Foreign,
}

pub fn parse_tag(tag: &str) -> TagName {
    if tag.len() == HASHED_PREFIX.len() + 64
        && tag.starts_with(HASHED_PREFIX)
        && tag[HASHED_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return TagName::Hashed;
    }
    let mut out = String::with_capacity(tag.len());
    let mut chars = tag.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next() {
                Some('_') => out.push('_'),
                Some('p') => out.push('+'),
                Some('t') => out.push('~'),
                _ => return TagName::Foreign,
            },
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => out.push(c),
            _ => return TagName::Foreign,
        }
    }
    TagName::Asset(out)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a driver's manifest states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverManifest {
    /// The identity key (`ubuntu/22.04/x86_64/5.15.0-91-generic`).
    pub identity: String,
    pub driver_version: String,
    /// The asset name the package was pushed under.
    pub title: String,
    /// The layer: the package's digest (`sha256:…`) and size.
    pub layer_digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vermagic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// A further layer, when the build's Sigstore bundle was pushed with the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Blob>,
    /// A further layer, when the package's kABI record was pushed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kabi: Option<Blob>,
}

/// A blob a manifest points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

impl DriverManifest {
    /// Whether the manifest is the driver of (identity key, driver version).
    pub fn is_for(&self, key: &str, driver_version: &str) -> bool {
        self.identity == key && self.driver_version == driver_version
    }
}

/// The manifest of a driver package whose bytes hash to `layer_digest`.
pub fn driver_manifest(
    driver: &DriverManifest,
    config_digest: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_IDENTITY.to_string(), driver.identity.clone()),
        (
            ANNOTATION_DRIVER_VERSION.to_string(),
            driver.driver_version.clone(),
        ),
        (
            ANNOTATION_SHA256.to_string(),
            driver
                .layer_digest
                .trim_start_matches("sha256:")
                .to_string(),
        ),
        (ANNOTATION_TITLE.to_string(), driver.title.clone()),
    ]);
    if let Some(v) = &driver.vermagic {
        annotations.insert(ANNOTATION_VERMAGIC.to_string(), v.clone());
    }
    if let Some(c) = &driver.created {
        annotations.insert(ANNOTATION_CREATED.to_string(), c.clone());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor {
            media_type: EMPTY_MEDIA_TYPE.into(),
            digest: config_digest.to_string(),
            size: EMPTY_CONFIG.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: LAYER_MEDIA_TYPE.into(),
            digest: driver.layer_digest.clone(),
            size: driver.size,
            annotations: BTreeMap::from([(ANNOTATION_TITLE.to_string(), driver.title.clone())]),
        }]
        .into_iter()
        .chain(
            [
                (
                    &driver.provenance,
                    BUNDLE_MEDIA_TYPE,
                    crate::provenance::BUNDLE_SUFFIX,
                ),
                (&driver.kabi, KABI_MEDIA_TYPE, super::KABI_SUFFIX),
            ]
            .into_iter()
            .filter_map(|(blob, media_type, suffix)| {
                blob.as_ref().map(|blob| Descriptor {
                    media_type: media_type.into(),
                    digest: blob.digest.clone(),
                    size: blob.size,
                    annotations: BTreeMap::from([(
                        ANNOTATION_TITLE.to_string(),
                        format!("{}{suffix}", driver.title),
                    )]),
                })
            }),
        )
        .collect(),
        annotations,
    };
    serde_json::to_vec(&manifest)
}

/// Reads a driver's manifest: kfleet's artifact type, a first layer of the package's media type
/// whose digest the `io.kfleet.sha256` annotation repeats, at most one Sigstore bundle and one
/// kABI record after it, and the identity annotations.
pub fn read_driver_manifest(bytes: &[u8]) -> Result<DriverManifest, String> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "artifactType is {}, not {ARTIFACT_TYPE}: not a kfleet driver",
            m.artifact_type
                .as_deref()
                .map(crate::text::clean)
                .unwrap_or_else(|| "missing".into())
        ));
    }
    let Some((layer, further)) = m.layers.split_first() else {
        return Err("no layers; a kfleet driver's first layer is its package".into());
    };
    let (mut provenance, mut kabi) = (None, None);
    for (n, b) in further.iter().enumerate() {
        let (slot, what) = if b
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            (&mut provenance, "Sigstore bundle")
        } else if b.media_type == KABI_MEDIA_TYPE {
            (&mut kabi, "kABI record")
        } else {
            return Err(format!(
                "layer {} is {}, neither a Sigstore bundle nor a kABI record",
                n + 2,
                crate::text::clean(&b.media_type)
            ));
        };
        if slot.is_some() {
            return Err(format!("it has two layers of a {what}; a driver has one"));
        }
        if !crate::oci::valid_digest(&b.digest) {
            return Err(format!(
                "the {what} layer's digest {} is not sha256: and 64 hex digits",
                crate::text::clean(&b.digest)
            ));
        }
        *slot = Some(Blob {
            digest: b.digest.clone(),
            size: b.size,
        });
    }
    if layer.media_type != LAYER_MEDIA_TYPE {
        return Err(format!(
            "the layer is {}, not {LAYER_MEDIA_TYPE}",
            crate::text::clean(&layer.media_type)
        ));
    }
    if !crate::oci::valid_digest(&layer.digest) {
        return Err(format!(
            "the layer's digest {} is not sha256: and 64 hex digits",
            crate::text::clean(&layer.digest)
        ));
    }
    let get = |key: &str| m.annotations.get(key).cloned();
    let need = |key: &str| get(key).ok_or_else(|| format!("the annotation {key} is missing"));
    let sha256 = need(ANNOTATION_SHA256)?;
    if format!("sha256:{sha256}") != layer.digest {
        return Err(format!(
            "the annotation {ANNOTATION_SHA256} ({}) differs from the layer's digest {}",
            crate::text::clean(&sha256),
            layer.digest
        ));
    }
    Ok(DriverManifest {
        identity: need(ANNOTATION_IDENTITY)?,
        driver_version: need(ANNOTATION_DRIVER_VERSION)?,
        title: get(ANNOTATION_TITLE).unwrap_or_default(),
        layer_digest: layer.digest.clone(),
        size: layer.size,
        vermagic: get(ANNOTATION_VERMAGIC),
        created: get(ANNOTATION_CREATED),
        provenance,
        kabi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_back_to_asset_names() {
        for name in [
            "kdriver-1.2.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz",
            "kdriver-2.0-debian-13-x86_64-6.12.115+deb13.1-amd64.tar.xz",
            "kdriver-1.0~rc1-rocky-9.4-x86_64-5.14.0-427.13.1.el9_4.x86_64.tar.xz",
            "_x__y",
        ] {
            let tag = tag_for(name, "1", "k");
            assert!(tag.len() <= MAX_TAG);
            assert!(
                tag.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            );
            assert_eq!(parse_tag(&tag), TagName::Asset(name.to_string()), "{tag}");
        }
        assert_eq!(
            tag_for(
                "kdriver-1.2.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz",
                "",
                ""
            ),
            "kdriver-1.2.0-ubuntu-22.04-x86__64-5.15.0-91-generic.tar.xz"
        );
    }

    #[test]
    fn names_that_cannot_be_tags_hash_the_identity() {
        let long = format!("kdriver-1-ubuntu-22.04-x86_64-{}.tar.xz", "a".repeat(120));
        let tag = tag_for(&long, "1", "ubuntu/22.04/x86_64/aaa");
        assert_eq!(tag.len(), 66);
        assert_eq!(parse_tag(&tag), TagName::Hashed);
        assert_eq!(tag, tag_for(&long, "1", "ubuntu/22.04/x86_64/aaa"));
        assert_ne!(tag, tag_for(&long, "2", "ubuntu/22.04/x86_64/aaa"));
        assert_eq!(parse_tag(&tag_for(".hidden", "1", "k")), TagName::Hashed);
        for foreign in ["latest", "v1_x", "a_b"] {
            assert!(
                matches!(parse_tag(foreign), TagName::Asset(_) | TagName::Foreign),
                "{foreign}"
            );
        }
        assert_eq!(parse_tag("a_b"), TagName::Foreign);
    }

    #[test]
    fn manifests_round_trip_and_lies_are_caught() {
        let driver = DriverManifest {
            identity: "ubuntu/22.04/x86_64/5.15.0-91-generic".into(),
            driver_version: "1.2.0".into(),
            title: "kdriver.tar.xz".into(),
            layer_digest: format!("sha256:{}", "ab".repeat(32)),
            size: 3,
            vermagic: Some("5.15.0-91-generic SMP mod_unload modversions".into()),
            created: None,
            provenance: None,
            kabi: None,
        };
        let bytes = driver_manifest(&driver, "sha256:44136fa3").unwrap();
        assert_eq!(read_driver_manifest(&bytes).unwrap(), driver);
        let attested = DriverManifest {
            provenance: Some(Blob {
                digest: format!("sha256:{}", "ef".repeat(32)),
                size: 9000,
            }),
            ..driver.clone()
        };
        let with_bundle = driver_manifest(&attested, "sha256:44136fa3").unwrap();
        assert_eq!(read_driver_manifest(&with_bundle).unwrap(), attested);
        let recorded = DriverManifest {
            kabi: Some(Blob {
                digest: format!("sha256:{}", "12".repeat(32)),
                size: 700,
            }),
            ..attested.clone()
        };
        let with_record = driver_manifest(&recorded, "sha256:44136fa3").unwrap();
        assert_eq!(read_driver_manifest(&with_record).unwrap(), recorded);
        let mut twice: serde_json::Value = serde_json::from_slice(&with_record).unwrap();
        let layer = twice["layers"][2].clone();
        twice["layers"].as_array_mut().unwrap().push(layer);
        let err = read_driver_manifest(&serde_json::to_vec(&twice).unwrap()).unwrap_err();
        assert!(err.contains("two layers of a kABI record"), "{err}");
        twice["layers"][3]["mediaType"] = "application/octet-stream".into();
        let err = read_driver_manifest(&serde_json::to_vec(&twice).unwrap()).unwrap_err();
        assert!(
            err.contains("layer 4 is application/octet-stream, neither"),
            "{err}"
        );
        let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        m["annotations"][ANNOTATION_SHA256] = "cd".repeat(32).into();
        let err = read_driver_manifest(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(err.contains("differs from the layer"), "{err}");
        m["artifactType"] = "application/vnd.oci.image.config.v1+json".into();
        let err = read_driver_manifest(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(err.contains("not a kfleet driver"), "{err}");
    }
}
