//! Every environment variable kfleet reads, named once, and the one way it reads them: a
//! variable set to an empty string counts as unset. Flags that fall back to a variable name it
//! from here (`#[arg(env = ...)]`); docs/operations.md lists them for operators.
//!
//! The variables a build job is *given* (the workflow's `GITHUB_*` and `RUNNER_*` environment,
//! written by `localrun`) are not read by kfleet and are not listed here.

/// The config file (`--config`).
pub const KFLEET_CONFIG: &str = "KFLEET_CONFIG";
/// How notices print (`--log-format`).
pub const KFLEET_LOG_FORMAT: &str = "KFLEET_LOG_FORMAT";
/// Repository of the driver's releases (`--repo`).
pub const KFLEET_REPO: &str = "KFLEET_REPO";
/// GitHub API base URL (`--api-url`).
pub const KFLEET_API_URL: &str = "KFLEET_API_URL";
/// GitHub App id and private key file (`--github-app-id`, `--github-app-key`).
pub const KFLEET_GITHUB_APP_ID: &str = "KFLEET_GITHUB_APP_ID";
pub const KFLEET_GITHUB_APP_KEY: &str = "KFLEET_GITHUB_APP_KEY";
/// The artifact store (`--store oci://...`).
pub const KFLEET_STORE: &str = "KFLEET_STORE";
/// Registry credentials for the OCI store; both or neither.
pub const KFLEET_REGISTRY_USERNAME: &str = "KFLEET_REGISTRY_USERNAME";
pub const KFLEET_REGISTRY_PASSWORD: &str = "KFLEET_REGISTRY_PASSWORD";
/// Asset name template (`--asset-template`).
pub const KFLEET_ASSET_TEMPLATE: &str = "KFLEET_ASSET_TEMPLATE";
/// The driver version (`--driver-version`).
pub const KFLEET_DRIVER_VERSION: &str = "KFLEET_DRIVER_VERSION";
/// The module's name (`--module`).
pub const KFLEET_MODULE: &str = "KFLEET_MODULE";
/// The header chain's sources file (`--sources`).
pub const KFLEET_HEADER_SOURCES: &str = "KFLEET_HEADER_SOURCES";
/// Ubuntu Pro's login for the header chain: a token, or an apt auth.conf's entries; or the file
/// that holds either (`/etc/apt/auth.conf.d/90ubuntu-advantage` of an attached machine).
pub const KFLEET_UBUNTU_PRO_TOKEN: &str = "KFLEET_UBUNTU_PRO_TOKEN";
pub const KFLEET_UBUNTU_PRO_TOKEN_FILE: &str = "KFLEET_UBUNTU_PRO_TOKEN_FILE";
/// Red Hat's CDN for the header chain: the entitlement certificate and its key (PEM files, as a
/// subscribed system keeps them in `/etc/pki/entitlement/`; one file may hold both), and the
/// CDN's CA where it is not in the system's roots (`/etc/rhsm/ca/redhat-uep.pem`).
pub const KFLEET_RHEL_ENTITLEMENT_CERT: &str = "KFLEET_RHEL_ENTITLEMENT_CERT";
pub const KFLEET_RHEL_ENTITLEMENT_KEY: &str = "KFLEET_RHEL_ENTITLEMENT_KEY";
pub const KFLEET_RHEL_CDN_CA: &str = "KFLEET_RHEL_CDN_CA";
/// `kfleet rhel register`: the organisation and its activation key (or the file holding it),
/// and Red Hat's subscription service with its CA where the system's roots lack it.
pub const KFLEET_RHEL_ORG: &str = "KFLEET_RHEL_ORG";
pub const KFLEET_RHEL_ACTIVATION_KEY: &str = "KFLEET_RHEL_ACTIVATION_KEY";
pub const KFLEET_RHEL_ACTIVATION_KEY_FILE: &str = "KFLEET_RHEL_ACTIVATION_KEY_FILE";
pub const KFLEET_RHSM_URL: &str = "KFLEET_RHSM_URL";
pub const KFLEET_RHSM_CA: &str = "KFLEET_RHSM_CA";
/// Credentials the build workflow holds, comma-separated (config `build_credentials`).
pub const KFLEET_BUILD_CREDENTIALS: &str = "KFLEET_BUILD_CREDENTIALS";
/// SUSE's registered repositories for the header chain: the file `kfleet suse register` wrote.
pub const KFLEET_SUSE_REGISTRATION: &str = "KFLEET_SUSE_REGISTRATION";
/// `kfleet suse register`: the organisation's registration code (or the file holding it), and
/// the registration service (SUSE Customer Center, or an RMT server).
pub const KFLEET_SUSE_REGCODE: &str = "KFLEET_SUSE_REGCODE";
pub const KFLEET_SUSE_REGCODE_FILE: &str = "KFLEET_SUSE_REGCODE_FILE";
pub const KFLEET_SCC_URL: &str = "KFLEET_SCC_URL";
/// Image digest pins (`--image-digests`).
pub const KFLEET_IMAGE_DIGESTS: &str = "KFLEET_IMAGE_DIGESTS";
/// The state directory (`--state-dir`).
pub const KFLEET_STATE_DIR: &str = "KFLEET_STATE_DIR";
/// The shared build store, `sqlite://` or `postgres://` (`--state-url`).
pub const KFLEET_STATE_URL: &str = "KFLEET_STATE_URL";
/// The build service a node asks (`--service`).
pub const KFLEET_SERVICE: &str = "KFLEET_SERVICE";
/// The token a node presents to the build service (`ensure`, unless `--token-file`).
pub const KFLEET_SERVICE_TOKEN: &str = "KFLEET_SERVICE_TOKEN";
/// The tokens `serve` accepts, comma-separated (besides `--client-tokens`).
pub const KFLEET_CLIENT_TOKENS: &str = "KFLEET_CLIENT_TOKENS";
/// The webhook secret `serve` checks deliveries with (unless `--webhook-secret`).
pub const KFLEET_WEBHOOK_SECRET: &str = "KFLEET_WEBHOOK_SECRET";
/// The token a started sandbox requires, so other commands can read it.
pub const KFLEET_SANDBOX_TOKEN: &str = "KFLEET_SANDBOX_TOKEN";
/// The `depmod` to run (`--depmod`).
pub const KFLEET_DEPMOD: &str = "KFLEET_DEPMOD";
/// GitHub tokens, in this order (then `gh auth token`).
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
pub const GH_TOKEN: &str = "GH_TOKEN";
/// Inside a job: the repository and API the job runs against.
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
/// Inside a pod: the node it runs on (the downward API) and the API server.
pub const NODE_NAME: &str = "NODE_NAME";
pub const KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const KUBERNETES_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
/// Where config and state live by default.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
pub const HOME: &str = "HOME";
/// The dashboard's browser (`o` opens a run), and whether it draws in color.
pub const BROWSER: &str = "BROWSER";
pub const NO_COLOR: &str = "NO_COLOR";

/// The variable's value, `None` when it is unset, empty or only whitespace, or not UTF-8.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The variable as a path, `None` when it is unset or empty.
pub fn path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// A secret from the variable `var`, else from the file the variable `file_var` names; `None`
/// when neither is set.
pub fn secret(var: &str, file_var: &str) -> Result<Option<String>, String> {
    if let Some(value) = self::var(var) {
        return Ok(Some(value));
    }
    let Some(file) = path(file_var) else {
        return Ok(None);
    };
    std::fs::read_to_string(&file)
        .map(Some)
        .map_err(|e| format!("cannot read {file_var} {}: {e}", file.display()))
}

/// A secret that is a name (an activation key, a registration code: letters, digits, `-`, `_`
/// and `.`, at most 255) from `var` or the file `file_var` names; what is wrong is told
/// without quoting it.
pub fn secret_name(var: &str, file_var: &str, what: &str) -> Result<String, String> {
    let text = secret(var, file_var)?
        .ok_or_else(|| format!("no {what}: set {var}, or {file_var} to a file holding it"))?;
    let name = text.trim();
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{var}: not a valid {what} (letters, digits, -, _ and . only)"
        ));
    }
    Ok(name.to_string())
}

/// Whether the variable is set to something (`NO_COLOR=1`).
pub fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}
