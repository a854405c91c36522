//! The claim ceremony with a real SMTP server on loopback (mailcrab): the
//! test takes the link from the delivered message, like a user would.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb, form_request, free_port, link_token, page_code};

/// Waits for the next message at the SMTP server.
async fn next_message(rx: &mut tokio::sync::broadcast::Receiver<mailcrab::MailMessage>) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within 10 s")
        .expect("message");
    serde_json::to_value(&message).expect("message as JSON")
}

both_backends! {
    async fn the_claim_email_travels_through_smtp(backend: Backend) {
        let port = free_port();
        let mut server = mailcrab::development_mail_server([127, 0, 0, 1], port).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let smtp = authmd::mail::SmtpMailer::new(&format!("smtp://127.0.0.1:{port}"), None, "authmd@example.com")
            .expect("smtp mailer");
        let db = Arc::new(TestDb::new(backend).await);
        let t = TestApp::with_mailer(db, "[mail]\nfrom = \"authmd@example.com\"", Arc::new(smtp), Default::default()).await;

        let body = json!({"type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "ines@example.com", "requested_credential_type": "api_key"});
        let reg = t.post_json("/agent/auth", &body.to_string()).await.json();
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();

        let message = next_message(&mut server.rx).await;
        let text = message["text"].as_str().unwrap_or_default();
        let html = message["html"].as_str().unwrap_or_default();
        assert!(message["to"].to_string().contains("ines@example.com"), "{message}");
        assert!(message["subject"].as_str().unwrap_or_default().contains("Example API"));
        assert!(text.contains("/agent/auth/claim/view?token=cvt_"), "{text}");
        assert!(html.contains("Review the request"), "{html}");
        assert!(text.contains("Show my code"));

        // The user follows the link from the message.
        let link = link_token(text);
        let page = t.send(form_request("/agent/auth/claim/view", &format!("token={link}&action=show"))).await;
        let otp = page_code(&page.text()).expect("a code on the page");
        assert!(!text.contains(&otp) && !html.contains(&otp), "the email never holds the code");

        let done = t.post_json("/agent/auth/claim/complete", &json!({"claim_token": token, "otp": otp}).to_string()).await;
        assert_eq!(done.status, 200, "{}", done.text());
        let key = done.json()["credential"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.get("/api/whoami", Some(&key)).await.json()["user"]["email"], "ines@example.com");
        server.token.cancel();
    }
}

/// A server that refuses connections at first: the queue retries, and the
/// message arrives once the server is up.
#[tokio::test]
async fn delivery_is_retried_until_the_server_answers() {
    let port = free_port();
    let smtp = authmd::mail::SmtpMailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        None,
        "authmd@example.com",
    )
    .expect("smtp mailer");
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let t = TestApp::with_mailer(db, "", Arc::new(smtp), Default::default()).await;
    let reg = t.register_anonymous().await;
    let r = t
        .post_json(
            "/agent/auth/claim",
            &json!({"claim_token": reg["claim_token"], "email": "late@example.com"}).to_string(),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "queued, so the agent is told it was sent: {}",
        r.text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = mailcrab::development_mail_server([127, 0, 0, 1], port).await;
    let message = next_message(&mut server.rx).await;
    assert!(
        message["text"]
            .as_str()
            .unwrap_or_default()
            .contains("cvt_")
    );
    assert!(
        t.app
            .outbox()
            .stats()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    server.token.cancel();
}
