//! The sandbox's release-asset API, as the build job uses it: a release by tag, its assets page
//! by page, uploads (kept in memory, within a total) and deletes.

use super::api::{
    PageQuery, conditional_json, github_error, json_body, page_links, repo_of, same_repo,
    unprocessable,
};
use super::*;
use axum::extract::DefaultBodyLimit;
use axum::routing::delete;

/// Bytes of uploads the sandbox keeps, all assets together.
pub(super) const MAX_UPLOADED: usize = 512 << 20;

pub(super) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/repos/{owner}/{repo}/releases/tags/{tag}", get(by_tag))
        .route("/repos/{owner}/{repo}/releases/latest", get(latest))
        .route("/repos/{owner}/{repo}/releases/{id}", get(by_id))
        .route(
            "/repos/{owner}/{repo}/releases/{id}/assets",
            get(list_assets)
                .post(upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOADED)),
        )
        .route(
            "/repos/{owner}/{repo}/releases/assets/{id}",
            delete(delete_asset),
        )
}

fn missing() -> Response {
    github_error(StatusCode::NOT_FOUND, "Not Found")
}

async fn by_tag(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    one_release(&state, (&owner, &repo), &headers, |r| r.tag_name == tag)
}

async fn by_id(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    one_release(&state, (&owner, &repo), &headers, |r| r.id == Some(id))
}

/// The newest release that is neither a draft nor a prerelease, as GitHub's `latest` is.
async fn latest(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    one_release(&state, (&owner, &repo), &headers, |r| {
        !r.draft && !r.prerelease
    })
}

/// The first release (newest first) that `pick` takes, in GitHub's shape.
fn one_release(
    state: &SandboxState,
    (owner, repo): (&str, &str),
    headers: &HeaderMap,
    pick: impl Fn(&Release) -> bool,
) -> Response {
    if !same_repo(state, owner, repo) {
        return missing();
    }
    state.advance();
    let body = {
        let releases = state.releases.locked();
        let Some(release) = releases.iter().find(|r| pick(r)) else {
            return missing();
        };
        let shapes = repo_of(state, owner, repo);
        let author = shapes.user();
        json_body(&shapes.release(release, state.started_at, &author))
    };
    conditional_json(headers, body, None)
}

async fn list_assets(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return missing();
    }
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    state.advance();
    let (body, total) = {
        let releases = state.releases.locked();
        let Some(release) = releases.iter().find(|r| r.id == Some(id)) else {
            return missing();
        };
        let shapes = repo_of(&state, &owner, &repo);
        let uploader = shapes.user();
        let created = release.created_at.unwrap_or(state.started_at);
        let slice: Vec<shapes::AssetShape<'_>> = release
            .assets
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|a| shapes.asset(a, created, &uploader))
            .collect();
        (serde_json::to_string(&slice), release.assets.len())
    };
    let path = format!(
        "{}/repos/{owner}/{repo}/releases/{id}/assets",
        state.base_url
    );
    conditional_json(&headers, body, page_links(&path, per_page, page, total))
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// Adds an asset; a name the release already has is GitHub's 422 `already_exists`.
async fn upload(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    Query(q): Query<UploadQuery>,
    body: bytes::Bytes,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return missing();
    }
    let Some(name) = q.name.filter(|n| plain_name(n)) else {
        return unprocessable("Validation Failed: name must be a plain file name");
    };
    // Lock order, as everywhere: releases, then uploads.
    let mut releases = state.releases.locked();
    let mut uploads = state.uploads.locked();
    let kept: usize = uploads.values().map(Vec::len).sum();
    if kept + body.len() > MAX_UPLOADED {
        return github_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the sandbox keeps at most 512 MiB of uploads",
        );
    }
    let Some(release) = releases.iter_mut().find(|r| r.id == Some(id)) else {
        return missing();
    };
    if release.immutable {
        return unprocessable("Cannot upload assets to an immutable release.");
    }
    if release.assets.iter().any(|a| a.name == name) {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: already_exists",
        );
    }
    let asset = ReleaseAsset {
        id: Some(state.next_asset_id.fetch_add(1, Ordering::SeqCst)),
        size: Some(body.len() as u64),
        browser_download_url: Some(format!(
            "{}/{}/releases/download/{}/{name}",
            state.base_url, state.repo, release.tag_name
        )),
        digest: Some(format!("sha256:{}", api::hex_sha256(&body))),
        updated_at: Some(state.clock.now()),
        name: name.clone(),
    };
    release.assets.push(asset);
    uploads.insert(name, body.to_vec());
    let shapes = repo_of(&state, &owner, &repo);
    let uploader = shapes.user();
    match release.assets.last() {
        Some(asset) => (
            StatusCode::CREATED,
            Json(shapes.asset(asset, state.started_at, &uploader)),
        )
            .into_response(),
        None => missing(),
    }
}

async fn delete_asset(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return missing();
    }
    let mut releases = state.releases.locked();
    let mut uploads = state.uploads.locked();
    for release in releases.iter_mut() {
        if let Some(at) = release.assets.iter().position(|a| a.id == Some(id)) {
            let gone = release.assets.remove(at);
            uploads.remove(&gone.name);
            return StatusCode::NO_CONTENT.into_response();
        }
    }
    missing()
}
