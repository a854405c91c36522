//! authmd's integration tests: one binary, a file per flow.

mod provider;
mod support;

mod admin;
mod blocks;
mod cache;
mod claim;
mod claim_browser;
mod claim_smtp;
mod discovery;
mod expiry;
mod followups;
mod hostile_id_jag;
mod id_jag;
mod jwks;
mod middleware;
mod rate_limits;
mod refusals;
mod register_anonymous;
mod replicas;
mod resource;
mod restart;
mod revoke;
mod store_contract;
