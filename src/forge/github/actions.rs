//! The Actions and release calls on top of the client: run listings (every page, in a time
//! window), one run, cancel, find a run by its request id, and dispatch with run details.

use super::*;
use crate::text::Cause;

/// What a cancel request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Requested,
    /// GitHub answered 409: the run had already finished.
    AlreadyFinished,
}

/// The most of a job log read to find its tail.
const MAX_JOB_LOG: u64 = 64 << 20;
/// The tail of a job log kept.
const LOG_TAIL_BYTES: usize = 64 << 10;

impl GithubClient {
    fn workflow_url(&self, workflow: &str, tail: &str) -> String {
        self.repo_url(&format!("/actions/workflows/{workflow}{tail}"))
    }

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, ForgeError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        let r = self
            .send(&Call {
                url,
                headers,
                body: None,
            })
            .await?;
        Self::check_status(url, &r)?;
        serde_json::from_slice(&r.body).map_err(|e| ForgeError::Malformed {
            url: url.to_string(),
            source: Cause::of(e),
        })
    }

    /// Runs of `workflow` started by `workflow_dispatch`, newest first, optionally by status and
    /// created at or after `since` (rounded down to a 10-minute grid, so polls within it repeat
    /// the same URLs and an unchanged listing is all 304s). Every page is read, following `Link`
    /// headers; without `since` at most [`MAX_RUN_PAGES`] pages.
    pub async fn list_runs(
        &self,
        workflow: &str,
        status: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<WorkflowRun>, ForgeError> {
        let mut first = self.workflow_url(workflow, "/runs?event=workflow_dispatch&per_page=100");
        if let Some(status) = status {
            first.push_str(&format!("&status={status}"));
        }
        if let Some(since) = since {
            let grid = since.timestamp() - since.timestamp().rem_euclid(600);
            let grid = chrono::DateTime::from_timestamp(grid, 0).unwrap_or(since);
            first.push_str(&format!(
                "&created=%3E%3D{}",
                grid.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        let mut runs = Vec::new();
        let mut url = Some(first);
        let mut pages = 0;
        while let Some(page_url) = url.take() {
            // Conditional: an unchanged run listing (the dashboard polls it) is a 304.
            let (body, headers, _) = self.get_cached_in_memory(&page_url).await?;
            pages += 1;
            let page: RunList =
                serde_json::from_slice(&body).map_err(|e| ForgeError::Malformed {
                    url: page_url.clone(),
                    source: Cause::of(e),
                })?;
            let empty = page.workflow_runs.is_empty();
            runs.extend(page.workflow_runs);
            url = next_link(&headers).filter(|_| !empty);
            if pages >= MAX_RUN_PAGES {
                if url.is_some() && since.is_some() {
                    return Err(ForgeError::Malformed {
                        url: page_url,
                        source: Cause::from(format!(
                            "more than {MAX_RUN_PAGES} pages of runs inside the deadline window; the Link headers loop"
                        )),
                    });
                }
                break;
            }
        }
        Ok(runs)
    }

    pub async fn get_run(&self, run_id: u64) -> Result<WorkflowRun, ForgeError> {
        self.get_json(&self.repo_url(&format!("/actions/runs/{run_id}")))
            .await
    }

    /// The jobs of a run with their steps, every page (a run has one job, or one per kernel of a
    /// batch: at most [`MAX_RUN_PAGES`] pages of 100).
    pub async fn list_jobs(&self, run_id: u64) -> Result<Vec<Job>, ForgeError> {
        let mut jobs = Vec::new();
        let mut url = Some(self.repo_url(&format!("/actions/runs/{run_id}/jobs?per_page=100")));
        let mut pages = 0;
        while let Some(page_url) = url.take() {
            let (body, headers, _) = self.get_cached_in_memory(&page_url).await?;
            pages += 1;
            let page: JobList =
                serde_json::from_slice(&body).map_err(|e| ForgeError::Malformed {
                    url: page_url.clone(),
                    source: Cause::of(e),
                })?;
            let empty = page.jobs.is_empty();
            jobs.extend(page.jobs);
            url = next_link(&headers).filter(|_| !empty && pages < MAX_RUN_PAGES);
        }
        Ok(jobs)
    }

    /// The last `lines` lines of job `job_id`'s log. GitHub answers the log call with a redirect
    /// to a short-lived URL on another host: it is followed without the token (only over https,
    /// or to loopback), and the log is streamed with only its tail kept (at most
    /// [`MAX_JOB_LOG`] bytes read).
    pub async fn job_log_tail(&self, job_id: u64, lines: usize) -> Result<String, ForgeError> {
        let url = self.repo_url(&format!("/actions/jobs/{job_id}/logs"));
        let r = self
            .send(&Call {
                url: &url,
                headers: HeaderMap::new(),
                body: None,
            })
            .await?;
        let body = if r.status.is_redirection() {
            let location = r
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ForgeError::Malformed {
                    url: url.clone(),
                    source: Cause::from(format!("{} without a Location", r.status.as_u16())),
                })?;
            crate::net::check_transport(location, false).map_err(|e| ForgeError::Malformed {
                url: url.clone(),
                source: Cause::from(format!("the log is at {location}, which is refused: {e}")),
            })?;
            self.read_log_tail(location).await?
        } else {
            Self::check_status(&url, &r)?;
            r.body.to_vec()
        };
        let text = String::from_utf8_lossy(&body);
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Streams `url` (no credentials), keeping the last [`LOG_TAIL_BYTES`] of at most
    /// [`MAX_JOB_LOG`] bytes.
    async fn read_log_tail(&self, url: &str) -> Result<Vec<u8>, ForgeError> {
        let err = |message: String| ForgeError::Http {
            url: url.to_string(),
            status: 0,
            source: Cause::from(message),
        };
        let failed = |e: reqwest::Error| ForgeError::Http {
            url: url.to_string(),
            status: 0,
            source: Cause::of(e),
        };
        let http = crate::net::http_client(self.policy.timeout, crate::net::Redirects::None, None)
            .map_err(err)?;
        let mut response = http.get(url).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(ForgeError::Http {
                url: url.to_string(),
                status: response.status().as_u16(),
                source: Cause::from("the job log could not be read"),
            });
        }
        let mut tail: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut read = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            read += chunk.len() as u64;
            if read > MAX_JOB_LOG {
                break;
            }
            tail.extend(chunk.iter());
            let over = tail.len().saturating_sub(LOG_TAIL_BYTES);
            tail.drain(..over);
        }
        Ok(tail.into())
    }

    /// Cancels a run; a run that already finished is reported, not an error.
    pub async fn cancel_run(&self, run_id: u64) -> Result<CancelOutcome, ForgeError> {
        let url = self.repo_url(&format!("/actions/runs/{run_id}/cancel"));
        let body = serde_json::json!({});
        let r = self
            .send(&Call {
                url: &url,
                headers: HeaderMap::new(),
                body: Some(&body),
            })
            .await?;
        if r.status == StatusCode::CONFLICT {
            return Ok(CancelOutcome::AlreadyFinished);
        }
        Self::check_status(&url, &r)?;
        Ok(CancelOutcome::Requested)
    }

    /// The run whose title carries `request_id`, looked for a few times (a run appears in the
    /// listing a moment after the dispatch is accepted).
    pub async fn find_run_by_request(
        &self,
        workflow: &str,
        request_id: &str,
        attempts: u32,
    ) -> Result<Option<WorkflowRun>, ForgeError> {
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.policy.run_lookup_interval).await;
            }
            let since = chrono::Utc::now() - chrono::Duration::hours(1);
            let runs = self.list_runs(workflow, None, Some(since)).await?;
            if let Some(run) = runs
                .into_iter()
                .find(|r| r.request_id() == Some(request_id))
            {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// Dispatches `workflow` at `git_ref` and returns the run it started. Asks for the run id
    /// (`return_run_details`); a server that rejects the field gets the plain dispatch and the run
    /// is found by its `request_id`. An ambiguous failure (5xx, dropped connection) is resent only
    /// after the run listing shows the request did not start a run, so a dispatch never doubles.
    pub async fn dispatch(
        &self,
        workflow: &str,
        git_ref: &str,
        inputs: &serde_json::Map<String, serde_json::Value>,
        request_id: &str,
        guard: &dyn crate::forge::DispatchGuard,
    ) -> Result<WorkflowRun, ForgeError> {
        let url = self.workflow_url(workflow, "/dispatches");
        let mut with_details = true;
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Every send, the first and each resend, only while the caller holds the right to.
            let held = guard.hold().await.map_err(|why| ForgeError::ClaimLost {
                url: url.clone(),
                why,
            })?;
            if attempts == 1
                && held.taken_over
                && let Some(run) = self
                    .find_run_by_request(
                        workflow,
                        request_id,
                        self.policy.run_lookup_attempts.min(3),
                    )
                    .await?
            {
                // The previous holder's dispatch went out: its run is this claim's.
                return Ok(run);
            }
            let mut body = serde_json::json!({"ref": git_ref, "inputs": inputs});
            if with_details {
                body["return_run_details"] = serde_json::Value::Bool(true);
            }
            let call = Call {
                url: &url,
                headers: HeaderMap::new(),
                body: Some(&body),
            };
            // One send is bounded, so a claim taken over after its lease and this long has seen
            // its holder's send finish.
            let bound = crate::forge::DISPATCH_SEND_TIMEOUT.min(self.policy.timeout);
            let sent = match tokio::time::timeout(bound, self.attempt(&call)).await {
                Ok(sent) => sent,
                Err(_) => Err(format!("no answer within {}s", bound.as_secs_f32())),
            };
            let last = match sent {
                Ok(r) if r.status == StatusCode::OK => {
                    let id = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v.get("workflow_run_id").and_then(|i| i.as_u64()));
                    return match id {
                        Some(id) => self.get_run(id).await,
                        None => self.expect_run(workflow, request_id, &url).await,
                    };
                }
                Ok(r) if r.status == StatusCode::NO_CONTENT => {
                    return self.expect_run(workflow, request_id, &url).await;
                }
                Ok(r)
                    if with_details
                        && matches!(r.status.as_u16(), 400 | 422)
                        && github_message(&r.body).contains("return_run_details") =>
                {
                    (self.notify)(&format!(
                        "{url}: the server does not return run details; dispatching without and finding the run by request id {request_id}"
                    ));
                    with_details = false;
                    continue;
                }
                Ok(r) if is_rate_limited(&r) => {
                    let wait = rate_limit_wait(&r.headers);
                    if wait > self.policy.max_rate_limit_wait {
                        return Err(ForgeError::RateLimitTooLong {
                            url,
                            wait_secs: wait.as_secs(),
                            max_secs: self.policy.max_rate_limit_wait.as_secs(),
                        });
                    }
                    self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                    notify_wait(&self.notify, &url, &r, wait);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(r) if r.status.is_server_error() => {
                    format!("{} {}", r.status, github_message(&r.body))
                }
                Ok(r) => {
                    Self::check_status(&url, &r)?;
                    return Err(ForgeError::Http {
                        url,
                        status: r.status.as_u16(),
                        source: Cause::from(github_message(&r.body)),
                    });
                }
                Err(transport) => transport,
            };
            // The request may have started a run before failing: look (as long as a run takes to
            // appear) before resending.
            if let Some(run) = self
                .find_run_by_request(workflow, request_id, self.policy.run_lookup_attempts)
                .await?
            {
                return Ok(run);
            }
            self.pause(
                &mut backoff,
                &url,
                attempts,
                last,
                "no run started, dispatching again",
            )
            .await?;
        }
    }

    async fn expect_run(
        &self,
        workflow: &str,
        request_id: &str,
        url: &str,
    ) -> Result<WorkflowRun, ForgeError> {
        self.find_run_by_request(workflow, request_id, self.policy.run_lookup_attempts)
            .await?
            .ok_or_else(|| ForgeError::Malformed {
                url: url.to_string(),
                source: Cause::from(format!(
                    "the dispatch was accepted but no run titled with request id {request_id} appeared; does the workflow set run-name from its request_id input?"
                )),
            })
    }
}
