//! authmd's integration tests: one binary, a file per flow.

mod provider;
mod support;
mod upstream;

mod admin;
mod assertion;
mod blocks;
mod cache;
mod claim;
mod claim_browser;
mod claim_smtp;
mod cors;
mod current_dialect;
mod dialects;
mod discovery;
mod expiry;
mod followups;
mod forward_auth;
mod gateway;
mod hostile_id_jag;
mod id_jag;
mod introspect;
mod jwks;
mod linking;
mod middleware;
mod nginx;
mod rate_limits;
mod refusals;
mod register_anonymous;
mod replicas;
mod resource;
mod restart;
mod revoke;
mod self_revocation;
mod service_keys;
mod store_contract;
