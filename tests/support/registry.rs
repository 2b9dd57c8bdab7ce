//! A throwaway OCI registry for tests: CNCF distribution (Debian's `docker-registry`) serving a
//! temporary directory on a free loopback port, optionally behind htpasswd (Basic) auth.
//! Stopped when dropped. `.ci/run` installs the package when a machine lacks it.

use std::process::{Child, Command, Stdio};

/// The login the authenticated registry accepts.
pub const USER: &str = "kfleet";
pub const PASSWORD: &str = "s3cret-pass";
/// `htpasswd -Bbn kfleet s3cret-pass`.
const HTPASSWD: &str = "kfleet:$2y$05$tGnSk4dn1mHAGhJJMt0n..UX0.XDQNN.D89F3YxfEGesUmzgF9FWK\n";

pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: bool) -> Self {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "no OCI registry: install the docker-registry package (apt-get install docker-registry; .ci/run does this)"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kfleet-tests\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kfleet-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let file = dir.path().join("config.yml");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            _dir: dir,
            port,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not listen on 127.0.0.1:{port} within 10 s");
    }

    /// `oci://127.0.0.1:PORT/REPOSITORY`.
    pub fn store(&self, repository: &str) -> String {
        format!("oci://127.0.0.1:{}/{repository}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPOSITORY:TAG`, as skopeo names it.
    pub fn docker(&self, repository: &str, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repository}:{tag}", self.port)
    }

    /// `http://127.0.0.1:PORT`, for a plain HTTP client.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Uploads one blob to `repository` (monolithic, with a plain HTTP client, not kfleet's) and
    /// returns its digest.
    pub fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!("sha256:{}", kfleet::fsio::hex(&sha2::Sha256::digest(bytes)));
        let http = reqwest::Client::new();
        let (status, headers, _) =
            send(http.post(format!("{}/v2/{repository}/blobs/uploads/", self.base())));
        assert_eq!(status, 202);
        let location = headers["location"].to_str().unwrap().to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let (status, _, body) = send(
            http.put(format!("{location}{sep}digest={digest}"))
                .body(bytes.to_vec()),
        );
        assert_eq!(status, 201, "{body}");
        digest
    }

    /// Stores `manifest` (an OCI image manifest) under `repository:tag` with a plain HTTP client.
    pub fn put_manifest(&self, repository: &str, tag: &str, manifest: &serde_json::Value) {
        let (status, _, body) = send(
            reqwest::Client::new()
                .put(format!("{}/v2/{repository}/manifests/{tag}", self.base()))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.to_string()),
        );
        assert_eq!(status, 201, "{body}");
    }
}

/// Sends a request made with a plain HTTP client (not kfleet's): its status, headers and body.
pub fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.text().await.unwrap())
        })
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token service in front of a registry, as GHCR and Docker Hub work: every request needs
/// `Authorization: Bearer TOKEN`; a 401 names the realm `/token`, which hands out a token for
/// `repository:NAME:pull` (or `pull,push`) to the Basic login [`USER`]/[`PASSWORD`]. Pulls take
/// either token, pushes only the push token. Requests are forwarded to the registry.
pub struct TokenProxy {
    pub port: u16,
    /// Tokens handed out.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

pub const PULL_TOKEN: &str = "pull-token-abcdef0123456789";
pub const PUSH_TOKEN: &str = "push-token-abcdef0123456789";

impl TokenProxy {
    pub fn start(registry: &Registry, repository: &'static str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let proxy = std::sync::Arc::new(Proxy {
            upstream: format!("http://127.0.0.1:{}", registry.port),
            port,
            repository,
            issued: issued.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            issued,
            _runtime: runtime,
        }
    }

    pub fn store(&self, repository: &str) -> String {
        format!("oci://127.0.0.1:{}/{repository}", self.port)
    }
}

struct Proxy {
    upstream: String,
    port: u16,
    repository: &'static str,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn forward(
    axum::extract::State(proxy): axum::extract::State<std::sync::Arc<Proxy>>,
    request: axum::http::Request<axum::body::Body>,
) -> axum::http::Response<axum::body::Body> {
    use axum::body::Body;
    use axum::http::Response;
    use base64::Engine as _;
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let auth = header("authorization");
    let repository = proxy.repository;
    if parts.uri.path() == "/token" {
        let login = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%2F", "/");
        let token = if query.contains(&format!("scope=repository:{repository}:pull,push")) {
            PUSH_TOKEN
        } else if query.contains(&format!("scope=repository:{repository}:pull")) {
            PULL_TOKEN
        } else {
            return Response::builder()
                .status(400)
                .body(Body::from("bad scope"))
                .unwrap();
        };
        if auth != login {
            return Response::builder().status(401).body(Body::empty()).unwrap();
        }
        proxy
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(format!("{{\"token\":\"{token}\"}}")))
            .unwrap();
    }
    let push = !matches!(parts.method.as_str(), "GET" | "HEAD");
    let allowed =
        auth == format!("Bearer {PUSH_TOKEN}") || (!push && auth == format!("Bearer {PULL_TOKEN}"));
    let here = format!("http://127.0.0.1:{}", proxy.port);
    if !allowed {
        let actions = if push { "pull,push" } else { "pull" };
        return Response::builder()
            .status(401)
            .header(
                "www-authenticate",
                format!(
                    "Bearer realm=\"{here}/token\",service=\"fixture\",scope=\"repository:{repository}:{actions}\""
                ),
            )
            .body(Body::empty())
            .unwrap();
    }
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let url = format!(
        "{}{}",
        proxy.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut request = reqwest::Client::new().request(method, url);
    for name in ["content-type", "accept"] {
        let value = header(name);
        if !value.is_empty() {
            request = request.header(name, value);
        }
    }
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let answer = request.body(body).send().await.unwrap();
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if matches!(name.as_str(), "content-length" | "transfer-encoding") {
            continue;
        }
        let value = value.to_str().unwrap_or("").replace(&proxy.upstream, &here);
        response = response.header(name.as_str(), value);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}
