//! Outgoing mail: one small trait, and where messages go.
//!
//! [`SmtpMailer`] speaks SMTP through lettre (`smtp://` plain for loopback,
//! `?tls=required` for STARTTLS, `smtps://` for implicit TLS). With no
//! `[mail] smtp_url`, messages are written to the outbox directory, one
//! `.eml` file per message (open it with any mail client), and the path is
//! logged. [`MemoryMailer`] keeps them for tests. Claim emails reach them
//! through the durable queue in `outbox.rs`: a request writes its message
//! to the database with the claim attempt, and delivery is retried with
//! backoff from there.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lettre::AsyncTransport;

/// A message to one recipient, with a plain-text and an HTML part.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The body carries a one-time link (a claim or sign-in secret): a
/// `Debug` print of a message, or of anything that holds one, shows only
/// its recipient and subject.
impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("cannot deliver the message: {0}")]
    Delivery(String),
}

/// Sends mail. Implementations must not log message bodies (they carry
/// single-use links).
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Builds the RFC 5322 message (multipart/alternative, text then HTML).
pub fn build_message(from: &str, email: &Email) -> Result<lettre::Message, MailError> {
    use lettre::message::{Mailbox, MultiPart};
    let from: Mailbox = from
        .parse()
        .map_err(|_| MailError::Address(from.to_owned()))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|_| MailError::Address(email.to.clone()))?;
    lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}

/// Sends through an SMTP server.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL: it may carry credentials.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// `url`: `smtp://host:port`, `smtp://host:port?tls=required`,
    /// `smtps://host:port`; credentials may be in the URL or given here.
    pub fn new(
        url: &str,
        credentials: Option<(String, String)>,
        from: impl Into<String>,
    ) -> Result<SmtpMailer, MailError> {
        let mut builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|_| MailError::Delivery("invalid mail.smtp_url".into()))?
            .timeout(Some(Duration::from_secs(15)));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user, password),
            );
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from: from.into(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Delivery(e.to_string()))
    }
}

/// Writes each message to `<dir>/<time>-<random>.eml`.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: String,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Self {
        OutboxMailer {
            dir: dir.into(),
            from: from.into(),
        }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| MailError::Delivery(format!("{}: {e}", self.dir.display())))?;
        let name = format!(
            "{}-{}.eml",
            crate::time::Timestamp::now().as_millis(),
            crate::token::new_id("")
        );
        let path = self.dir.join(name);
        tokio::fs::write(&path, message.formatted())
            .await
            .map_err(|e| MailError::Delivery(format!("{}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), to = %email.to, "mail written to the outbox");
        Ok(())
    }
}

/// Keeps messages in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryMailer {
    sent: Arc<Mutex<Vec<Email>>>,
}

impl MemoryMailer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        build_message("authmd@localhost", email)?;
        if let Ok(mut v) = self.sent.lock() {
            v.push(email.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            to: "user@example.com".into(),
            subject: "Hello".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
        }
    }

    #[test]
    fn debug_shows_no_body() {
        let mut m = email();
        m.text = "open https://x.example/v?token=cvt_secret".into();
        m.html = m.text.clone();
        let shown = format!("{m:?}");
        assert!(!shown.contains("cvt_secret"), "{shown}");
        assert!(shown.contains(&m.to));
    }

    #[tokio::test]
    async fn outbox_writes_one_eml_per_message() {
        let dir = std::env::temp_dir().join(format!("authmd-outbox-{}", crate::token::new_id("")));
        let m = OutboxMailer::new(&dir, "authmd@example.com");
        m.send(&email()).await.unwrap_or_else(|e| panic!("{e}"));
        m.send(&email()).await.unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .collect();
        assert_eq!(files.len(), 2);
        let text = std::fs::read_to_string(files[0].path()).unwrap_or_default();
        assert!(text.contains("To: user@example.com"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("plain body"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn bad_addresses_are_refused() {
        let mut e = email();
        e.to = "not an address".into();
        assert!(matches!(
            MemoryMailer::new().send(&e).await,
            Err(MailError::Address(_))
        ));
    }
}
