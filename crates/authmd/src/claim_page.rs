//! The claim page (docs/protocol.md §4.2): server-rendered HTML that works
//! without JavaScript, reads well on a phone, and carries no script at all.
//! Its only style sheet is inline and allowed by hash in the
//! Content-Security-Policy (`http/routes.rs` sets the headers).

use std::fmt::Write;
use std::sync::OnceLock;

use base64::Engine;

use crate::time::Timestamp;

/// What the claim page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPage {
    /// The link works: the two buttons.
    Open {
        email: String,
        scopes: Vec<(String, String)>,
        link_expires: Timestamp,
        token: String,
    },
    /// The code, after "show my code".
    Code {
        code: String,
        expires: Timestamp,
    },
    /// After "this wasn't me".
    Denied,
    /// The link was cancelled earlier.
    Cancelled,
    Superseded,
    Expired,
    Claimed,
    Locked,
    Unknown,
    MissingToken,
    /// The current dialect (docs/protocol.md §20.5): the agent's link
    /// opened; the user asks for a sign-in link to `email`.
    SignIn {
        email: String,
        scopes: Vec<(String, String)>,
        link_expires: Timestamp,
        token: String,
    },
    /// The sign-in link was sent.
    SignInSent {
        email: String,
    },
    /// Signed in: "Authorize this agent?".
    Authorize {
        email: String,
        scopes: Vec<(String, String)>,
        provider: Option<String>,
        registration_type: crate::vocab::RegistrationType,
        token: String,
    },
    /// A sign-in link opened in another browser than the one that asked
    /// for it (or an old one).
    OtherBrowser,
    /// Too many sign-in emails for this request or address.
    TooManyEmails {
        retry_after: std::time::Duration,
    },
}

/// The scope list of a page.
fn scope_list(scopes: &[(String, String)]) -> String {
    let mut b = String::from("<ul>");
    for (scope, description) in scopes {
        let _ = write!(
            b,
            "<li>{} <span class=\"muted\">(<code>{}</code>)</span></li>",
            escape(description),
            escape(scope)
        );
    }
    b.push_str("</ul>");
    b
}

/// A form with one button posting `token` and `action`.
fn button(path: &str, token: &str, action: &str, class: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{path}\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button class=\"{class}\" type=\"submit\" name=\"action\" value=\"{action}\">{label}</button></form>",
        escape(token)
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#57606a;--accent:#0b57d0;--line:#d0d7de}\
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9da7b3;--accent:#6ea8fe;--line:#30363d}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:34rem;margin:0 auto;padding:2rem 1.25rem}\
h1{font-size:1.4rem;line-height:1.3;margin:0 0 1rem}\
p{margin:0 0 1rem}\
.muted{color:var(--muted);font-size:.9rem}\
ul{padding-left:1.25rem;margin:0 0 1.25rem}\
li{margin:.25rem 0}\
code{font-size:.85em}\
form{margin:0 0 .75rem}\
button{width:100%;min-height:3rem;font:inherit;font-weight:600;border-radius:.5rem;cursor:pointer}\
.primary{background:var(--accent);color:#fff;border:0}\
.secondary{background:transparent;color:var(--fg);border:1px solid var(--line)}\
button:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
.code{font:700 2.6rem/1.2 ui-monospace,SFMono-Regular,Menlo,monospace;letter-spacing:.35em;text-align:center;\
padding:1rem .5rem;border:2px dashed var(--line);border-radius:.5rem;margin:0 0 1rem;user-select:all}";

/// The style sheet's CSP source (`'sha256-…'`).
pub fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    })
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `page` and its HTTP status.
pub fn render(page: &ClaimPage, service: &str, action: &str) -> (u16, String) {
    let s = escape(service);
    let (status, title, body) = match page {
        ClaimPage::Open {
            email,
            scopes,
            link_expires,
            token,
        } => {
            let mut b = format!(
                "<p>An AI agent asked to connect to your <strong>{s}</strong> account \
                 (<strong>{}</strong>).</p>\
                 <p>If you asked your agent to do this, show your code and give it to the agent. \
                 The agent will then be able to:</p><ul>",
                escape(email)
            );
            for (scope, description) in scopes {
                let _ = write!(
                    b,
                    "<li>{} <span class=\"muted\">(<code>{}</code>)</span></li>",
                    escape(description),
                    escape(scope)
                );
            }
            let t = escape(token);
            let _ = write!(
                b,
                "</ul>\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"token\" value=\"{t}\">\
                 <button class=\"primary\" type=\"submit\" name=\"action\" value=\"show\">Show my code</button></form>\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"token\" value=\"{t}\">\
                 <button class=\"secondary\" type=\"submit\" name=\"action\" value=\"deny\">This wasn't me</button></form>\
                 <p class=\"muted\">This link works until {}. Showing the code does not connect \
                 anything by itself: your agent must enter it.</p>",
                escape(&link_expires.to_human())
            );
            (200, format!("Connect an AI agent to {s}?"), b)
        }
        ClaimPage::Code { code, expires } => (
            200,
            "Your code".to_owned(),
            format!(
                "<p>Give this code to your agent:</p>\
                 <p class=\"code\" id=\"otp\" aria-label=\"Your code: {spaced}\">{code}</p>\
                 <p class=\"muted\">It expires at {}. Do not share it with anyone else: \
                 {s} will never ask you for it.</p>",
                escape(&expires.to_human()),
                spaced = code.chars().map(String::from).collect::<Vec<_>>().join(" "),
                code = escape(code),
            ),
        ),
        ClaimPage::Denied => (
            200,
            "Request cancelled".to_owned(),
            "<p>Thank you. The agent's request was cancelled and no code was shown. \
             Nothing was connected to your account.</p>"
                .to_owned(),
        ),
        ClaimPage::Cancelled => (
            410,
            "This request was cancelled".to_owned(),
            "<p>This link was cancelled (\"This wasn't me\"). If you do want to connect your \
             agent, ask it to start again.</p>"
                .to_owned(),
        ),
        ClaimPage::Superseded => (
            410,
            "This link was replaced".to_owned(),
            "<p>A newer link was sent for this request. Use the most recent email.</p>".to_owned(),
        ),
        ClaimPage::Expired => (
            410,
            "This link has expired".to_owned(),
            "<p>This link is no longer valid. If you still want to connect your agent, ask it \
             to send a new one.</p>"
                .to_owned(),
        ),
        ClaimPage::Claimed => (
            200,
            "Already connected".to_owned(),
            format!(
                "<p>This agent is already connected to your {s} account. There is nothing more to do.</p>"
            ),
        ),
        ClaimPage::Locked => (
            429,
            "Too many wrong codes".to_owned(),
            "<p>Too many wrong codes were entered for this request, so it is locked. \
             If you did not try them, someone else may have: no code works any more.</p>"
                .to_owned(),
        ),
        ClaimPage::Unknown => (
            404,
            "Link not found".to_owned(),
            "<p>This link is not valid. Check that you opened the whole link from the email.</p>"
                .to_owned(),
        ),
        ClaimPage::MissingToken => (
            400,
            "Link incomplete".to_owned(),
            "<p>This link is incomplete. Open the whole link from the email.</p>".to_owned(),
        ),
        ClaimPage::SignIn {
            email,
            scopes,
            link_expires,
            token,
        } => (
            200,
            format!("Connect an AI agent to {s}?"),
            format!(
                "<p>An AI agent asks to connect to the <strong>{s}</strong> account of \
                 <strong>{}</strong>. It would be able to:</p>{}\
                 <p>To continue, sign in: we will email a one-time sign-in link to that address. \
                 Open it in this browser.</p>{}{}\
                 <p class=\"muted\">This page works until {}. Nothing is connected until you \
                 confirm and give the agent the code you will see.</p>",
                escape(email),
                scope_list(scopes),
                button(
                    action,
                    token,
                    "sign_in",
                    "primary",
                    "Email me a sign-in link"
                ),
                button(action, token, "deny", "secondary", "This wasn't me"),
                escape(&link_expires.to_human()),
            ),
        ),
        ClaimPage::SignInSent { email } => (
            200,
            "Check your email".to_owned(),
            format!(
                "<p>We sent a sign-in link to <strong>{}</strong>. Open it in this browser \
                 to continue.</p><p class=\"muted\">Did not get it? Check your spam folder, \
                 or go back and ask again in a minute.</p>",
                escape(email)
            ),
        ),
        ClaimPage::Authorize {
            email,
            scopes,
            provider,
            registration_type,
            token,
        } => (
            200,
            "Authorize this agent?".to_owned(),
            format!(
                "<p>Signed in as <strong>{}</strong>.</p><p>{}</p>\
                 <p>If you authorize it, the agent will be able to:</p>{}{}{}\
                 <p class=\"muted\">After you authorize, you will see a 6-digit code: read it to \
                 your agent. Nothing is connected until the agent enters it.</p>",
                escape(email),
                escape(&crate::current_claim::describe(
                    *registration_type,
                    provider.as_deref()
                )),
                scope_list(scopes),
                button(action, token, "confirm", "primary", "Authorize"),
                button(action, token, "deny", "secondary", "This wasn't me"),
            ),
        ),
        ClaimPage::OtherBrowser => (
            403,
            "Open this link where you started".to_owned(),
            "<p>This sign-in link works only in the browser where you asked for it, and only \
             once it is the latest one. Open it there, or open the agent's link again and ask \
             for a new sign-in link.</p>"
                .to_owned(),
        ),
        ClaimPage::TooManyEmails { retry_after } => (
            429,
            "Too many sign-in emails".to_owned(),
            format!(
                "<p>Too many sign-in links were sent for this request or this address. \
                 Try again in {} minutes.</p>",
                retry_after.as_secs().div_ceil(60).max(1)
            ),
        ),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · {s}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>\n"
    );
    (status, html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn text_is_escaped_everywhere() {
        let page = ClaimPage::Open {
            email: "a<script>@example.com".into(),
            scopes: vec![("x\"y".into(), "<b>bold</b>".into())],
            link_expires: Timestamp::from_secs(0),
            token: "cvt_\"><img".into(),
        };
        let (_, html) = render(&page, "Evil <Corp>", "/agent/auth/claim/view");
        assert!(!html.contains("<script>") && !html.contains("<b>") && !html.contains("\"><img"));
        assert!(html.contains("Evil &lt;Corp&gt;"));
    }

    #[test]
    fn opening_the_page_shows_no_code() {
        let page = ClaimPage::Open {
            email: "u@example.com".into(),
            scopes: vec![],
            link_expires: Timestamp::from_secs(0),
            token: "cvt_x".into(),
        };
        let (status, html) = render(&page, "S", "/v");
        assert_eq!(status, 200);
        assert!(!html.contains("id=\"otp\""));
        assert!(html.contains("value=\"show\"") && html.contains("value=\"deny\""));
        assert!(!html.contains("<script"));
    }
}
