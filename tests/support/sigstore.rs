//! A Sigstore of a test's own, made with `openssl`: a certificate authority standing in for
//! Fulcio, a transparency log's key, a timestamp authority, and the `trusted_root.json` naming
//! them; and real bundles signed with them, the way `actions/attest-build-provenance` makes
//! them (an in-toto statement in a DSSE envelope, a Rekor `dsse` entry with a signed entry
//! timestamp and an inclusion proof up to a signed checkpoint, an RFC 3161 timestamp).

use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;
use std::path::{Path, PathBuf};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

use crate::certs::openssl as run_openssl;

/// A new elliptic-curve key on `curve`, written to `out` in `dir`.
fn ec_key(dir: &Path, curve: &str, out: &str) {
    run_openssl(
        dir,
        &["ecparam", "-name", curve, "-genkey", "-noout", "-out", out],
    );
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// Who a signing certificate names: the workflow's repository, file and ref.
#[derive(Clone, Debug)]
pub struct Signer {
    pub repository: String,
    pub workflow: String,
    pub git_ref: String,
}

impl Signer {
    pub fn build_driver(repository: &str) -> Self {
        Self {
            repository: repository.into(),
            workflow: ".github/workflows/build-driver.yml".into(),
            git_ref: "refs/heads/main".into(),
        }
    }
}

/// How a bundle is dated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dated {
    /// A Rekor entry with its promise and inclusion proof (public repositories).
    Log,
    /// An RFC 3161 timestamp only (GitHub's own instance, private repositories).
    Timestamp,
}

pub struct TestSigstore {
    dir: tempfile::TempDir,
    /// `trusted_root.json` naming this CA, log and timestamp authority.
    pub trust_root: String,
    log_key_id: Vec<u8>,
}

impl TestSigstore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n[v3]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )
        .unwrap();
        for (name, subject) in [
            ("ca", "/O=kfleet test/CN=test fulcio"),
            ("rogue", "/O=rogue/CN=rogue fulcio"),
            ("tsa-ca", "/O=kfleet test/CN=test tsa root"),
        ] {
            ec_key(d, "secp384r1", &format!("{name}.key"));
            run_openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    subject,
                    "-days",
                    "30",
                    "-sha384",
                    "-extensions",
                    "v3",
                    "-config",
                    "ca.cnf",
                    "-outform",
                    "der",
                    "-out",
                    &format!("{name}.der"),
                ],
            );
        }
        // The timestamp authority's own certificate, signed by its root.
        ec_key(d, "prime256v1", "tsa.key");
        run_openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "tsa.key",
                "-subj",
                "/O=kfleet test/CN=test tsa",
                "-out",
                "tsa.csr",
            ],
        );
        std::fs::write(
            d.join("tsa.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\n",
        )
        .unwrap();
        run_openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "tsa-ca.der",
                "-CAform",
                "der",
                "-CAkey",
                "tsa-ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                "tsa.ext",
                "-out",
                "tsa.pem",
            ],
        );
        run_openssl(
            d,
            &[
                "x509", "-in", "tsa.pem", "-outform", "der", "-out", "tsa.der",
            ],
        );
        run_openssl(
            d,
            &[
                "x509",
                "-inform",
                "der",
                "-in",
                "tsa-ca.der",
                "-out",
                "tsa-ca.pem",
            ],
        );
        std::fs::write(
            d.join("tsa.cnf"),
            "[tsa]\ndefault_tsa = t\n[t]\nserial = ./tsaserial\ncrypto_device = builtin\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
        )
        .unwrap();
        std::fs::write(d.join("tsaserial"), "01\n").unwrap();
        // The transparency log's key.
        ec_key(d, "prime256v1", "log.key");
        run_openssl(
            d,
            &[
                "ec", "-in", "log.key", "-pubout", "-outform", "der", "-out", "log.pub",
            ],
        );
        let log_pub = read(d, "log.pub");
        let log_key_id = sha2::Sha256::digest(&log_pub).to_vec();
        let trust_root = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(&log_pub), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": b64(&log_key_id)}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "kfleet test", "commonName": "test fulcio"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": b64(&read(d, "ca.der"))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [],
            "timestampAuthorities": [{
                "subject": {"organization": "kfleet test", "commonName": "test tsa"},
                "uri": "https://timestamp.test",
                "certChain": {"certificates": [{"rawBytes": b64(&read(d, "tsa.der"))}, {"rawBytes": b64(&read(d, "tsa-ca.der"))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }]
        })
        .to_string();
        Self {
            dir,
            trust_root,
            log_key_id,
        }
    }

    /// Writes the trust root to `path`.
    pub fn write_trust_root(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.trust_root).unwrap();
        path.to_path_buf()
    }

    /// A bundle for an artifact `name` with sha256 `digest`, signed by `signer` with a
    /// certificate from this CA (or, `rogue`, from a CA no trust root names).
    pub fn bundle(
        &self,
        name: &str,
        digest: &str,
        signer: &Signer,
        dated: Dated,
        rogue: bool,
    ) -> Vec<u8> {
        let d = self.dir.path();
        let ca = if rogue { "rogue" } else { "ca" };
        ec_key(d, "prime256v1", "leaf.key");
        run_openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "leaf.key",
                "-subj",
                "/O=sigstore.dev",
                "-out",
                "leaf.csr",
            ],
        );
        let server = "https://github.com";
        std::fs::write(
            d.join("leaf.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,URI:{server}/{repo}/{wf}@{r}\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:https://token.actions.githubusercontent.com\n1.3.6.1.4.1.57264.1.12=ASN1:UTF8String:{server}/{repo}\n1.3.6.1.4.1.57264.1.14=ASN1:UTF8String:{r}\n",
                repo = signer.repository,
                wf = signer.workflow,
                r = signer.git_ref
            ),
        )
        .unwrap();
        run_openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                &format!("{ca}.der"),
                "-CAform",
                "der",
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-sha384",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        );
        run_openssl(
            d,
            &[
                "x509", "-in", "leaf.pem", "-outform", "der", "-out", "leaf.der",
            ],
        );
        let leaf = read(d, "leaf.der");
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": name, "digest": {"sha256": digest}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1"}}
        })
        .to_string();
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        std::fs::write(d.join("pae"), &pae).unwrap();
        run_openssl(
            d,
            &["dgst", "-sha256", "-sign", "leaf.key", "-out", "sig", "pae"],
        );
        let sig = read(d, "sig");
        let mut material = json!({"certificate": {"rawBytes": b64(&leaf)}, "tlogEntries": []});
        match dated {
            Dated::Log => {
                material["tlogEntries"] =
                    json!([self.log_entry(statement.as_bytes(), &sig, &read(d, "leaf.pem"))])
            }
            Dated::Timestamp => {
                run_openssl(
                    d,
                    &[
                        "ts", "-query", "-data", "sig", "-sha256", "-cert", "-out", "q.tsq",
                    ],
                );
                run_openssl(
                    d,
                    &[
                        "ts",
                        "-reply",
                        "-config",
                        "tsa.cnf",
                        "-queryfile",
                        "q.tsq",
                        "-signer",
                        "tsa.pem",
                        "-inkey",
                        "tsa.key",
                        "-chain",
                        "tsa-ca.pem",
                        "-out",
                        "r.tsr",
                    ],
                );
                material["timestampVerificationData"] =
                    json!({"rfc3161Timestamps": [{"signedTimestamp": b64(&read(d, "r.tsr"))}]});
            }
        }
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material,
            "dsseEnvelope": {"payload": b64(statement.as_bytes()), "payloadType": payload_type, "signatures": [{"sig": b64(&sig), "keyid": ""}]}
        }))
        .unwrap()
    }

    /// The log's `dsse` entry for this signature: body, signed entry timestamp, and an
    /// inclusion proof in a tree of one leaf with a checkpoint the log signed.
    fn log_entry(&self, payload: &[u8], sig: &[u8], leaf_pem: &[u8]) -> serde_json::Value {
        let d = self.dir.path();
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "payloadHash": {"algorithm": "sha256", "value": kfleet::fsio::hex(&sha2::Sha256::digest(payload))},
                "signatures": [{"signature": b64(sig), "verifier": b64(leaf_pem)}]
            }
        })
        .to_string();
        let body_b64 = b64(body.as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let log_id = kfleet::fsio::hex(&self.log_key_id);
        let canonical = format!(
            r#"{{"body":"{body_b64}","integratedTime":{now},"logID":"{log_id}","logIndex":7}}"#
        );
        std::fs::write(d.join("set"), canonical).unwrap();
        run_openssl(
            d,
            &[
                "dgst", "-sha256", "-sign", "log.key", "-out", "set.sig", "set",
            ],
        );
        let mut leaf = sha2::Sha256::new();
        leaf.update([0u8]);
        leaf.update(body.as_bytes());
        let root = leaf.finalize().to_vec();
        let note = format!("rekor.test - 1\n1\n{}\n", b64(&root));
        std::fs::write(d.join("note"), &note).unwrap();
        run_openssl(
            d,
            &[
                "dgst", "-sha256", "-sign", "log.key", "-out", "note.sig", "note",
            ],
        );
        let mut hinted = self.log_key_id[..4].to_vec();
        hinted.extend(read(d, "note.sig"));
        json!({
            "logIndex": "7",
            "logId": {"keyId": b64(&self.log_key_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": now.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": b64(&read(d, "set.sig"))},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": b64(&root),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": format!("{note}\n\u{2014} rekor.test {}\n", b64(&hinted))}
            },
            "canonicalizedBody": body_b64
        })
    }
}
