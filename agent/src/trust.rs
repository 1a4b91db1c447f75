//! Which artifacts the agent installs only with a valid signature, and the
//! check itself (format and cases: [`convoy_common::signature`]).
//!
//! A staged artifact needs a valid ed25519 signature from one of the
//! agent's trusted keys (`--trusted-key`) when:
//! - it is an agent build (`agent_upgrade` steps): always, whatever the plan
//!   or the coordinator says, so a coordinator that is taken over cannot push
//!   an unsigned agent binary;
//! - its step requires one (the plan's `require_signature: true`, on the
//!   step or its group);
//! - the agent requires one for everything (`--require-signatures`).
//!
//! The check runs on the agent, before anything is fetched or installed,
//! against the sha256 the step carries; the download (or the local file) is
//! then checked against that same sha256 as always, so the bytes installed
//! are the bytes signed. A refusal fails the step with a message saying
//! which case it is: unsigned, signed by an unknown key, tampered after
//! signing (the signature is over other content), or a signature that does
//! not verify; nothing is installed.

use std::sync::Arc;

use convoy_common::model::Signing;
#[cfg(doc)]
use convoy_common::model::StepOutcome;
use convoy_common::signature::{PublicKey, verify};

/// The agent's signature policy.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Release owners' public keys.
    pub keys: Arc<[PublicKey]>,
    /// `--require-signatures`.
    pub require_all: bool,
}

/// Why an artifact must be signed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An agent build: always.
    AgentBuild,
    /// Any other artifact: when the step or the agent requires it.
    IfRequired,
}

impl Trust {
    pub fn new(keys: Vec<PublicKey>, require_all: bool) -> Trust {
        Trust { keys: keys.into(), require_all }
    }

    /// Checks `signing` of the artifact `what` with content `sha256`.
    /// `Ok(Some(key id))` when it was checked and holds, `Ok(None)` when no
    /// signature is needed; otherwise why the step fails (use
    /// [`StepOutcome::failed`]).
    pub fn check(&self, need: Need, signing: &Signing, sha256: &str, what: &str) -> Result<Option<String>, String> {
        let required = match need {
            Need::AgentBuild => true,
            Need::IfRequired => signing.required || self.require_all,
        };
        if !required {
            return Ok(None);
        }
        match verify(signing.signature.as_deref(), sha256, &self.keys) {
            Ok(id) => {
                tracing::info!(%what, key_id = %id, "artifact signature verified");
                Ok(Some(id))
            }
            Err(e) => {
                tracing::warn!(%what, "artifact refused: {e}");
                Err(format!("{what}: signature check refused it: {e}; nothing installed"))
            }
        }
    }
}
