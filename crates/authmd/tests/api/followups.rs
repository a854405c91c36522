//! Work that follows a commit (issue 15, item 4): once a store transaction
//! has committed, the agent gets its committed result. A failing
//! invalidation poll or a mailer that cannot take the message is logged
//! and retried, never turned into a 500 (a retry would then meet `409
//! previously_claimed` and the new credential would be lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use authmd::audit::{AuditEvent, AuditRecord, EventFilter};
use authmd::credential::CredentialRecord;
use authmd::mail::{Email, MailError, Mailer, MemoryMailer};
use authmd::rate_limit::{RateLimit, RateLimited};
use authmd::store::*;
use authmd::token::SecretHash;
use authmd::{AuthMd, Timestamp};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb, config, form_request, link_token, page_code};

/// A store that fails `invalidations_after` while `fail` is set, and
/// otherwise does what the real one does.
#[derive(Debug)]
pub struct FlakyLog {
    pub inner: Arc<dyn Store>,
    pub fail: AtomicBool,
    /// Credential lookups asked of the store.
    pub finds: std::sync::atomic::AtomicUsize,
}

impl FlakyLog {
    pub fn new(inner: Arc<dyn Store>) -> Arc<FlakyLog> {
        Arc::new(FlakyLog {
            inner,
            fail: AtomicBool::new(false),
            finds: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Store for FlakyLog {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn take_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMail>, StoreError> {
        self.inner.take_mail(now, lease_until, limit).await
    }
    async fn mail_done(
        &self,
        id: &str,
        now: Timestamp,
        outcome: MailOutcome,
    ) -> Result<(), StoreError> {
        self.inner.mail_done(id, now, outcome).await
    }
    async fn purge_mail(&self, now: Timestamp, done_before: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge_mail(now, done_before).await
    }
    async fn mail_status(&self) -> Result<MailStatus, StoreError> {
        self.inner.mail_status().await
    }
    async fn create_anonymous_registration(
        &self,
        reg: NewAnonymousRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.inner.create_anonymous_registration(reg, limits).await
    }
    async fn register_agent(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<AgentRegistered, StoreError> {
        self.inner.register_agent(reg, limits).await
    }
    async fn jti_used(&self, key: [u8; 16]) -> Result<bool, StoreError> {
        self.inner.jti_used(key).await
    }
    async fn count_request(
        &self,
        limits: Vec<RateLimit>,
        now: Timestamp,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.inner.count_request(limits, now).await
    }
    async fn revoke_credential(&self, r: SelfRevocation) -> Result<SelfRevoked, StoreError> {
        self.inner.revoke_credential(r).await
    }
    async fn signing_keys(&self, now: Timestamp) -> Result<Vec<SigningKeyRow>, StoreError> {
        self.inner.signing_keys(now).await
    }
    async fn add_first_signing_key(&self, key: SigningKeyRow) -> Result<bool, StoreError> {
        self.inner.add_first_signing_key(key).await
    }
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRow,
        retire_until: Timestamp,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner
            .rotate_signing_key(key, retire_until, event)
            .await
    }
    async fn block(&self, b: BlockChange) -> Result<bool, StoreError> {
        self.inner.block(b).await
    }
    async fn unblock(&self, b: BlockChange) -> Result<bool, StoreError> {
        self.inner.unblock(b).await
    }
    async fn list_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        self.inner.list_blocks().await
    }
    async fn blocked(&self, keys: [Option<String>; 3]) -> Result<bool, StoreError> {
        self.inner.blocked(keys).await
    }
    async fn create_email_registration(
        &self,
        reg: NewEmailRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.inner.create_email_registration(reg, limits).await
    }
    async fn start_claim(
        &self,
        req: ClaimRequest,
        limits: Vec<RateLimit>,
    ) -> Result<ClaimStarted, StoreError> {
        self.inner.start_claim(req, limits).await
    }
    async fn attempt(
        &self,
        attempt_id: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptView>, StoreError> {
        self.inner.attempt(attempt_id, now).await
    }
    async fn mint_otp(
        &self,
        attempt_id: &str,
        proof: authmd::store::AttemptProof,
        otp: SecretHash,
        otp_expires_at: Timestamp,
        now: Timestamp,
        meta: authmd::audit::RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        self.inner
            .mint_otp(attempt_id, proof, otp, otp_expires_at, now, meta)
            .await
    }
    async fn deny_attempt(
        &self,
        attempt_id: &str,
        proof: authmd::store::AttemptProof,
        now: Timestamp,
        meta: authmd::audit::RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        self.inner.deny_attempt(attempt_id, proof, now, meta).await
    }
    async fn complete_claim(&self, req: CompleteClaim) -> Result<Completed, StoreError> {
        self.inner.complete_claim(req).await
    }
    async fn secret_key(&self) -> Result<Vec<u8>, StoreError> {
        self.inner.secret_key().await
    }
    async fn record_event(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.inner.record_event(event).await
    }
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.inner.record_events(events).await
    }
    async fn purge_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_audit(before, limit).await
    }
    async fn find_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.inner.find_credential(id).await
    }
    async fn invalidations_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Invalidation>, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Database(
                "injected: the log cannot be read".into(),
            ));
        }
        self.inner.invalidations_after(seq, limit).await
    }
    async fn latest_invalidation(&self) -> Result<i64, StoreError> {
        self.inner.latest_invalidation().await
    }
    async fn purged_invalidations(&self) -> Result<i64, StoreError> {
        self.inner.purged_invalidations().await
    }
    async fn expire_registrations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<SweepReport, StoreError> {
        self.inner.expire_registrations(now, limit).await
    }
    async fn purge(
        &self,
        now: Timestamp,
        keep_invalidations_since: Timestamp,
    ) -> Result<u64, StoreError> {
        self.inner.purge(now, keep_invalidations_since).await
    }
    async fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.stats().await
    }
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.list_events(filter).await
    }
    async fn revoke_subject(&self, r: SubjectRevocation) -> Result<SubjectRevoked, StoreError> {
        self.inner.revoke_subject(r).await
    }
    async fn revoke(&self, r: OperatorRevocation) -> Result<RevokeReport, StoreError> {
        self.inner.revoke(r).await
    }
    async fn list_registrations(
        &self,
        filter: &RegistrationFilter,
        now: Timestamp,
    ) -> Result<Vec<RegistrationSummary>, StoreError> {
        self.inner.list_registrations(filter, now).await
    }
    async fn registration_credentials(
        &self,
        registration_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        self.inner.registration_credentials(registration_id).await
    }
    async fn list_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>, StoreError> {
        self.inner.list_users(filter).await
    }
    async fn list_delegations(
        &self,
        filter: &DelegationFilter,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        self.inner.list_delegations(filter).await
    }
    async fn tail_position(&self) -> Result<TailCursor, StoreError> {
        self.inner.tail_position().await
    }
    async fn tail_events(
        &self,
        after: TailCursor,
        filter: &EventFilter,
    ) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError> {
        self.inner.tail_events(after, filter).await
    }
}

/// An app over a [`FlakyLog`] store.
async fn flaky(backend: Backend) -> (TestApp, Arc<FlakyLog>) {
    flaky_on(Arc::new(TestDb::new(backend).await), "").await
}

/// An app (a replica) on `db` over a [`FlakyLog`] store.
pub async fn flaky_on(db: Arc<TestDb>, toml: &str) -> (TestApp, Arc<FlakyLog>) {
    let store = FlakyLog::new(db.store().await);
    let mailer = MemoryMailer::new();
    let app = AuthMd::new(config(toml), store.clone(), Arc::new(mailer.clone()))
        .await
        .expect("build app");
    let router = authmd::http::router(app.clone());
    (
        TestApp {
            app,
            router,
            mailer,
            db,
        },
        store,
    )
}

both_backends! {
    /// The claim commits, then the invalidation poll fails: the agent still
    /// gets 200 and its upgraded key (before: a 500, and the retry a 409).
    /// The upgrade is honoured on this replica at once even so: the cache
    /// is not trusted until a poll succeeds again.
    async fn a_claim_that_committed_answers_200_when_the_invalidation_poll_fails(backend: Backend) {
        let (t, store) = flaky(backend).await;
        let reg = t.register_anonymous().await;
        let key = reg["credential"].as_str().unwrap_or_default().to_owned();
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        // Cached with the pre-claim scopes.
        assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);
        let write = || crate::support::request(axum::http::Method::POST, "/api/notes", Some(&key), None);
        assert_eq!(t.send(write()).await.status, 403, "pre-claim: no api.write");

        let r = t.post_json("/agent/auth/claim", &json!({"claim_token": token, "email": "ada@example.com"}).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let link = link_token(&t.mails(1).await[0].text);
        let page = t.send(form_request("/agent/auth/claim/view", &format!("token={link}&action=show"))).await;
        let code = page_code(&page.text()).unwrap_or_else(|| panic!("no code: {}", page.text()));

        store.fail.store(true, Ordering::SeqCst);
        let r = t.post_json("/agent/auth/claim/complete", &json!({"claim_token": token, "otp": code}).to_string()).await;
        assert_eq!(r.status, 200, "a committed claim must not answer {}: {}", r.status, r.text());
        assert_eq!(r.json()["status"], "claimed");
        // The scope change is visible on this replica although the log
        // cannot be read.
        let r = t.send(write()).await;
        assert_ne!(r.status, 403, "the cached pre-claim record was used: {}", r.text());
        store.fail.store(false, Ordering::SeqCst);
        let again = t.post_json("/agent/auth/claim/complete", &json!({"claim_token": token, "otp": code}).to_string()).await;
        assert_eq!(again.code(), "previously_claimed");
    }
}

/// A mailer that holds every message until released.
#[derive(Debug, Clone)]
struct Held {
    open: Arc<tokio::sync::Semaphore>,
    inner: MemoryMailer,
}

#[async_trait]
impl Mailer for Held {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let _permit = self
            .open
            .acquire()
            .await
            .map_err(|_| MailError::Delivery("closed".into()))?;
        self.inner.send(email).await
    }
}

both_backends! {
    /// The registration commits, and the mail cannot go out (the mailer
    /// holds every message): the agent gets its registration (200), and the
    /// message goes out from the outbox once the mailer takes it. The same
    /// for a claim started on an anonymous registration.
    async fn a_stuck_mailer_does_not_fail_a_committed_registration_or_claim(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let memory = MemoryMailer::new();
        let held = Held { open: Arc::new(tokio::sync::Semaphore::new(0)), inner: memory.clone() };
        let t = TestApp::with_mailer(db, "", Arc::new(held.clone()), memory).await;
        let anonymous = t.register_anonymous().await;

        let r = t.post_json("/agent/auth", &json!({
            "type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "late@example.com", "requested_credential_type": "api_key",
        }).to_string()).await;
        assert_eq!(r.status, 200, "a committed registration must not answer {}: {}", r.status, r.text());
        assert!(r.json()["claim_token"].as_str().is_some());

        let r = t.post_json("/agent/auth/claim", &json!({
            "claim_token": anonymous["claim_token"], "email": "claimer@example.com",
        }).to_string()).await;
        assert_eq!(r.status, 200, "a committed claim start must not answer {}: {}", r.status, r.text());

        // The mailer takes messages again: both are delivered.
        held.open.add_permits(1 << 20);
        let start = std::time::Instant::now();
        loop {
            let sent = t.mailer.sent();
            let to = |a: &str| sent.iter().any(|m| m.to == a);
            if to("late@example.com") && to("claimer@example.com") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "not delivered ({} sent)", sent.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
