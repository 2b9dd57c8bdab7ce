//! The objects the sandbox answers with, in GitHub's documented shapes (the REST description's
//! `release`, `release-asset`, `workflow-run`, `workflow`, `job`, `minimal-repository`,
//! `simple-user` and `rate-limit-overview`, every required field present and typed as there),
//! so a client generated from that description reads them as it reads GitHub's.

use super::*;
use crate::forge::Job;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// `release-asset`, serialised as it stands (no `Value` tree: a listing holds thousands).
#[derive(serde::Serialize)]
pub(super) struct AssetShape<'a> {
    url: String,
    browser_download_url: Option<&'a str>,
    id: u64,
    node_id: String,
    name: &'a str,
    label: Option<&'a str>,
    state: &'static str,
    content_type: &'static str,
    size: u64,
    digest: Option<&'a str>,
    download_count: u64,
    created_at: String,
    updated_at: String,
    uploader: &'a Value,
}

/// `release`, its assets included.
#[derive(serde::Serialize)]
pub(super) struct ReleaseShape<'a> {
    url: String,
    html_url: String,
    assets_url: String,
    upload_url: String,
    tarball_url: String,
    zipball_url: String,
    id: u64,
    node_id: String,
    tag_name: &'a str,
    target_commitish: &'static str,
    name: String,
    body: Option<&'a str>,
    draft: bool,
    prerelease: bool,
    immutable: bool,
    created_at: String,
    published_at: Option<String>,
    updated_at: String,
    author: &'a Value,
    assets: Vec<AssetShape<'a>>,
}

/// The repository a response is about, and where the sandbox is.
pub(super) struct Repo<'a> {
    pub(super) base: &'a str,
    pub(super) owner: &'a str,
    pub(super) name: &'a str,
}

/// GitHub's timestamps: seconds, `Z`.
pub(super) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A GraphQL node id: opaque to clients, stable per object.
fn node_id(prefix: &str, id: u64) -> String {
    format!("{prefix}_kwDO{id:08X}")
}

impl Repo<'_> {
    fn api(&self) -> String {
        format!("{}/repos/{}/{}", self.base, self.owner, self.name)
    }

    fn html(&self) -> String {
        format!("{}/{}/{}", self.base, self.owner, self.name)
    }

    /// The account that owns the repository and triggers its runs.
    pub(super) fn user(&self) -> Value {
        let login = self.owner;
        let url = format!("{}/users/{login}", self.base);
        json!({
            "login": login,
            "id": 1,
            "node_id": node_id("U", 1),
            "avatar_url": format!("{}/avatars/{login}", self.base),
            "gravatar_id": "",
            "url": url,
            "html_url": format!("{}/{login}", self.base),
            "followers_url": format!("{url}/followers"),
            "following_url": format!("{url}/following{{/other_user}}"),
            "gists_url": format!("{url}/gists{{/gist_id}}"),
            "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{url}/subscriptions"),
            "organizations_url": format!("{url}/orgs"),
            "repos_url": format!("{url}/repos"),
            "events_url": format!("{url}/events{{/privacy}}"),
            "received_events_url": format!("{url}/received_events"),
            "type": "User",
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    /// `minimal-repository`: the repository as runs embed it.
    pub(super) fn repository(&self) -> Value {
        let api = self.api();
        let mut repo = json!({
            "id": 1,
            "node_id": node_id("R", 1),
            "name": self.name,
            "full_name": format!("{}/{}", self.owner, self.name),
            "owner": self.user(),
            "private": true,
            "html_url": self.html(),
            "description": null,
            "fork": false,
            "url": api,
            "default_branch": "main",
            "visibility": "private",
        });
        // The URL templates GitHub lists for every repository: field, then path under it.
        const TEMPLATES: [(&str, &str); 36] = [
            ("archive_url", "/{archive_format}{/ref}"),
            ("assignees_url", "/assignees{/user}"),
            ("blobs_url", "/git/blobs{/sha}"),
            ("branches_url", "/branches{/branch}"),
            ("collaborators_url", "/collaborators{/collaborator}"),
            ("comments_url", "/comments{/number}"),
            ("commits_url", "/commits{/sha}"),
            ("compare_url", "/compare/{base}...{head}"),
            ("contents_url", "/contents/{+path}"),
            ("contributors_url", "/contributors"),
            ("deployments_url", "/deployments"),
            ("downloads_url", "/downloads"),
            ("events_url", "/events"),
            ("forks_url", "/forks"),
            ("git_commits_url", "/git/commits{/sha}"),
            ("git_refs_url", "/git/refs{/sha}"),
            ("git_tags_url", "/git/tags{/sha}"),
            ("hooks_url", "/hooks"),
            ("issue_comment_url", "/issues/comments{/number}"),
            ("issue_events_url", "/issues/events{/number}"),
            ("issues_url", "/issues{/number}"),
            ("keys_url", "/keys{/key_id}"),
            ("labels_url", "/labels{/name}"),
            ("languages_url", "/languages"),
            ("merges_url", "/merges"),
            ("milestones_url", "/milestones{/number}"),
            (
                "notifications_url",
                "/notifications{?since,all,participating}",
            ),
            ("pulls_url", "/pulls{/number}"),
            ("releases_url", "/releases{/id}"),
            ("stargazers_url", "/stargazers"),
            ("statuses_url", "/statuses/{sha}"),
            ("subscribers_url", "/subscribers"),
            ("subscription_url", "/subscription"),
            ("tags_url", "/tags"),
            ("teams_url", "/teams"),
            ("trees_url", "/git/trees{/sha}"),
        ];
        for (field, path) in TEMPLATES {
            repo[field] = Value::String(format!("{api}{path}"));
        }
        repo
    }

    /// `full-repository`: the repository as `GET /repos/{owner}/{repo}` answers.
    pub(super) fn full_repository(&self, since: DateTime<Utc>) -> Value {
        let mut repo = self.repository();
        let host = self.base.split("://").nth(1).unwrap_or(self.base);
        let path = format!("{}/{}", self.owner, self.name);
        let extra = json!({
            "clone_url": format!("{}.git", self.html()),
            "git_url": format!("git://{host}/{path}.git"),
            "ssh_url": format!("git@{host}:{path}.git"),
            "svn_url": self.html(),
            "mirror_url": null,
            "homepage": null,
            "language": "C",
            "license": null,
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "open_issues": 0,
            "open_issues_count": 0,
            "network_count": 0,
            "subscribers_count": 0,
            "size": 0,
            "has_issues": true,
            "has_projects": false,
            "has_wiki": false,
            "has_pages": false,
            "has_discussions": false,
            "archived": false,
            "disabled": false,
            "pushed_at": time(since),
            "created_at": time(since),
            "updated_at": time(since),
        });
        if let (Some(repo), Some(extra)) = (repo.as_object_mut(), extra.as_object()) {
            repo.extend(extra.clone());
        }
        repo
    }

    /// `release-asset`, uploaded by `uploader` ([`Repo::user`], built once per answer: a
    /// listing holds thousands of assets).
    pub(super) fn asset<'a>(
        &self,
        asset: &'a ReleaseAsset,
        release_time: DateTime<Utc>,
        uploader: &'a Value,
    ) -> AssetShape<'a> {
        let id = asset.id.unwrap_or_default();
        let content_type = if asset.name.ends_with(".tar.xz") {
            "application/x-xz"
        } else if asset.name.ends_with(".sha256") || asset.name.ends_with(".json") {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        let updated = time(asset.updated_at.unwrap_or(release_time));
        AssetShape {
            url: format!("{}/releases/assets/{id}", self.api()),
            browser_download_url: asset.browser_download_url.as_deref(),
            id,
            node_id: node_id("RA", id),
            name: &asset.name,
            label: None,
            state: "uploaded",
            content_type,
            size: asset.size.unwrap_or_default(),
            digest: asset.digest.as_deref(),
            download_count: 0,
            created_at: updated.clone(),
            updated_at: updated,
            uploader,
        }
    }

    /// `release`, its assets included, written by `author` ([`Repo::user`]). `fallback_time`
    /// stands in for a listing file's release that has no dates (GitHub's always has them).
    pub(super) fn release<'a>(
        &self,
        release: &'a Release,
        fallback_time: DateTime<Utc>,
        author: &'a Value,
    ) -> ReleaseShape<'a> {
        let id = release.id.unwrap_or_default();
        let created = release
            .created_at
            .or(release.published_at)
            .unwrap_or(fallback_time);
        let url = format!("{}/releases/{id}", self.api());
        let tag = &release.tag_name;
        let published = if release.draft {
            None
        } else {
            Some(time(release.published_at.unwrap_or(created)))
        };
        ReleaseShape {
            html_url: release
                .html_url
                .clone()
                .unwrap_or_else(|| format!("{}/releases/tag/{tag}", self.html())),
            assets_url: format!("{url}/assets"),
            upload_url: format!("{url}/assets{{?name,label}}"),
            tarball_url: format!("{}/tarball/{tag}", self.api()),
            zipball_url: format!("{}/zipball/{tag}", self.api()),
            url,
            id,
            node_id: node_id("RE", id),
            tag_name: tag,
            target_commitish: "main",
            name: release.name.clone().unwrap_or_else(|| tag.clone()),
            body: None,
            draft: release.draft,
            prerelease: release.prerelease,
            immutable: release.immutable,
            created_at: time(created),
            published_at: published,
            updated_at: time(created),
            author,
            assets: release
                .assets
                .iter()
                .map(|a| self.asset(a, created, author))
                .collect(),
        }
    }

    /// `workflow`: one of the repository's workflow files.
    pub(super) fn workflow(&self, id: u64, file: &str, since: DateTime<Utc>) -> Value {
        let path = format!(".github/workflows/{file}");
        json!({
            "id": id,
            "node_id": node_id("W", id),
            "name": workflow_name(file),
            "path": path,
            "state": "active",
            "created_at": time(since),
            "updated_at": time(since),
            "url": format!("{}/actions/workflows/{id}", self.api()),
            "html_url": format!("{}/blob/main/{path}", self.html()),
            "badge_url": format!("{}/workflows/{}/badge.svg", self.html(), workflow_name(file)),
        })
    }

    /// `workflow-run`.
    pub(super) fn run(&self, sim: &SimRun, number: u64, workflow_id: u64) -> Value {
        let run = &sim.run;
        let id = run.id;
        let url = format!("{}/actions/runs/{id}", self.api());
        let created = run.created_at.map(time);
        let sha = head_sha(&sim.git_ref);
        json!({
            "id": id,
            "name": workflow_name(&sim.workflow),
            "node_id": node_id("WFR", id),
            "check_suite_id": id,
            "check_suite_node_id": node_id("CS", id),
            "head_branch": sim.git_ref,
            "head_sha": sha,
            "path": format!(".github/workflows/{}", sim.workflow),
            "run_number": number,
            "run_attempt": 1,
            "referenced_workflows": [],
            "event": run.event,
            "status": run.status.map(RunStatus::as_str),
            "conclusion": run.conclusion.map(Conclusion::as_str),
            "workflow_id": workflow_id,
            "url": url,
            "html_url": run.html_url,
            "pull_requests": [],
            "created_at": created,
            "updated_at": run.updated_at.map(time),
            "actor": self.user(),
            "triggering_actor": self.user(),
            "run_started_at": created,
            "jobs_url": format!("{url}/jobs"),
            "logs_url": format!("{url}/logs"),
            "check_suite_url": format!("{}/check-suites/{id}", self.api()),
            "artifacts_url": format!("{url}/artifacts"),
            "cancel_url": format!("{url}/cancel"),
            "rerun_url": format!("{url}/rerun"),
            "previous_attempt_url": null,
            "workflow_url": format!("{}/actions/workflows/{workflow_id}", self.api()),
            "head_commit": {
                "id": sha,
                "tree_id": head_sha(&format!("{}^{{tree}}", sim.git_ref)),
                "message": "kfleet sandbox",
                "timestamp": created,
                "author": {"name": self.owner, "email": format!("{}@users.noreply.localhost", self.owner)},
                "committer": {"name": "GitHub", "email": "noreply@localhost"},
            },
            "repository": self.repository(),
            "head_repository": self.repository(),
            "head_repository_id": 1,
            "display_title": run.display_title,
        })
    }

    /// `job`, with its steps.
    pub(super) fn job(&self, job: &Job, sim: &SimRun, created: DateTime<Utc>) -> Value {
        let id = job.id;
        let steps: Vec<Value> = job
            .steps
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "status": s.status.map(RunStatus::as_str),
                    "conclusion": s.conclusion.map(Conclusion::as_str),
                    "number": s.number,
                    "started_at": s.started_at.map(time),
                    "completed_at": s.completed_at.map(time),
                })
            })
            .collect();
        let local = sim.local.is_some();
        json!({
            "id": id,
            "run_id": job.run_id,
            "run_url": format!("{}/actions/runs/{}", self.api(), job.run_id),
            "run_attempt": 1,
            "node_id": node_id("CR", id),
            "head_sha": head_sha(&sim.git_ref),
            "url": format!("{}/actions/jobs/{id}", self.api()),
            "html_url": job.html_url,
            "status": job.status.map(RunStatus::as_str),
            "conclusion": job.conclusion.map(Conclusion::as_str),
            "created_at": time(created),
            "started_at": time(job.started_at.unwrap_or(created)),
            "completed_at": job.completed_at.map(time),
            "name": job.name,
            "steps": steps,
            "check_run_url": format!("{}/check-runs/{id}", self.api()),
            "labels": ["ubuntu-24.04"],
            "runner_id": job.started_at.map(|_| 1),
            "runner_name": job.started_at.map(|_| if local { "kfleet local runner" } else { "kfleet sandbox" }),
            "runner_group_id": job.started_at.map(|_| 1),
            "runner_group_name": job.started_at.map(|_| "Default"),
            "workflow_name": workflow_name(&sim.workflow),
            "head_branch": sim.git_ref,
        })
    }
}

/// A workflow's display name: its file name without the extension (the sandbox does not read
/// the file's `name:`).
fn workflow_name(file: &str) -> &str {
    file.strip_suffix(".yml")
        .or_else(|| file.strip_suffix(".yaml"))
        .unwrap_or(file)
}

/// The commit a ref points at, stable per ref: 40 hex digits, as a git sha is.
fn head_sha(git_ref: &str) -> String {
    api::hex_sha256(git_ref.as_bytes())[..40].to_string()
}

/// `rate-limit`: one of `/rate_limit`'s resources.
fn limit(limit: u64, used: u64, reset: i64) -> Value {
    json!({"limit": limit, "used": used, "remaining": limit.saturating_sub(used), "reset": reset})
}

/// `rate-limit-overview`, the core budget as the `x-ratelimit-*` headers count it.
pub(super) fn rate_limit(used: u64, reset: i64) -> Value {
    let core = limit(api::HOURLY_BUDGET, used, reset);
    json!({
        "resources": {
            "core": core,
            "search": limit(30, 0, reset),
            "graphql": limit(5000, 0, reset),
            "integration_manifest": limit(5000, 0, reset),
            "code_scanning_upload": limit(1000, 0, reset),
            "actions_runner_registration": limit(10000, 0, reset),
        },
        "rate": core,
    })
}
