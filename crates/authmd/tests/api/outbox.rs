//! The durable mail queue (issue 17 item 4, and the SMTP fault of item 6):
//! a claim email is committed with its attempt, survives the process, is
//! delivered once by one of several replicas, and its body does not
//! outlive its link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use authmd::mail::{Email, MailError, Mailer, MemoryMailer};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb, free_port};

const NO_LIMITS: &str = "[rate_limits]\nenabled = false";

/// A mailer whose server is down.
#[derive(Debug)]
struct Down;

#[async_trait]
impl Mailer for Down {
    async fn send(&self, _: &Email) -> Result<(), MailError> {
        Err(MailError::Delivery("connection refused".into()))
    }
}

async fn start_claim(t: &TestApp, email: &str) {
    let reg = t.register_anonymous().await;
    let r = t
        .post_json(
            "/agent/auth/claim",
            &json!({"claim_token": reg["claim_token"], "email": email}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends! {
    /// The message is in the database when the claim answers; the process
    /// that wrote it goes away before any delivery succeeds; the next one
    /// on the database delivers it.
    async fn a_claim_email_survives_the_process_that_committed_it(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let first = TestApp::with_mailer(Arc::clone(&db), NO_LIMITS, Arc::new(Down), MemoryMailer::new()).await;
        start_claim(&first, "survivor@example.com").await;
        let status = first.app.store().mail_status().await.expect("status");
        assert_eq!(status.pending, 1, "committed with the attempt");
        // Its first try failed and is recorded (a process killed in the
        // middle of a try leaves the message to the next one after
        // `outbox::LEASE` instead).
        let stats = &first.app.outbox().stats().retries;
        until("a failed try", Duration::from_secs(10), || {
            stats.load(std::sync::atomic::Ordering::Relaxed) >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);

        let second = TestApp::on(Arc::clone(&db), NO_LIMITS).await;
        let mailer = second.mailer.clone();
        until("delivered by the next process", Duration::from_secs(10), || {
            mailer.sent().iter().any(|m| m.to == "survivor@example.com")
        })
        .await;
        let mails = second.mails(1).await;
        assert!(mails[0].text.contains("cvt_"), "the link is in the message");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(second.app.store().mail_status().await.expect("status").pending, 0);
        if db.url.starts_with("postgres") {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT status, body_text IS NULL, attempts FROM mail_outbox", &[])
                .await
                .expect("row");
            assert_eq!(row.get::<_, String>(0), "sent");
            assert!(row.get::<_, bool>(1), "the body is gone once sent");
            assert!(row.get::<_, i64>(2) >= 2, "tried by the first process, then the second");
        }
    }
}

both_backends! {
    /// Two replicas deliver from one outbox: every message exactly once.
    async fn replicas_deliver_each_message_once(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let memory = MemoryMailer::new();
        let a = TestApp::with_mailer(Arc::clone(&db), NO_LIMITS, Arc::new(memory.clone()), memory.clone()).await;
        let b = TestApp::with_mailer(Arc::clone(&db), NO_LIMITS, Arc::new(memory.clone()), memory.clone()).await;
        let n = 24;
        for i in 0..n {
            let t = if i % 2 == 0 { &a } else { &b };
            start_claim(t, &format!("user{i}@example.com")).await;
        }
        until("all delivered", Duration::from_secs(20), || memory.sent().len() >= n).await;
        // Both look again (each polls every second): nothing more is sent.
        tokio::time::sleep(authmd::outbox::POLL * 2 + Duration::from_millis(300)).await;
        let sent = memory.sent();
        let mut to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
        to.sort_unstable();
        to.dedup();
        assert_eq!((sent.len(), to.len()), (n, n), "each message once");
    }
}

both_backends! {
    /// A message that cannot be delivered before its link expires is given
    /// up by the sweep, and its body (the link) is not kept.
    async fn an_undeliverable_message_is_dropped_with_its_link(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let t = TestApp::with_mailer(
            Arc::clone(&db),
            &format!("{NO_LIMITS}\n[ttl]\nclaim_link = \"1s\""),
            Arc::new(Down),
            MemoryMailer::new(),
        )
        .await;
        start_claim(&t, "never@example.com").await;
        // (Its one try may already have given it up: the next would come
        // after the link's expiry.)
        tokio::time::sleep(Duration::from_millis(1200)).await;
        t.app.sweep(authmd::Timestamp::now()).await.expect("sweep");
        assert_eq!(t.app.store().mail_status().await.expect("status").pending, 0);
        if db.url.starts_with("postgres") {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT status, body_text IS NULL AND body_html IS NULL FROM mail_outbox", &[])
                .await
                .expect("row");
            assert_eq!(row.get::<_, String>(0), "failed");
            assert!(row.get::<_, bool>(1), "no body past the link's expiry");
        }
        // Sent and failed rows go after the retention period.
        let later = authmd::Timestamp::now().plus(authmd::outbox::DONE_RETENTION + Duration::from_secs(60));
        assert_eq!(t.app.store().purge_mail(later, later.minus(authmd::outbox::DONE_RETENTION)).await.expect("purge"), 1);
    }
}

/// SMTP down while a claim is started (the real SMTP server, mailcrab, not
/// running): the claim succeeds; authmd restarts while the server is still
/// down; the server comes back; the message is delivered, once.
#[tokio::test]
async fn smtp_down_across_a_restart_delivers_once_it_returns() {
    let port = free_port();
    let smtp = || {
        Arc::new(
            authmd::mail::SmtpMailer::new(
                &format!("smtp://127.0.0.1:{port}"),
                None,
                "authmd@example.com",
            )
            .expect("smtp mailer"),
        )
    };
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let first = TestApp::with_mailer(Arc::clone(&db), NO_LIMITS, smtp(), MemoryMailer::new()).await;
    start_claim(&first, "patient@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        first
            .app
            .outbox()
            .stats()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(first);

    let second =
        TestApp::with_mailer(Arc::clone(&db), NO_LIMITS, smtp(), MemoryMailer::new()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = mailcrab::development_mail_server([127, 0, 0, 1], port).await;
    let message = tokio::time::timeout(Duration::from_secs(20), server.rx.recv())
        .await
        .expect("delivered once the server is back")
        .expect("message");
    let message = serde_json::to_value(&message).expect("JSON");
    assert!(
        message["to"].to_string().contains("patient@example.com"),
        "{message}"
    );
    // Not again.
    let again = tokio::time::timeout(Duration::from_secs(3), server.rx.recv()).await;
    assert!(again.is_err(), "delivered twice");
    assert_eq!(
        second
            .app
            .store()
            .mail_status()
            .await
            .expect("status")
            .pending,
        0
    );
    server.token.cancel();
}
