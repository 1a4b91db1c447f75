//! The `Signing` of a staged artifact step (archive, dpkg, agent_upgrade):
//! whether a signature is required and the signature file itself.

use convoy_common::model::Signing;
use convoy_common::signature::MAX_FILE_BYTES;
use convoy_proto::v1 as pb;

use crate::error::WireError;

/// `None` when nothing is required or signed (old peers send nothing either).
pub(crate) fn signing_to_proto(s: &Signing) -> Option<pb::Signing> {
    (!s.is_unset()).then(|| pb::Signing { required: s.required, signature: s.signature.clone().unwrap_or_default() })
}

/// A missing message is "not required, unsigned". The signature is only
/// bounded here; the agent parses and verifies it before installing.
pub(crate) fn signing_from_proto(field: &'static str, s: Option<&pb::Signing>) -> Result<Signing, WireError> {
    let Some(s) = s else { return Ok(Signing::default()) };
    if s.signature.len() > MAX_FILE_BYTES {
        return Err(WireError::invalid(
            field,
            format!("signature of {} bytes, at most {MAX_FILE_BYTES}", s.signature.len()),
        ));
    }
    Ok(Signing { required: s.required, signature: crate::non_empty(&s.signature) })
}
