//! Discovery documents (docs/protocol.md §2): the URLs everything else uses, the
//! RFC 9728 protected resource metadata and the RFC 8414 authorization
//! server metadata with its `agent_auth` block.
//!
//! The configuration is fixed for the life of the process, so the documents
//! are rendered once at startup and served as bytes.

use serde::Serialize;

use crate::config::Config;

mod auth_md;

/// Where authmd publishes its own public keys (RFC 8414 `jwks_uri`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The current dialect's endpoints (docs/protocol.md §20).
pub const IDENTITY_PATH: &str = "/agent/identity";
pub const IDENTITY_CLAIM_PATH: &str = "/agent/identity/claim";
pub const IDENTITY_CLAIM_COMPLETE_PATH: &str = "/agent/identity/claim/complete";
/// Where the user opens a current-dialect claim attempt (`verification_uri`).
pub const IDENTITY_VERIFY_PATH: &str = "/agent/identity/claim/verify";
pub const EVENTS_PATH: &str = "/agent/event/notify";
pub const TOKEN_PATH: &str = "/oauth2/token";

/// Every URL authmd publishes or serves, derived once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// The RFC 8414 issuer, byte for byte as configured.
    pub issuer: String,
    /// The resource identifier, byte for byte as configured.
    pub resource: String,
    /// Path prefix of the protected resource on this server, ending in `/`.
    pub resource_path: String,
    /// The protected resource metadata URL named in 401 challenges: the
    /// RFC 9728 §3.1 path-inserted form for the resource identifier.
    pub prm: String,
    /// Local paths that serve the protected resource metadata.
    pub prm_paths: Vec<String>,
    pub as_metadata: String,
    /// authmd's own public keys (`service_keys.rs`).
    pub jwks: String,
    pub auth_md: String,
    /// The original dialect's registration (`POST /agent/auth`).
    pub register: String,
    pub claim: String,
    pub revoke: String,
    /// RFC 7009: where an agent ends its own credential.
    pub token_revocation: String,
    /// RFC 7662: where resource servers ask about a credential.
    pub introspection: String,
    pub whoami: String,
    /// The current dialect (docs/protocol.md §20): registration and
    /// refresh (`POST /agent/identity`).
    pub identity: String,
    /// Its claim start (`POST /agent/identity/claim`); completion is this
    /// plus `/complete`.
    pub identity_claim: String,
    /// Where providers send security events (RFC 8935).
    pub events: String,
    /// RFC 6749 token endpoint (RFC 7523 jwt-bearer).
    pub token: String,
}

impl Urls {
    pub fn new(config: &Config) -> Urls {
        let issuer = config.issuer().to_owned();
        let resource = config.resource_identifier().to_owned();
        let parsed = url::Url::parse(&resource).ok();
        let path = parsed.as_ref().map_or("/", |u| u.path()).to_owned();
        let origin = parsed
            .as_ref()
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|| issuer.clone());
        // RFC 9728 §3.1: insert the well-known segment between host and path.
        let trimmed = path.trim_end_matches('/');
        let prm = format!("{origin}/.well-known/oauth-protected-resource{trimmed}");
        let mut prm_paths = vec![
            "/.well-known/oauth-protected-resource".to_owned(),
            format!("/.well-known/oauth-protected-resource{trimmed}"),
        ];
        if path.ends_with('/') {
            prm_paths.push(format!("/.well-known/oauth-protected-resource{path}"));
        }
        prm_paths.dedup();
        let resource_path = if path.ends_with('/') {
            path.clone()
        } else {
            format!("{path}/")
        };
        let whoami = if resource.ends_with('/') {
            format!("{resource}whoami")
        } else {
            format!("{resource}/whoami")
        };
        Urls {
            as_metadata: format!("{issuer}/.well-known/oauth-authorization-server"),
            jwks: format!("{issuer}{JWKS_PATH}"),
            auth_md: format!("{issuer}/auth.md"),
            register: format!("{issuer}/agent/auth"),
            claim: format!("{issuer}/agent/auth/claim"),
            revoke: format!("{issuer}/agent/auth/revoke"),
            token_revocation: format!("{issuer}/oauth2/revoke"),
            introspection: format!("{issuer}/oauth2/introspect"),
            identity: format!("{issuer}{IDENTITY_PATH}"),
            identity_claim: format!("{issuer}{IDENTITY_CLAIM_PATH}"),
            events: format!("{issuer}{EVENTS_PATH}"),
            token: format!("{issuer}{TOKEN_PATH}"),
            issuer,
            resource,
            resource_path,
            prm,
            prm_paths,
            whoami,
        }
    }
}

/// RFC 9728 protected resource metadata.
#[derive(Debug, Serialize)]
pub struct ProtectedResourceMetadata<'a> {
    pub resource: &'a str,
    pub resource_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_logo_uri: Option<&'a str>,
    pub authorization_servers: [&'a str; 1],
    pub scopes_supported: Vec<&'a str>,
    pub bearer_methods_supported: [&'a str; 1],
    pub resource_documentation: &'a str,
}

/// The `agent_auth` block: how an agent registers here, in both dialects
/// (an agent reads the members of its own and ignores the others). Lists
/// only what is enabled and built.
#[derive(Debug, Serialize)]
pub struct AgentAuth<'a> {
    pub skill: &'a str,
    /// The current dialect (docs/protocol.md §20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_endpoint: Option<&'a str>,
    /// The original dialect (§3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_uri: Option<&'a str>,
    /// Where providers send logout tokens (§5), while any is trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_uri: Option<&'a str>,
    /// The union of both dialects' enabled types.
    pub identity_types_supported: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<CredentialTypes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_assertion: Option<IdentityAssertion<'a>>,
    /// The logout events accepted at `revocation_uri` and
    /// `events_endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_supported: Option<[&'a str; 2]>,
}

#[derive(Debug, Serialize)]
pub struct IdentityAssertion<'a> {
    pub assertion_types_supported: Vec<&'a str>,
    /// The original dialect's (absent when only the current one offers
    /// identity assertions: it returns no credential at registration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_types_supported: Option<Vec<&'a str>>,
}

/// Which flows are on: enabled in the configuration and built. ID-JAG
/// registration also needs a trusted provider (without one every assertion
/// is refused, so it is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flows {
    pub anonymous: bool,
    pub verified_email: bool,
    pub id_jag: bool,
}

impl Flows {
    /// The flows of the original dialect (`[registration]` and
    /// `[dialects.original]`).
    pub fn of(config: &Config) -> Flows {
        let r = &config.registration;
        let d = &config.dialects.original;
        Flows {
            anonymous: d.enabled && d.anonymous && r.anonymous,
            verified_email: d.enabled && d.verified_email && r.verified_email,
            id_jag: d.enabled
                && d.identity_assertion
                && r.identity_assertion
                && !config.providers.is_empty(),
        }
    }

    /// Whether a claim ceremony can happen (anonymous or email required).
    pub fn claim(self) -> bool {
        self.anonymous || self.verified_email
    }
}

/// Which flows the current dialect offers (`[registration]` and
/// `[dialects.current]`; ID-JAGs also need a trusted provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentFlows {
    pub anonymous: bool,
    pub service_auth: bool,
    pub id_jag: bool,
}

impl CurrentFlows {
    pub fn of(config: &Config) -> CurrentFlows {
        let r = &config.registration;
        let d = &config.dialects.current;
        CurrentFlows {
            anonymous: d.enabled && d.anonymous && r.anonymous,
            service_auth: d.enabled && d.service_auth && r.verified_email,
            id_jag: d.enabled
                && d.identity_assertion
                && r.identity_assertion
                && !config.providers.is_empty(),
        }
    }

    /// Whether the current dialect offers anything at all (then its
    /// endpoints are published).
    pub fn any(self) -> bool {
        self.anonymous || self.service_auth || self.id_jag
    }
}

#[derive(Debug, Serialize)]
pub struct CredentialTypes<'a> {
    pub credential_types_supported: Vec<&'a str>,
}

/// RFC 8414 authorization server metadata with the `agent_auth` extension.
///
/// authmd has no authorization endpoint: agents register at
/// `agent_auth.register_uri` (original dialect) or
/// `agent_auth.identity_endpoint` (current dialect), and only the current
/// dialect has a token endpoint (RFC 7523 jwt-bearer). RFC 8414 §2 makes
/// `response_types_supported` REQUIRED and lets an absent
/// `grant_types_supported` mean `["authorization_code", "implicit"]`; both
/// would mislead, so the first is an empty array and the second lists
/// exactly the jwt-bearer grant (empty without the current dialect).
/// §3.2's "omit zero-element claims" conflicts with the first; a present,
/// empty, truthful member wins over a missing required one.
#[derive(Debug, Serialize)]
pub struct AuthorizationServerMetadata<'a> {
    pub issuer: &'a str,
    /// The keys that verify what authmd signs (identity assertions).
    pub jwks_uri: &'a str,
    pub scopes_supported: Vec<&'a str>,
    pub response_types_supported: [&'a str; 0],
    /// RFC 7523 jwt-bearer while the current dialect is on, else empty.
    pub grant_types_supported: Vec<&'a str>,
    /// The current dialect's token endpoint (RFC 6749 §3.2): no client
    /// authentication (`none`), the assertion is the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<[&'a str; 1]>,
    pub service_documentation: &'a str,
    /// Kept from the reference implementation for compatibility.
    pub resource: &'a str,
    pub authorization_servers: [&'a str; 1],
    pub bearer_methods_supported: [&'a str; 1],
    /// RFC 7009 for the agent's own credential: the token authenticates
    /// itself, so no client authentication (`none`).
    pub revocation_endpoint: &'a str,
    pub revocation_endpoint_auth_methods_supported: [&'a str; 1],
    /// RFC 7662, published while a caller is configured (HTTP Basic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint_auth_methods_supported: Option<[&'a str; 1]>,
    pub agent_auth: AgentAuth<'a>,
}

/// The rendered documents, served as bytes.
#[derive(Debug, Clone)]
pub struct Documents {
    pub protected_resource: bytes::Bytes,
    pub authorization_server: bytes::Bytes,
    pub auth_md: bytes::Bytes,
}

impl Documents {
    pub fn render(config: &Config, urls: &Urls) -> Documents {
        let scopes: Vec<&str> = config.resource.scopes.keys().map(String::as_str).collect();
        let prm = ProtectedResourceMetadata {
            resource: &urls.resource,
            resource_name: &config.resource.name,
            resource_logo_uri: config.resource.logo_uri.as_deref(),
            authorization_servers: [&urls.issuer],
            scopes_supported: scopes.clone(),
            bearer_methods_supported: ["header"],
            resource_documentation: &urls.auth_md,
        };
        let flows = Flows::of(config);
        let current = CurrentFlows::of(config);
        let mut identity_types = Vec::new();
        if flows.anonymous || current.anonymous {
            identity_types.push("anonymous");
        }
        if flows.id_jag || flows.verified_email || current.id_jag {
            identity_types.push("identity_assertion");
        }
        if current.service_auth {
            identity_types.push("service_auth");
        }
        let anonymous = flows.anonymous.then(|| CredentialTypes {
            credential_types_supported: vec!["api_key"],
        });
        let identity_assertion =
            (flows.id_jag || flows.verified_email || current.id_jag).then(|| {
                let mut types = Vec::new();
                if flows.id_jag || current.id_jag {
                    types.push(crate::vocab::ID_JAG_ASSERTION_TYPE);
                }
                if flows.verified_email {
                    types.push(crate::vocab::VERIFIED_EMAIL_ASSERTION_TYPE);
                }
                IdentityAssertion {
                    assertion_types_supported: types,
                    credential_types_supported: (flows.id_jag || flows.verified_email)
                        .then(|| vec!["access_token", "api_key"]),
                }
            });
        let original = config.dialects.original.enabled;
        let on = current.any();
        let introspection = !config.introspection.clients.is_empty();
        let asm = AuthorizationServerMetadata {
            issuer: &urls.issuer,
            jwks_uri: &urls.jwks,
            scopes_supported: scopes,
            response_types_supported: [],
            grant_types_supported: if on {
                vec![crate::vocab::JWT_BEARER_GRANT]
            } else {
                Vec::new()
            },
            token_endpoint: on.then_some(urls.token.as_str()),
            token_endpoint_auth_methods_supported: on.then_some(["none"]),
            service_documentation: &urls.auth_md,
            resource: &urls.resource,
            authorization_servers: [&urls.issuer],
            bearer_methods_supported: ["header"],
            revocation_endpoint: &urls.token_revocation,
            revocation_endpoint_auth_methods_supported: ["none"],
            introspection_endpoint: introspection.then_some(urls.introspection.as_str()),
            introspection_endpoint_auth_methods_supported: introspection
                .then_some(["client_secret_basic"]),
            agent_auth: AgentAuth {
                skill: &urls.auth_md,
                identity_endpoint: on.then_some(urls.identity.as_str()),
                claim_endpoint: on.then_some(urls.identity_claim.as_str()),
                events_endpoint: current.id_jag.then_some(urls.events.as_str()),
                register_uri: original.then_some(urls.register.as_str()),
                claim_uri: flows.claim().then_some(urls.claim.as_str()),
                revocation_uri: flows.id_jag.then_some(urls.revoke.as_str()),
                identity_types_supported: identity_types,
                anonymous,
                identity_assertion,
                events_supported: (flows.id_jag || current.id_jag)
                    .then_some(crate::vocab::EVENTS_SUPPORTED),
            },
        };
        Documents {
            protected_resource: to_json(&prm),
            authorization_server: to_json(&asm),
            auth_md: auth_md::render(config, urls).into(),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> bytes::Bytes {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec_pretty(v).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prm_url_is_path_inserted() {
        let u = Urls::new(&Config::default());
        assert_eq!(
            u.prm,
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/api"
        );
        assert_eq!(u.resource_path, "/api/");
        assert_eq!(u.whoami, "http://127.0.0.1:8080/api/whoami");
        assert!(
            u.prm_paths
                .contains(&"/.well-known/oauth-protected-resource/api".to_owned())
        );
        assert!(
            u.prm_paths
                .contains(&"/.well-known/oauth-protected-resource/api/".to_owned())
        );
        assert!(
            u.prm_paths
                .contains(&"/.well-known/oauth-protected-resource".to_owned())
        );
    }

    #[test]
    fn resource_without_trailing_slash() {
        let mut c = Config {
            resource: crate::config::ResourceConfig {
                identifier: Some("http://127.0.0.1:8080/v1".into()),
                ..Default::default()
            },
            ..Config::default()
        };
        c.resource.rules = None;
        c.validate().unwrap_or_else(|e| panic!("{e}"));
        let u = Urls::new(&c);
        assert_eq!(u.resource_path, "/v1/");
        assert_eq!(u.whoami, "http://127.0.0.1:8080/v1/whoami");
        assert_eq!(
            u.prm,
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/v1"
        );
    }
}
