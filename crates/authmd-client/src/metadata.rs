//! The discovery documents as an agent reads them. Unknown members are
//! ignored (RFC 9728 §2, RFC 8414 §2). Both dialects' endpoint names are
//! read: the original's (`register_uri`, `claim_uri`, `revocation_uri`, as
//! docs/protocol.md uses them) and the current one's (`identity_endpoint`,
//! `claim_endpoint`, `events_endpoint`, plus `token_endpoint` at the top
//! level); a service may publish both sets.

use serde::{Deserialize, Serialize};

/// RFC 9728 protected resource metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedResourceMetadata {
    pub resource: String,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub bearer_methods_supported: Vec<String>,
    #[serde(default)]
    pub resource_documentation: Option<String>,
}

/// RFC 8414 metadata with the `agent_auth` block (required here: a service
/// without it is not agent-ready).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationServerMetadata {
    /// Required by RFC 8414 §2, but services built from the reference
    /// implementation leave it out; see `Client::authorization_server_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Kept by authmd (and the reference) for compatibility.
    #[serde(default)]
    pub resource: Option<String>,
    /// RFC 7009: where an agent ends its own credential.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 8414: where the current dialect exchanges an identity assertion
    /// for an access token (RFC 7523 jwt-bearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_types_supported: Vec<String>,
    pub agent_auth: AgentAuth,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAuth {
    #[serde(default)]
    pub skill: Option<String>,
    /// The original dialect's registration endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_uri: Option<String>,
    /// The current dialect's registration endpoint; its presence selects
    /// the current dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_uri: Option<String>,
    /// The current dialect's claim endpoint (`/complete` appended to finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_endpoint: Option<String>,
    /// Where a provider sends logout tokens (original dialect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_uri: Option<String>,
    /// Where a provider sends security event tokens (current dialect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_endpoint: Option<String>,
    #[serde(default)]
    pub identity_types_supported: Vec<String>,
    #[serde(default)]
    pub anonymous: Option<CredentialTypes>,
    #[serde(default)]
    pub identity_assertion: Option<IdentityAssertion>,
    #[serde(default)]
    pub events_supported: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialTypes {
    #[serde(default)]
    pub credential_types_supported: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityAssertion {
    #[serde(default)]
    pub assertion_types_supported: Vec<String>,
    #[serde(default)]
    pub credential_types_supported: Vec<String>,
}
