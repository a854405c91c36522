//! The discovery documents as an agent reads them. Unknown members are
//! ignored (RFC 9728 §2, RFC 8414 §2); the later dialect's endpoint names
//! (`identity_endpoint`, `claim_endpoint`, `events_endpoint`) are read as
//! aliases of the names docs/protocol.md uses.

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
    pub agent_auth: AgentAuth,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAuth {
    #[serde(default)]
    pub skill: Option<String>,
    #[serde(alias = "identity_endpoint")]
    pub register_uri: String,
    #[serde(default, alias = "claim_endpoint")]
    pub claim_uri: Option<String>,
    #[serde(default, alias = "events_endpoint")]
    pub revocation_uri: Option<String>,
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
