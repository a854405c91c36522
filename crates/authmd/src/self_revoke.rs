//! Self-revocation (RFC 7009): an agent that is done ends its own API key
//! or access token at `POST /oauth2/revoke`.
//!
//! The token authenticates itself: whoever holds a credential may end it.
//! Whether it is a live credential is decided by the API's own validation
//! (the same decision, cache and invalidation log), so an unknown, made-up
//! or already dead token costs no write. A refresh token is looked up by
//! the store instead (on SQLite on a reader first, so a made-up one never
//! waits for the writer). The answer is the same for every token (RFC 7009
//! §2.2: 200 for an invalid token too), so it reveals nothing about what
//! was presented.
//!
//! A registration whose last live credential is revoked this way is
//! `revoked` too: nothing of it could be used any more, an unclaimed one
//! must not be claimed into a registration without a credential, and an
//! agent that wants to continue registers again (for an agent-verified
//! registration the delegation is untouched, so a fresh ID-JAG does). One
//! with other live credentials (an agent-verified registration holding
//! several access tokens) is left as it is.

use crate::AuthMd;
use crate::audit::RequestMeta;
use crate::error::{Error, ProtocolError};
use crate::store::{SelfRevocation, SelfRevoked};
use crate::time::Timestamp;
use crate::validation::Validation;

impl AuthMd {
    /// Revokes the presented credential if it is live. `token` is the
    /// request's `token` parameter (or why it could not be read). `Ok` for
    /// any token, known or not.
    pub async fn revoke_own(
        &self,
        token: Result<String, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<(), Error> {
        let token = token?;
        let refresh = crate::token::recognize(&token, &[crate::token::SecretKind::RefreshToken]);
        // A refresh token (RFC 7009 §2: it ends its family and the grant)
        // is checked by the store; a credential by the API's validation.
        let (credential_id, credential) = match &refresh {
            Some(p) => (p.id(), p.hash),
            None => match self.validate(Some(&token), now).await? {
                Validation::Valid(record) => (record.credential_id.clone(), record.secret_hash),
                _ => return Ok(()),
            },
        };
        let outcome = self
            .store()
            .revoke_credential(SelfRevocation {
                credential_id,
                credential,
                now,
                meta: meta.clone(),
                refresh: refresh.is_some(),
            })
            .await?;
        if outcome != SelfRevoked::Nothing {
            crate::metrics::revocations("self", 1);
            if refresh.is_some() {
                // The grant's access tokens: read back from the log now.
                self.refresh_after_commit().await;
            } else {
                // This replica drops it at once; the others at their next
                // poll of the invalidation log.
                self.validator().forget(&credential);
            }
        }
        Ok(())
    }
}
