//! Prometheus metrics: the series, and `GET /metrics`.
//!
//! Code records through the `metrics` facade (`metrics::counter!` …); the
//! recorder is `metrics-exporter-prometheus`, installed once per process by
//! [`install`] (the facade's recorder is process-wide: the one exception to
//! "no global state", and the reason the CLI installs it, not the library).
//! Without it every record is a no-op, so an embedder who does not want
//! metrics pays nothing. What can be read when scraped instead of counted
//! on the hot path (the credential cache, the invalidation log's lag, the
//! mail queue, the database pool) is set by [`AuthMd::render_metrics`] just
//! before rendering.
//!
//! | series | labels | what |
//! |---|---|---|
//! | `authmd_http_requests_total` | `route`, `method`, `status` | requests by route template |
//! | `authmd_http_request_duration_seconds` (histogram) | `route`, `method` | time to the response head |
//! | `authmd_registrations_total` | `flow`, `outcome` | `POST /agent/auth`: `created` or the refusal's code |
//! | `authmd_refusals_total` | `code` | every error answer, by protocol error code |
//! | `authmd_claims_total` | `step`, `outcome` | claim ceremony steps, `ok` or the error code |
//! | `authmd_revocations_total` | `kind` | `logout`, `self`, `operator`, `expiry` |
//! | `authmd_credential_cache_hits_total`, `…_misses_total` | | validations answered from the cache / the store |
//! | `authmd_credential_cache_entries` | `kind` (`record`, `absent`) | entries cached |
//! | `authmd_invalidation_log_lag_seconds` | | since the last successful read of the invalidation log |
//! | `authmd_jwks_fetches_total`, `authmd_jwks_fetch_failures_total` | `provider` | provider key fetches |
//! | `authmd_mail_queued_total` | | claim emails written to the outbox by this replica |
//! | `authmd_mail_sent_total`, `…_failed_total`, `…_retries_total` | | deliveries by this replica |
//! | `authmd_mail_queue_depth`, `authmd_mail_queue_age_seconds` | | the outbox's backlog (all replicas), age of its oldest message |
//! | `authmd_db_pool_connections` | `state` (`in_use`, `idle`, `max`) | PostgreSQL connection pool |
//! | `authmd_sqlite_batch_jobs` (histogram) | | writes per SQLite group commit |
//! | `authmd_sqlite_commit_seconds` (histogram) | | SQLite group commit time (with its fsync) |

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AuthMd;

/// Latency buckets (seconds): 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];
/// Jobs per SQLite commit.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// How often histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder (once;
/// later calls return the same handle) and starts its upkeep thread.
/// `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("authmd_sqlite_batch_jobs".into()),
                        &BATCH_BUCKETS,
                    )
                });
            let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics stays empty");
                    return None;
                }
            };
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("authmd-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

/// The installed recorder's handle, if [`install`] succeeded.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

/// Whether authmd's recorder is installed: without it, nothing is built
/// to be recorded (a label set costs allocations even for the no-op
/// recorder).
fn on() -> bool {
    handle().is_some()
}

/// Counts one registration: `outcome` is `created` or a refusal's code.
pub(crate) fn registration(flow: Option<&'static str>, outcome: &'static str) {
    if !on() {
        return;
    }
    metrics::counter!(
        "authmd_registrations_total",
        "flow" => flow.unwrap_or("unknown"),
        "outcome" => outcome
    )
    .increment(1);
}

/// Counts one error answer.
pub(crate) fn refusal(code: &'static str) {
    if !on() {
        return;
    }
    metrics::counter!("authmd_refusals_total", "code" => code).increment(1);
}

/// Counts one step of the claim ceremony: `outcome` is `ok` or an error code.
pub(crate) fn claim(step: &'static str, outcome: &'static str) {
    if !on() {
        return;
    }
    metrics::counter!("authmd_claims_total", "step" => step, "outcome" => outcome).increment(1);
}

/// Counts revocations of one kind (`n` registrations or credentials).
pub(crate) fn revocations(kind: &'static str, n: u64) {
    if n > 0 && on() {
        metrics::counter!("authmd_revocations_total", "kind" => kind).increment(n);
    }
}

/// Counts one fetch of a provider's JWKS.
pub(crate) fn jwks_fetch(provider: &str, ok: bool) {
    if !on() {
        return;
    }
    metrics::counter!("authmd_jwks_fetches_total", "provider" => provider.to_owned()).increment(1);
    if !ok {
        metrics::counter!("authmd_jwks_fetch_failures_total", "provider" => provider.to_owned())
            .increment(1);
    }
}

/// Counts one claim email written to the outbox.
pub(crate) fn mail_queued() {
    if on() {
        metrics::counter!("authmd_mail_queued_total").increment(1);
    }
}

/// Records one SQLite group commit.
pub(crate) fn sqlite_commit(jobs: usize, took: Duration) {
    if !on() {
        return;
    }
    metrics::histogram!("authmd_sqlite_batch_jobs").record(jobs as f64);
    metrics::histogram!("authmd_sqlite_commit_seconds").record(took.as_secs_f64());
}

/// The series of one route template: a histogram per method, a counter
/// per method and status. Looked up by the route's text without
/// allocating; registered with the recorder on first use.
#[derive(Default)]
struct RouteSeries {
    durations: Vec<(&'static str, metrics::Histogram)>,
    requests: Vec<(&'static str, &'static str, metrics::Counter)>,
}

/// Every route's series (a few dozen routes; a handful of methods and
/// statuses each).
static ROUTES: OnceLock<RwLock<HashMap<Box<str>, RouteSeries>>> = OnceLock::new();

/// Records one HTTP request: a read lock and two short scans on the hot
/// path, instead of building and hashing two label sets (four string
/// allocations) per request.
pub(crate) fn request(route: &str, method: &str, status: u16, took: Duration) {
    if !on() {
        return;
    }
    let method = method_label(method);
    let status = status_label(status);
    let routes = ROUTES.get_or_init(Default::default);
    let found = routes.read().ok().and_then(|map| {
        let series = map.get(route)?;
        let h = series.durations.iter().find(|(m, _)| *m == method)?;
        let c = series
            .requests
            .iter()
            .find(|(m, st, _)| *m == method && *st == status)?;
        h.1.record(took.as_secs_f64());
        c.2.increment(1);
        Some(())
    });
    if found.is_some() {
        return;
    }
    let Ok(mut map) = routes.write() else {
        return;
    };
    let series = map.entry(route.into()).or_default();
    if !series.durations.iter().any(|(m, _)| *m == method) {
        let h = metrics::histogram!(
            "authmd_http_request_duration_seconds",
            "route" => route.to_owned(),
            "method" => method
        );
        series.durations.push((method, h));
    }
    if !series
        .requests
        .iter()
        .any(|(m, st, _)| *m == method && *st == status)
    {
        let c = metrics::counter!(
            "authmd_http_requests_total",
            "route" => route.to_owned(),
            "method" => method,
            "status" => status
        );
        series.requests.push((method, status, c));
    }
    if let Some((_, h)) = series.durations.iter().find(|(m, _)| *m == method) {
        h.record(took.as_secs_f64());
    }
    if let Some((.., c)) = series
        .requests
        .iter()
        .find(|(m, st, _)| *m == method && *st == status)
    {
        c.increment(1);
    }
}

/// The method's label, static (any other method is `OTHER`: a client
/// cannot grow the series with made-up methods).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

fn status_label(status: u16) -> &'static str {
    // Every status authmd answers, without formatting one per request.
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

impl AuthMd {
    /// The Prometheus text exposition of this process's metrics, with the
    /// gauges read now (`None` when no recorder is installed).
    pub async fn render_metrics(&self) -> Option<String> {
        let handle = handle()?;
        let (hits, misses, records, absent) = self.validator().cache_stats();
        metrics::counter!("authmd_credential_cache_hits_total").absolute(hits);
        metrics::counter!("authmd_credential_cache_misses_total").absolute(misses);
        metrics::gauge!("authmd_credential_cache_entries", "kind" => "record").set(records as f64);
        metrics::gauge!("authmd_credential_cache_entries", "kind" => "absent").set(absent as f64);
        metrics::gauge!("authmd_invalidation_log_lag_seconds")
            .set(self.validator().invalidation_lag().as_secs_f64());
        let sent = self.outbox().stats();
        metrics::counter!("authmd_mail_sent_total").absolute(sent.sent.load(Ordering::Relaxed));
        metrics::counter!("authmd_mail_failed_total").absolute(sent.failed.load(Ordering::Relaxed));
        metrics::counter!("authmd_mail_retries_total")
            .absolute(sent.retries.load(Ordering::Relaxed));
        // The outbox is shared by the replicas: its backlog is the same on
        // each (a scrape that cannot read it leaves the last values).
        match self.store().mail_status().await {
            Ok(status) => {
                metrics::gauge!("authmd_mail_queue_depth").set(status.pending as f64);
                let age = status
                    .oldest
                    .map_or(Duration::ZERO, |t| t.until(crate::time::Timestamp::now()));
                metrics::gauge!("authmd_mail_queue_age_seconds").set(age.as_secs_f64());
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the mail outbox for metrics"),
        }
        if let Some(pool) = self.store().pool_status() {
            metrics::gauge!("authmd_db_pool_connections", "state" => "in_use")
                .set(pool.in_use as f64);
            metrics::gauge!("authmd_db_pool_connections", "state" => "idle").set(pool.idle as f64);
            metrics::gauge!("authmd_db_pool_connections", "state" => "max").set(pool.max as f64);
        }
        Some(handle.render())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_labels_are_the_status() {
        for s in [200u16, 401, 404, 429, 503] {
            assert_eq!(super::status_label(s), s.to_string());
        }
        assert_eq!(super::status_label(418), "4xx");
    }
}
