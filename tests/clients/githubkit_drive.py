"""Drives the kfleet sandbox with githubkit, a GitHub client whose models are generated from
GitHub's published REST description: every answer is parsed into those models (pydantic checks
each required field and type), and a summary of what was read is printed as JSON for the Rust
test to check.

    python githubkit_drive.py BASE_URL OWNER REPO dispatch KERNEL...   -> run ids
    python githubkit_drive.py BASE_URL OWNER REPO read                 -> what the client read

The token comes from GITHUB_TOKEN.
"""

import io
import json
import os
import sys
import zipfile

from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed


def client(base):
    # The body check is off only because the description's dispatch body does not list
    # `return_run_details` yet; every answer is still parsed into the generated models.
    return GitHub(
        TokenAuthStrategy(os.environ["GITHUB_TOKEN"]),
        base_url=base,
        auto_retry=False,
        rest_api_validate_body=False,
    )


def dispatch(gh, owner, repo, kernels):
    runs = []
    for kernel in kernels:
        answer = gh.rest.actions.create_workflow_dispatch(
            owner,
            repo,
            "build-driver.yml",
            data={
                "ref": "main",
                "inputs": {
                    "distribution": "debian",
                    "distro_version": "12",
                    "architecture": "x86_64",
                    "kernel_version": kernel,
                    "driver_version": "v0.6.0-rc.1",
                    "request_id": f"githubkit-{kernel}",
                },
                "return_run_details": True,
            },
        )
        details = answer.parsed_data
        runs.append(
            {
                "status": answer.status_code,
                "id": details.workflow_run_id,
                "run_url": details.run_url,
                "html_url": details.html_url,
            }
        )
    return runs


def read(gh, owner, repo):
    out = {}
    releases = list(
        gh.rest.paginate(gh.rest.repos.list_releases, owner=owner, repo=repo, per_page=2)
    )
    out["releases"] = [r.tag_name for r in releases]
    first = releases[0]
    by_tag = gh.rest.repos.get_release_by_tag(owner, repo, first.tag_name).parsed_data
    by_id = gh.rest.repos.get_release(owner, repo, first.id).parsed_data
    out["by_tag_id"] = by_tag.id
    out["by_id_tag"] = by_id.tag_name
    out["latest"] = gh.rest.repos.get_latest_release(owner, repo).parsed_data.tag_name
    assets = list(
        gh.rest.paginate(
            gh.rest.repos.list_release_assets,
            owner=owner,
            repo=repo,
            release_id=first.id,
            per_page=3,
        )
    )
    out["assets"] = len(assets)
    out["asset_digests"] = sorted({a.digest.split(":")[0] for a in assets if a.digest})
    out["asset_states"] = sorted({a.state for a in assets})

    workflows = gh.rest.actions.list_repo_workflows(owner, repo).parsed_data
    out["workflows"] = [w.path for w in workflows.workflows]
    by_number = gh.rest.actions.get_workflow(owner, repo, workflows.workflows[0].id).parsed_data
    out["workflow_by_id"] = by_number.path

    runs = gh.rest.actions.list_workflow_runs(owner, repo, "build-driver.yml").parsed_data
    repo_runs = gh.rest.actions.list_workflow_runs_for_repo(
        owner, repo, status="completed"
    ).parsed_data
    out["runs"] = runs.total_count
    out["repo_runs_completed"] = repo_runs.total_count
    out["run_repository"] = runs.workflow_runs[0].repository.full_name
    described = []
    for listed in runs.workflow_runs:
        run = gh.rest.actions.get_workflow_run(owner, repo, listed.id).parsed_data
        jobs = gh.rest.actions.list_jobs_for_workflow_run(owner, repo, run.id).parsed_data
        job = gh.rest.actions.get_job_for_workflow_run(owner, repo, jobs.jobs[0].id).parsed_data
        log = gh.rest.actions.download_job_logs_for_workflow_run(owner, repo, job.id)
        archive = gh.rest.actions.download_workflow_run_logs(owner, repo, run.id)
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            names = z.namelist()
            archived = z.read(names[0]).decode()
        described.append(
            {
                "id": run.id,
                "title": run.display_title,
                "status": run.status,
                "conclusion": run.conclusion,
                "workflow_id": run.workflow_id,
                "head_branch": run.head_branch,
                "steps": [[s.name, s.conclusion] for s in job.steps],
                "log_has_error": "##[error]" in log.text,
                "archive": names,
                "archive_equals_log": archived == log.text,
            }
        )
    out["described"] = described
    try:
        gh.rest.actions.cancel_workflow_run(owner, repo, described[0]["id"])
        out["cancel_completed"] = 202
    except RequestFailed as refused:
        out["cancel_completed"] = refused.response.status_code
    limit = gh.rest.rate_limit.get()
    out["rate_core_used"] = limit.parsed_data.resources.core.used
    out["rate_header_used"] = int(limit.headers["x-ratelimit-used"])
    out["repository"] = gh.rest.repos.get(owner, repo).parsed_data.full_name
    return out


def main():
    base, owner, repo, phase, *rest = sys.argv[1:]
    with client(base) as gh:
        if phase == "dispatch":
            print(json.dumps(dispatch(gh, owner, repo, rest)))
        else:
            print(json.dumps(read(gh, owner, repo)))


if __name__ == "__main__":
    main()
