//! `GET /auth.md` (docs/protocol.md §2.5): the agent-facing instructions,
//! rendered from the running configuration. Real URLs, only the enabled
//! flows, the scope inventory, exact request and response shapes, the error
//! table, the retry policy. Structure: discover → pick a method → register →
//! claim → use the credential → errors → revocation.

use std::fmt::Write;

use super::{CurrentFlows, Flows, Urls};
use crate::config::{Config, duration_words};

/// Renders the document.
pub fn render(config: &Config, urls: &Urls) -> String {
    let flows = Flows::of(config);
    let current_flows = CurrentFlows::of(config);
    let mut md = String::with_capacity(16 * 1024);
    intro(&mut md, config, urls);
    if current_flows.any() {
        current(&mut md, config, urls, current_flows, flows);
    }
    discover(&mut md, config, urls);
    pick(&mut md, config, flows);
    register(&mut md, config, urls, flows);
    claim(&mut md, config, urls, flows);
    use_credential(&mut md, config, urls);
    errors(&mut md, urls, flows);
    revocation(&mut md, urls, flows);
    md
}

// The writes below go to a String and cannot fail.

/// The current dialect (docs/protocol.md §20), explained first when it is
/// on; the original dialect's steps follow, still supported.
fn current(md: &mut String, config: &Config, urls: &Urls, c: CurrentFlows, original: Flows) {
    let _ = writeln!(
        md,
        "## The current dialect: `identity_endpoint` and the token endpoint\n\n\
         Agents written for the current auth.md dialect register at \
         `agent_auth.identity_endpoint` (`{identity}`) and exchange the identity \
         assertion they receive at `token_endpoint` (`{token}`) for an access token. \
         Read both from `{asm}`.\n",
        identity = urls.identity,
        token = urls.token,
        asm = urls.as_metadata,
    );
    if c.anonymous {
        let _ = writeln!(
            md,
            "### Anonymous\n\n\
             ```http\nPOST {identity}\nContent-Type: application/json\n\n{{\"type\": \"anonymous\"}}\n```\n\n\
             The answer is `{{\"id\", \"type\": \"anonymous\", \"identity\": {{\"assertion\", \"expires_at\"}}, \
             \"scopes\": {{\"pre_claim\": {pre}, \"post_claim\": {post}}}, \"claim\": {{\"token\", \"expires_at\", \"url\"}}}}`. \
             Keep `claim.token` in memory only. The assertion lasts at most an hour and never past the \
             claim deadline ({ttl}).\n",
            identity = urls.identity,
            pre = json_list(&config.resource.pre_claim_scopes),
            post = json_list(&config.resource.post_claim_scopes),
            ttl = duration_words(config.ttl.registration.get()),
        );
    }
    if c.service_auth {
        let _ = writeln!(
            md,
            "### For a user's email address\n\n\
             ```http\nPOST {identity}\nContent-Type: application/json\n\n{{\"type\": \"service_auth\", \"login_hint\": \"<the user's email>\"}}\n```\n\n\
             The answer has no identity yet: `{{\"id\", \"type\": \"service_auth\", \"scopes\": {{\"post_claim\": {post}}}, \
             \"claim\": {{\"token\", \"expires_at\", \"url\", \"attempt\": {{\"verification_uri\", \"expires_at\"}}}}}}`. \
             Continue with the claim below.\n",
            identity = urls.identity,
            post = json_list(&config.resource.post_claim_scopes),
        );
    }
    if c.id_jag {
        let _ = writeln!(
            md,
            "### With an ID-JAG from your provider\n\n\
             ```http\nPOST {identity}\nContent-Type: application/json\n\n\
             {{\"type\": \"identity_assertion\", \"assertion_type\": \"urn:ietf:params:oauth:token-type:id-jag\", \"assertion\": \"<ID-JAG>\"}}\n```\n\n\
             The ID-JAG's `aud` is **`{issuer}`**, and its `auth_time` must be within the last {age}. \
             A match answers `{{\"id\", \"type\": \"identity_assertion\", \"identity\": {{\"assertion\", \"expires_at\"}}, \"scopes\": [...]}}`. \
             `401 login_required` (with `max_age`): have the user sign in at the provider again. \
             `401 interaction_required`: the user must confirm linking this account; show them \
             `claim.attempt.verification_uri`. You may also present the ID-JAG directly at the token \
             endpoint as the assertion.\n",
            identity = urls.identity,
            issuer = urls.issuer,
            age = duration_words(config.dialects.current.max_auth_age.get()),
        );
    }
    let _ = writeln!(
        md,
        "### Exchange the assertion\n\n\
         ```http\nPOST {token}\nContent-Type: application/x-www-form-urlencoded\n\n\
         grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<identity.assertion>\n```\n\n\
         The answer is `{{\"access_token\", \"token_type\": \"Bearer\", \"expires_in\", \"scope\"}}`. Send \
         `Authorization: Bearer <access_token>` to the API. When it expires, exchange the assertion \
         again while it lasts, then register again. `resource`, if you send it, must be exactly \
         `{resource}` (`invalid_target` otherwise). An assertion stops exchanging as soon as its \
         registration is revoked or expires (`invalid_grant`). Over a limit, here and at the \
         identity endpoint, you get `429 rate_limit_exceeded` with `Retry-After`: wait that long.\n",
        token = urls.token,
        resource = urls.resource,
    );
    let _ = writeln!(
        md,
        "### The claim: the user takes ownership\n\n\
         Anonymous registrations start an attempt (again to replace one; a few an hour):\n\n\
         ```http\nPOST {claim}\nContent-Type: application/json\n\n\
         {{\"type\": \"service_auth\", \"claim_token\": \"<claim.token>\", \"login_hint\": \"<the user's email>\"}}\n```\n\n\
         The answer is `{{\"id\", \"type\": \"service_auth\", \"attempt\": {{\"verification_uri\", \"expires_at\"}}}}`. \
         Show `verification_uri` to your user and say: \"Open this link, sign in with the link we email you \
         (in the same browser), press Authorize, and read me the 6-digit code you see.\" Then:\n\n\
         ```http\nPOST {claim}/complete\nContent-Type: application/json\n\n\
         {{\"claim_token\": \"<claim.token>\", \"user_code\": \"<6 digits>\"}}\n```\n\n\
         `409 claim_not_confirmed`: the user has not pressed Authorize yet; wait and ask again. \
         `401 invalid_user_code`: ask the user to read the code again (a few wrong codes end it: \
         `429 too_many_attempts`; the user presses Authorize again for a new one). \
         `410 user_code_expired`: the user presses Authorize again. Success, once: \
         `{{\"id\", \"status\": \"claimed\", \"identity\": {{\"assertion\", \"expires_at\", \"refresh_token\": {{\"value\", \"expires_at\"}}}}}}`. \
         Exchange the new assertion for the post-claim scopes; earlier access tokens and assertions end.\n\n\
         ### Refresh\n\n\
         ```http\nPOST {identity}\nContent-Type: application/json\n\n{{\"type\": \"refresh\", \"refresh_token\": \"<value>\"}}\n```\n\n\
         Each refresh token works once: store the new one from the answer before you use the \
         assertion. Presenting a used one again ends every refresh token of the chain \
         (`400 invalid_refresh_token`); then register again.\n",
        claim = urls.identity_claim,
        identity = urls.identity,
    );
    if original.anonymous || original.verified_email || original.id_jag {
        let _ = writeln!(
            md,
            "The original dialect (`agent_auth.register_uri`), described below, is still supported.\n"
        );
    }
}

fn intro(md: &mut String, config: &Config, urls: &Urls) {
    let _ = writeln!(
        md,
        "# auth.md: {name}\n\n\
         You are an agent. This service supports agentic registration: you can \
         register with it yourself, receive a scoped credential, and call its API \
         on behalf of your user. Follow these steps in order.\n\n\
         - Protected resource (the API): `{resource}`\n\
         - Authorization server (issuer): `{issuer}`\n\
         - This document: `{auth_md}`\n",
        name = config.resource.name,
        resource = urls.resource,
        issuer = urls.issuer,
        auth_md = urls.auth_md,
    );
}

fn discover(md: &mut String, config: &Config, urls: &Urls) {
    let _ = writeln!(
        md,
        "## 1. Discover\n\n\
         A request to the API without a valid credential is answered `401` with\n\n\
         ```\nWWW-Authenticate: Bearer resource_metadata=\"{prm}\"\n```\n\n\
         1. Fetch the protected resource metadata named there (or `{prm}`). Check \
         that `resource` is exactly `{resource}`, and read `resource_name`, \
         `scopes_supported` and `authorization_servers`.\n\
         2. Fetch `{asm}`. Check that `issuer` is exactly `{issuer}`, and read the \
         `agent_auth` object in full: `register_uri`, `identity_types_supported` and \
         the credential types of each method. Those documents are authoritative; \
         this file explains them.\n",
        prm = urls.prm,
        resource = urls.resource,
        asm = urls.as_metadata,
        issuer = urls.issuer,
    );
    let _ = writeln!(md, "### Scopes\n\n| scope | what it allows |\n|---|---|");
    for (scope, description) in &config.resource.scopes {
        let _ = writeln!(md, "| `{scope}` | {description} |");
    }
    let _ = writeln!(
        md,
        "\nAn anonymous credential holds only the pre-claim scopes, {pre}, until \
         its user claims it; a credential issued for a verified user holds {post}.\n",
        pre = scope_list(&config.resource.pre_claim_scopes),
        post = scope_list(&config.resource.post_claim_scopes),
    );
    let rules = config.rules();
    if !rules.is_empty() {
        let _ = writeln!(md, "Scopes the API requires, first matching rule wins:\n");
        for r in rules {
            let methods = if r.methods.is_empty() {
                "any method".to_owned()
            } else {
                r.methods.join(", ")
            };
            let _ = writeln!(
                md,
                "- {methods} under `{prefix}` needs {scopes}",
                prefix = r.path_prefix,
                scopes = scope_list(&r.scopes),
            );
        }
        let _ = writeln!(md);
    }
}

fn pick(md: &mut String, config: &Config, flows: Flows) {
    let _ = writeln!(md, "## 2. Pick a method\n");
    if !flows.anonymous && !flows.id_jag && !flows.verified_email {
        let _ = writeln!(
            md,
            "This service currently accepts no agent registrations. Do not retry; \
             ask your user to obtain access another way.\n"
        );
        return;
    }
    let _ = writeln!(md, "Use the first that applies:\n");
    if flows.id_jag {
        let _ = writeln!(
            md,
            "- **Agent verified** (`\"type\": \"identity_assertion\"` with an ID-JAG): your \
             platform (an identity provider this service trusts) signs an assertion about \
             your user. You receive a credential at once, with no human step. Use it when \
             your platform can mint ID-JAGs for this service."
        );
    }
    if flows.verified_email {
        let _ = writeln!(
            md,
            "- **Email required** (`\"assertion_type\": \"verified_email\"`): you know your \
             user's email address. You receive nothing until the user reads you a one-time \
             code from a page linked in an email; then you get a credential with the full \
             scopes."
        );
    }
    if flows.anonymous {
        let _ = writeln!(
            md,
            "- **Anonymous start** (`\"type\": \"anonymous\"`): you receive an API key at \
             once, limited to the pre-claim scopes. Use it when you have no identity to \
             present for your user; later your user can claim it (step 4) and its scopes grow."
        );
    }
    let _ = writeln!(
        md,
        "\nBefore registering, tell your user that you are about to register with \
         **{name}** and which scopes you will receive.\n",
        name = config.resource.name
    );
}

fn register(md: &mut String, config: &Config, urls: &Urls, flows: Flows) {
    let _ = writeln!(md, "## 3. Register\n");
    if flows.id_jag {
        id_jag(md, config, urls);
    }
    if flows.verified_email {
        let _ = writeln!(
            md,
            "### Email required\n\n\
             ```http\nPOST {register} HTTP/1.1\nContent-Type: application/json\n\n\
             {{\"type\": \"identity_assertion\",\n \"assertion_type\": \"verified_email\",\n \
             \"assertion\": \"user@example.com\",\n \"requested_credential_type\": \"api_key\"}}\n```\n\n\
             `requested_credential_type` is `api_key` or `access_token`. The response (`200`, \
             `Cache-Control: no-store`) holds no credential yet; the user has been emailed a link:\n\n\
             ```json\n{{\n  \"registration_id\": \"reg_…\",\n  \"registration_type\": \"email-verification\",\n  \
             \"claim_url\": \"{claim}\",\n  \"claim_token\": \"clm_…\",\n  \
             \"claim_token_expires\": \"2026-05-21T17:26:32.915Z\",\n  \
             \"post_claim_scopes\": {post_json}\n}}\n```\n\n\
             The answer is the same whether or not the address has an account here. Keep \
             `claim_token` secret, then continue with step 4.\n",
            register = urls.register,
            claim = urls.claim,
            post_json = json_list(&config.resource.post_claim_scopes),
        );
    }
    if flows.anonymous {
        let _ = writeln!(
            md,
            "### Anonymous start\n\n\
             ```http\nPOST {register} HTTP/1.1\nContent-Type: application/json\n\n\
             {{\"type\": \"anonymous\", \"requested_credential_type\": \"api_key\"}}\n```\n\n\
             Only `api_key` is offered to anonymous registrations. The response \
             (`200`, `Cache-Control: no-store`):\n\n\
             ```json\n{{\n  \"registration_id\": \"reg_…\",\n  \"registration_type\": \"anonymous\",\n  \
             \"credential_type\": \"api_key\",\n  \"credential\": \"amd_sk_…\",\n  \
             \"credential_expires\": null,\n  \"scopes\": {pre_json},\n  \
             \"claim_url\": \"{claim}\",\n  \"claim_token\": \"clm_…\",\n  \
             \"claim_token_expires\": \"2026-05-21T17:26:32.915Z\",\n  \
             \"post_claim_scopes\": {post_json}\n}}\n```\n\n\
             Store `credential` and `claim_token` as secrets: they are shown once.\n",
            register = urls.register,
            claim = urls.claim,
            pre_json = json_list(&config.resource.pre_claim_scopes),
            post_json = json_list(&config.resource.post_claim_scopes),
        );
    }
    let limits = &config.rate_limits;
    let mut notes = vec!["Request bodies are limited to 64 KiB.".to_owned()];
    if limits.enabled {
        if flows.id_jag {
            notes.push(format!(
                "Agent-verified registrations are limited to {} per hour from one address \
                 and {} per hour in total.",
                limits.identity_assertion_per_ip_per_hour, limits.identity_assertion_per_hour,
            ));
        }
        if flows.verified_email {
            notes.push(format!(
                "Claim emails are limited to {} per hour for one registration and {} per hour \
                 for one address.",
                limits.claim_emails_per_registration_per_hour,
                limits.claim_emails_per_address_per_hour,
            ));
        }
        if flows.anonymous {
            notes.push(format!(
                "Anonymous registrations are limited to {} per hour from one address \
                 and {} per hour in total.",
                limits.anonymous_per_ip_per_hour, limits.anonymous_per_hour,
            ));
        }
        notes.push("Over a limit you get `429 rate_limited` with `Retry-After`.".into());
    }
    let _ = writeln!(md, "{}\n", notes.join(" "));
}

fn id_jag(md: &mut String, config: &Config, urls: &Urls) {
    let lifetime = duration_words(config.assertions.max_lifetime.get());
    let skew = duration_words(config.assertions.clock_skew.get());
    let token_ttl = duration_words(config.ttl.access_token.get());
    let _ = writeln!(
        md,
        "### Agent verified (ID-JAG)\n\n\
         Ask your platform for an ID-JAG (Identity Assertion JWT Authorization Grant) for \
         this service, then:\n\n\
         ```http\nPOST {register} HTTP/1.1\nContent-Type: application/json\n\n\
         {{\"type\": \"identity_assertion\",\n \"assertion_type\": \"urn:ietf:params:oauth:token-type:id-jag\",\n \
         \"assertion\": \"<the ID-JAG>\",\n \"requested_credential_type\": \"access_token\"}}\n```\n\n\
         `requested_credential_type` is `access_token` (expires after {token_ttl}) or `api_key` \
         (does not expire). The ID-JAG must be a compact JWS, at most 16 KiB, with:\n\n\
         | where | member | value |\n|---|---|---|\n\
         | header | `typ` | `oauth-id-jag+jwt` |\n\
         | header | `alg` | `ES256`, `RS256`, `PS256` or `EdDSA` (as your platform's keys allow) |\n\
         | header | `kid` | the key's id in your platform's published JWKS |\n\
         | claims | `iss` | your platform's issuer, exactly as this service trusts it |\n\
         | claims | `aud` | **`{issuer}`**, exactly: this service's issuer (a string, or an array of exactly that one string). Not the resource URL. |\n\
         | claims | `sub` | your platform's stable identifier of the user (at most 255 bytes) |\n\
         | claims | `client_id` | your platform's client identifier for you |\n\
         | claims | `jti` | unique per assertion: each ID-JAG is accepted once |\n\
         | claims | `iat`, `exp` | numbers (seconds); `exp - iat` at most {lifetime}; clocks may differ by {skew} |\n\
         | claims | `email` + `email_verified: true`, or `phone_number` + `phone_number_verified: true` | the user's verified address (JSON `true`, not `\"true\"`) |\n\
         | claims | optional | `name`, `amr`, `auth_time`, `nbf`, `agent_platform`, `agent_context_id` |\n\n\
         The response (`200`, `Cache-Control: no-store`):\n\n\
         ```json\n{{\n  \"registration_id\": \"reg_…\",\n  \"registration_type\": \"agent-provider\",\n  \
         \"credential_type\": \"access_token\",\n  \"credential\": \"amd_at_…\",\n  \
         \"credential_expires\": \"2026-05-04T13:00:00.000Z\",\n  \"scopes\": {post_json}\n}}\n```\n\n\
         There is no refresh token: when the access token expires, ask your platform for a \
         fresh ID-JAG and register again. The `registration_id` stays the same for the same \
         user of the same platform.\n",
        register = urls.register,
        issuer = urls.issuer,
        post_json = json_list(&config.resource.post_claim_scopes),
    );
}

fn claim(md: &mut String, config: &Config, urls: &Urls, flows: Flows) {
    if !flows.claim() {
        return;
    }
    let registration_ttl = duration_words(config.ttl.registration.get());
    let link_ttl = duration_words(config.ttl.claim_link.get());
    let otp_ttl = duration_words(config.ttl.otp.get());
    let _ = writeln!(
        md,
        "## 4. Claim\n\n\
         A claim binds the registration to your user, who proves their mailbox with a \
         one-time code. You never see the email and the email never contains the code: \
         your user reads the code from a page and tells you.\n"
    );
    if flows.anonymous {
        let _ = writeln!(
            md,
            "With an anonymous registration, start the claim when your user agrees, with \
             their email address:\n\n\
             ```http\nPOST {claim} HTTP/1.1\nContent-Type: application/json\n\n\
             {{\"claim_token\": \"clm_…\", \"email\": \"user@example.com\"}}\n```\n\n\
             Answer (`200`): `{{\"registration_id\": \"reg_…\", \"claim_attempt_id\": \"cla_…\", \
             \"status\": \"initiated\", \"expires_at\": \"…\"}}`. Calling it again with the same \
             email while the link is valid returns the same attempt without sending a second \
             email. An unclaimed anonymous registration expires {registration_ttl} after it was \
             created (`claim_token_expires`); its key stops working then.\n",
            claim = urls.claim,
        );
    }
    if flows.verified_email {
        let _ = writeln!(
            md,
            "With an email-required registration the first email was sent at registration. \
             If its link expired, the same call with the same address sends a new one.\n"
        );
    }
    let _ = writeln!(
        md,
        "Then tell your user, in these words or similar: *\"{service} sent you an email. Open \
         the link within {link_ttl}, press **Show my code**, and tell me the 6-digit code. If \
         you did not expect it, press **This wasn't me**.\"* When they give you the code:\n\n\
         ```http\nPOST {claim}/complete HTTP/1.1\nContent-Type: application/json\n\n\
         {{\"claim_token\": \"clm_…\", \"otp\": \"123456\"}}\n```\n\n\
         - Anonymous registration: `{{\"registration_id\": \"reg_…\", \"status\": \"claimed\"}}`. \
         Your API key stays the same and now holds {post}{rotate}.\n\
         - Email-required registration: the answer also holds your credential: \
         `credential_type`, `credential`, `credential_expires` and `scopes`.\n\n\
         A code is valid for {otp_ttl}. After {per_code} wrong codes the code is dead: ask \
         your user to press **Show my code** again for a new one. After {per_reg} wrong codes \
         in all, the claim is locked until the registration expires. Never guess codes.\n",
        service = config.resource.name,
        claim = urls.claim,
        post = scope_list(&config.resource.post_claim_scopes),
        rotate = if config.registration.rotate_key_on_claim {
            " (this service replaces the key at claim: the answer carries the new `credential`; the old key stops working)"
        } else {
            ""
        },
        per_code = crate::store::WRONG_PER_CODE,
        per_reg = crate::store::WRONG_PER_REGISTRATION,
    );
}

fn use_credential(md: &mut String, config: &Config, urls: &Urls) {
    if config.upstream.is_some() {
        // Gateway mode: every path under the resource is the API's own.
        let _ = writeln!(
            md,
            "## 5. Use the credential\n\n\
             Send it in the `Authorization` header of every API request under \
             `{resource}` (never in a URL):\n\n\
             ```http\nGET {resource} HTTP/1.1\nAuthorization: Bearer amd_…\n```\n\n\
             This service checks it, then passes the request to the API behind it; \
             the API learns who you are from this service, never from your credential.\n",
            resource = urls.resource,
        );
    } else {
        let _ = writeln!(
            md,
            "## 5. Use the credential\n\n\
             Send it in the `Authorization` header of every API request (never in a URL):\n\n\
             ```http\nGET {whoami} HTTP/1.1\nAuthorization: Bearer amd_…\n```\n\n\
             `GET {whoami}` answers what your credential is: `registration_id`, \
             `registration_type`, `scopes`, `credential_type`, `credential_expires` and \
             the bound `user` (or `null`).\n",
            whoami = urls.whoami,
        );
    }
    let _ = writeln!(
        md,
        "- `401` with `error=\"invalid_token\"` in `WWW-Authenticate`: the credential \
         is unknown, expired or revoked. Discard it and start again at step 1; do not \
         retry with it.\n\
         - `403` with `error=\"insufficient_scope\"`: the credential is valid but lacks \
         the scope named in the challenge's `scope` parameter.\n\
         - The credential is checked before anything else: a request without it is \
         `401` whatever its method or path."
    );
    if config.upstream.is_some() {
        let _ = writeln!(
            md,
            "- `502` `upstream_unavailable` or `504` `upstream_timeout`: the API behind \
             this service is down or slow. Your credential is fine; retry later, with \
             backoff."
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "What this service signs (the identity assertions it gives the API) \
         verifies against its keys at `{jwks}` (`jwks_uri` in its metadata).\n",
        jwks = urls.jwks,
    );
}

fn errors(md: &mut String, urls: &Urls, flows: Flows) {
    let r = &urls.register;
    let _ = writeln!(
        md,
        "## 6. Errors\n\n\
         Every error is JSON: `{{\"error\": \"<code>\", \"message\": \"<text>\"}}`. \
         Act on `error`; `message` is for people.\n\n\
         | code | status | where | what to do |\n|---|---|---|---|\n\
         | `invalid_request` | 400 | anywhere | The body is malformed, not JSON, not `application/json`, or misses a field (or the ID-JAG is malformed, untyped, or has bad `iat`, `nbf`, lifetime, `sub`, `jti` or `client_id`). Fix the request; do not resend it unchanged. |\n\
         | `invalid_request` | 413 | anywhere | The body is over 64 KiB. |\n\
         | `anonymous_not_enabled` | 400 | `{r}` | Anonymous registration is off. Use another method from `agent_auth`. |\n\
         | `verified_email_not_enabled` | 400 | `{r}` | Email registration is off. Use another method from `agent_auth`. |\n\
         | `identity_assertion_not_enabled` | 400 | `{r}` | ID-JAG registration is off. Use another method from `agent_auth`. |\n\
         | `unsupported_credential_type` | 400 | `{r}` | Ask for a credential type this method lists in `credential_types_supported`. |"
    );
    if flows.id_jag {
        let _ = writeln!(
            md,
            "| `invalid_issuer` | 400 | `{r}` | This service does not trust your platform. Use another method. |\n\
             | `invalid_signature` | 400 | `{r}` | The signature, `alg` or `kid` is wrong, or the key is not in your platform's JWKS. Ask your platform for a fresh ID-JAG; do not retry the same one. |\n\
             | `expired` | 400 | `{r}` | The ID-JAG has expired (or has no `exp`). Mint a fresh one. |\n\
             | `invalid_audience` | 400 | `{r}` | `aud` must be exactly `{issuer}`. |\n\
             | `invalid_client_id` | 400 | `{r}` | `client_id` does not belong to the issuing platform. |\n\
             | `missing_verified_email` | 400 | `{r}` | The ID-JAG must carry `email_verified: true` or `phone_number_verified: true`. |\n\
             | `insufficient_user_authentication` | 400 | `{r}` | Your user must sign in again (stronger or more recently) at your platform; then mint a fresh ID-JAG. |\n\
             | `replay_detected` | 400 | `{r}` | That ID-JAG was already used. Mint a fresh one (new `jti`). |\n\
             | `user_not_provisioned` | 403 | `{r}` | Your user has no account here, and this service does not create accounts for agents. Ask your user to sign up. |",
            issuer = urls.issuer,
        );
    }
    if flows.claim() {
        let c = &urls.claim;
        let _ = writeln!(
            md,
            "| `invalid_claim_token` | 401 | `{c}`, `{c}/complete` | The claim token is wrong. Check you kept the one from registration. |\n\
             | `claimed_or_in_flight` | 409 | `{c}` | Already claimed: nothing to do. |\n\
             | `claim_expired` | 410 | `{c}`, `{c}/complete` | The registration expired before it was claimed. Register again. |\n\
             | `otp_not_generated` | 400 | `{c}/complete` | Your user has not pressed **Show my code** yet (or cancelled). Ask them to. |\n\
             | `otp_expired` | 410 | `{c}/complete` | The code expired. Ask your user to show a new one on the same page. |\n\
             | `otp_invalid` | 401 | `{c}/complete` | Wrong code. Ask your user to read it again; do not guess. |\n\
             | `too_many_attempts` | 429 | `{c}/complete` | Too many wrong codes: the code is dead (ask for a new one) or the claim is locked until the registration expires. |\n\
             | `previously_claimed` | 409 | `{c}/complete` | The claim already succeeded. Use your credential. |"
        );
    }
    let _ = writeln!(
        md,
        "| `rate_limited` | 429 | anywhere | Wait for the number of seconds in `Retry-After`, then retry once. |\n\
         | `invalid_token` | 401 | the API | Discard the credential and start again at step 1. |\n\
         | `insufficient_scope` | 403 | the API | Your credential lacks the scope in the challenge. |\n\
         | `server_error` | 500 | anywhere | Retry later with backoff. |\n\n\
         ### Retry policy\n\n\
         - `5xx` and network errors: retry with exponential backoff (1 s, 2 s, 4 s, \
         8 s, 16 s), at most five times.\n\
         - `429`: wait `Retry-After` seconds before the next attempt.\n\
         - Other `4xx`: do not retry the same request; change it first.\n\
         - `401` for a credential that used to work: it was revoked or expired; \
         rediscover and register again.\n"
    );
}

fn revocation(md: &mut String, urls: &Urls, flows: Flows) {
    let unclaimed = if flows.anonymous {
        "when its registration expires unclaimed, "
    } else {
        ""
    };
    let provider = if flows.id_jag {
        "when your provider withdraws the user's consent (it sends this service a \
         logout token), "
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "## 7. Revocation\n\n\
         A credential stops working when it expires, {unclaimed}{provider}or when the service's \
         operators revoke it. You learn of it from a `401` with \
         `error=\"invalid_token\"` on your next request; there is no other notification. \
         Then start again at step 1.\n\n\
         When you are done, end your credential yourself (RFC 7009):\n\n\
         ```http\nPOST {revoke} HTTP/1.1\nContent-Type: application/x-www-form-urlencoded\n\n\
         token=amd_…\n```\n\n\
         The answer is `200` with an empty body, for a token known here or not. The credential \
         stops working at once, everywhere within a second. If it was the last live credential \
         of its registration, the registration ends with it: register again to continue. A \
         malformed request is `400` with `{{\"error\": \"invalid_request\", \
         \"error_description\": \"…\"}}` (the OAuth error shape).",
        revoke = urls.token_revocation,
    );
}

fn scope_list(scopes: &[String]) -> String {
    if scopes.is_empty() {
        return "no scopes".into();
    }
    scopes
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_list(scopes: &[String]) -> String {
    serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into())
}
