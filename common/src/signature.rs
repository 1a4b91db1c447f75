//! Artifact signatures: ed25519 over an artifact's sha256, made by a release
//! owner with a key the coordinator never holds, checked by agents against
//! the public keys they were given (see `docs/artifacts.md`, "Signatures").
//!
//! Three small text files, each versioned by its first line, one
//! `field: value` per line (`#` comments and blank lines allowed, at most
//! [`MAX_FILE_BYTES`], every field required exactly once, unknown fields
//! refused):
//!
//! ```text
//! # KEY (secret, mode 0600)       # KEY.pub                  # FILE.sig
//! convoy-secret-key: 1            convoy-public-key: 1       convoy-signature: 1
//! key-id: 5d0c6a1f2e3b4c7d        key-id: 5d0c6a1f2e3b4c7d   key-id: 5d0c6a1f2e3b4c7d
//! ed25519-seed: <64 hex>          ed25519: <64 hex>          sha256: <64 hex>
//!                                                            ed25519: <128 hex>
//! ```
//!
//! - The **key id** is the first 16 hex digits of the sha256 of the 32-byte
//!   public key; a file whose key id is not its key's is refused.
//! - The **signed message** is [`signed_message`]: a fixed, versioned prefix
//!   and the artifact's lower-case sha256, so a signature means "the release
//!   owner vouches for exactly these bytes" and nothing else. Verification is
//!   `verify_strict` (no malleable signatures, no weak keys).
//!
//! Pure: no clock, no I/O, no randomness (a new key's seed comes from the
//! caller, `convoy artifact keygen` reads it from the OS).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Bytes a key or signature file may have.
pub const MAX_FILE_BYTES: usize = 4096;
/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;

const SECRET_HEADER: &str = "convoy-secret-key";
const PUBLIC_HEADER: &str = "convoy-public-key";
const SIGNATURE_HEADER: &str = "convoy-signature";

/// Why a key or signature file is refused, or a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The file is not in the expected format (line and reason).
    #[error("not a valid {what}: {message}")]
    Format { what: &'static str, message: String },
    /// The step carries no signature but one is required.
    #[error("unsigned: no signature for artifact sha256 {sha256}; a signature from a trusted key is required")]
    Unsigned { sha256: String },
    /// The signature is by a key the agent does not trust.
    #[error(
        "signed by an unknown key: key id {key_id} is not among this agent's trusted keys ({trusted}); \
         give the agent the release owner's public key with --trusted-key"
    )]
    UnknownKey { key_id: String, trusted: String },
    /// The signature covers other bytes than the artifact's.
    #[error(
        "tampered after signing: the signature (key id {key_id}) is for sha256 {signed}, but the artifact's \
         sha256 is {actual}"
    )]
    OtherContent { key_id: String, signed: String, actual: String },
    /// The signature does not verify under the trusted key.
    #[error("tampered signature: the ed25519 signature does not verify under trusted key {key_id}")]
    BadSignature { key_id: String },
}

fn format_err(what: &'static str, message: impl Into<String>) -> SignatureError {
    SignatureError::Format { what, message: message.into() }
}

/// The key id of a public key: 16 hex digits of its sha256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// What is signed for an artifact whose sha256 is `sha256` (lower-case hex).
pub fn signed_message(sha256: &str) -> Vec<u8> {
    format!("convoy artifact signature v1\nsha256 {}\n", sha256.to_ascii_lowercase()).into_bytes()
}

/// Parses `text` as `header: FORMAT` then exactly the fields `names`.
fn fields<const N: usize>(
    what: &'static str,
    header: &str,
    names: [&str; N],
    text: &str,
) -> Result<[String; N], SignatureError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format_err(what, format!("{} bytes, at most {MAX_FILE_BYTES}", text.len())));
    }
    let mut lines =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let parse = |n: usize, line: &str| -> Result<(String, String), SignatureError> {
        let (k, v) =
            line.split_once(':').ok_or_else(|| format_err(what, format!("line {n}: expected 'field: value'")))?;
        Ok((k.trim().to_string(), v.trim().to_string()))
    };
    let (n, first) = lines.next().ok_or_else(|| format_err(what, "empty"))?;
    let (k, v) = parse(n, first)?;
    if k != header {
        return Err(format_err(what, format!("line {n}: expected '{header}: {FORMAT}' first, found '{k}'")));
    }
    if v != FORMAT.to_string() {
        return Err(format_err(what, format!("line {n}: format {v:?} is not one this build reads ({FORMAT})")));
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (n, line) in lines {
        let (k, v) = parse(n, line)?;
        let i = names.iter().position(|f| *f == k).ok_or_else(|| {
            format_err(what, format!("line {n}: unknown field '{k}' (expected {})", names.join(", ")))
        })?;
        if out[i].replace(v).is_some() {
            return Err(format_err(what, format!("line {n}: '{k}' given twice")));
        }
    }
    let mut done: [String; N] = std::array::from_fn(|_| String::new());
    for (i, v) in out.into_iter().enumerate() {
        done[i] = v.ok_or_else(|| format_err(what, format!("missing field '{}'", names[i])))?;
    }
    Ok(done)
}

fn hex_bytes<const N: usize>(what: &'static str, field: &str, value: &str) -> Result<[u8; N], SignatureError> {
    let bytes = hex::decode(value).map_err(|e| format_err(what, format!("'{field}': not hex ({e})")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format_err(what, format!("'{field}': {} bytes, expected {N}", bytes.len())))
}

fn check_sha256(what: &'static str, value: &str) -> Result<String, SignatureError> {
    let v = value.to_ascii_lowercase();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(format_err(what, format!("'sha256': {value:?} is not 64 hex digits")))
    }
}

fn check_id(what: &'static str, written: &str, public: &VerifyingKey) -> Result<(), SignatureError> {
    let id = key_id(public);
    if written.eq_ignore_ascii_case(&id) {
        Ok(())
    } else {
        Err(format_err(what, format!("'key-id' {written} is not its key's ({id})")))
    }
}

/// A release owner's signing key (the secret half).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

impl SecretKey {
    /// The key made from 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn id(&self) -> String {
        key_id(&self.0.verifying_key())
    }

    /// The secret key file.
    pub fn to_text(&self) -> String {
        format!(
            "{SECRET_HEADER}: {FORMAT}\n# Keep this file off the coordinator. Public half: the .pub file beside it.\n\
             key-id: {}\ned25519-seed: {}\n",
            self.id(),
            hex::encode(self.0.to_bytes())
        )
    }

    pub fn parse(text: &str) -> Result<SecretKey, SignatureError> {
        const WHAT: &str = "secret key file";
        let [id, seed] = fields(WHAT, SECRET_HEADER, ["key-id", "ed25519-seed"], text)?;
        let key = SecretKey::from_seed(hex_bytes::<32>(WHAT, "ed25519-seed", &seed)?);
        check_id(WHAT, &id, &key.0.verifying_key())?;
        Ok(key)
    }

    /// The signature of the artifact whose content has `sha256`.
    pub fn sign(&self, sha256: &str) -> Result<ArtifactSignature, SignatureError> {
        let sha256 = check_sha256("artifact digest", sha256)?;
        let signature = self.0.sign(&signed_message(&sha256));
        Ok(ArtifactSignature { key_id: self.id(), sha256, signature: signature.to_bytes() })
    }
}

/// A public key an agent trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn id(&self) -> String {
        key_id(&self.0)
    }

    /// The public key file.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_HEADER}: {FORMAT}\nkey-id: {}\ned25519: {}\n", self.id(), hex::encode(self.0.as_bytes()))
    }

    pub fn parse(text: &str) -> Result<PublicKey, SignatureError> {
        const WHAT: &str = "public key file";
        let [id, key] = fields(WHAT, PUBLIC_HEADER, ["key-id", "ed25519"], text)?;
        let key = VerifyingKey::from_bytes(&hex_bytes::<32>(WHAT, "ed25519", &key)?)
            .map_err(|e| format_err(WHAT, format!("'ed25519': not a valid public key ({e})")))?;
        if key.is_weak() {
            return Err(format_err(WHAT, "'ed25519': a weak (small-order) key"));
        }
        check_id(WHAT, &id, &key)?;
        Ok(PublicKey(key))
    }
}

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSignature {
    pub key_id: String,
    /// Lower-case hex sha256 of the signed content.
    pub sha256: String,
    pub signature: [u8; 64],
}

impl ArtifactSignature {
    /// The signature file.
    pub fn to_text(&self) -> String {
        format!(
            "{SIGNATURE_HEADER}: {FORMAT}\nkey-id: {}\nsha256: {}\ned25519: {}\n",
            self.key_id,
            self.sha256,
            hex::encode(self.signature)
        )
    }

    pub fn parse(text: &str) -> Result<ArtifactSignature, SignatureError> {
        const WHAT: &str = "signature file";
        let [key_id, sha256, sig] = fields(WHAT, SIGNATURE_HEADER, ["key-id", "sha256", "ed25519"], text)?;
        if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format_err(WHAT, format!("'key-id': {key_id:?} is not 16 hex digits")));
        }
        Ok(ArtifactSignature {
            key_id: key_id.to_ascii_lowercase(),
            sha256: check_sha256(WHAT, &sha256)?,
            signature: hex_bytes::<64>(WHAT, "ed25519", &sig)?,
        })
    }
}

/// Checks that `signature` (a signature file's text; `None`: unsigned) is a
/// valid signature by one of `trusted` over content with `sha256`. Returns
/// the key id that signed. Each refusal says which case it is: unsigned,
/// unknown key, signed other content (tampered after signing), or a
/// signature that does not verify.
pub fn verify(signature: Option<&str>, sha256: &str, trusted: &[PublicKey]) -> Result<String, SignatureError> {
    let actual = sha256.trim().to_ascii_lowercase();
    let text = signature.filter(|s| !s.trim().is_empty()).ok_or(SignatureError::Unsigned { sha256: actual.clone() })?;
    let sig = ArtifactSignature::parse(text)?;
    let Some(key) = trusted.iter().find(|k| k.id() == sig.key_id) else {
        let ids: Vec<String> = trusted.iter().map(PublicKey::id).collect();
        let trusted = if ids.is_empty() { "none configured".to_string() } else { ids.join(", ") };
        return Err(SignatureError::UnknownKey { key_id: sig.key_id, trusted });
    };
    if sig.sha256 != actual {
        return Err(SignatureError::OtherContent { key_id: sig.key_id, signed: sig.sha256, actual });
    }
    key.0
        .verify_strict(&signed_message(&actual), &Signature::from_bytes(&sig.signature))
        .map_err(|_| SignatureError::BadSignature { key_id: sig.key_id.clone() })?;
    Ok(sig.key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn files_round_trip_and_are_checked() {
        let k = key(7);
        let again = SecretKey::parse(&k.to_text()).unwrap();
        assert_eq!(again.id(), k.id());
        assert_eq!(PublicKey::parse(&k.public().to_text()).unwrap(), k.public());
        let sig = k.sign(SHA).unwrap();
        assert_eq!(ArtifactSignature::parse(&sig.to_text()).unwrap(), sig);

        // A key id that is not the key's, a wrong version, an unknown field, a missing one.
        let other = k.public().to_text().replace(&k.id(), &key(8).id());
        assert!(PublicKey::parse(&other).unwrap_err().to_string().contains("is not its key's"));
        let v2 = sig.to_text().replace("convoy-signature: 1", "convoy-signature: 2");
        assert!(ArtifactSignature::parse(&v2).unwrap_err().to_string().contains("format \"2\""));
        let extra = format!("{}colour: blue\n", sig.to_text());
        assert!(ArtifactSignature::parse(&extra).unwrap_err().to_string().contains("unknown field 'colour'"));
        let missing: String =
            sig.to_text().lines().filter(|l| !l.starts_with("sha256")).map(|l| format!("{l}\n")).collect();
        assert!(ArtifactSignature::parse(&missing).unwrap_err().to_string().contains("missing field 'sha256'"));
        assert!(ArtifactSignature::parse(&"x".repeat(MAX_FILE_BYTES + 1)).is_err());
        assert!(PublicKey::parse(&k.to_text()).unwrap_err().to_string().contains("expected 'convoy-public-key: 1'"));
    }

    #[test]
    fn verify_says_which_refusal() {
        let (k, stranger) = (key(1), key(2));
        let trusted = [k.public()];
        let good = k.sign(SHA).unwrap().to_text();
        assert_eq!(verify(Some(&good), &SHA.to_ascii_uppercase(), &trusted).unwrap(), k.id());

        let e = verify(None, SHA, &trusted).unwrap_err();
        assert!(matches!(e, SignatureError::Unsigned { .. }) && e.to_string().starts_with("unsigned"), "{e}");

        let e = verify(Some(&stranger.sign(SHA).unwrap().to_text()), SHA, &trusted).unwrap_err();
        assert!(e.to_string().contains("unknown key") && e.to_string().contains(&stranger.id()), "{e}");

        let other = "0".repeat(64);
        let e = verify(Some(&good), &other, &trusted).unwrap_err();
        assert!(e.to_string().starts_with("tampered after signing"), "{e}");

        // The signed digest edited in the file: the signature no longer verifies.
        let edited = good.replace(SHA, &other);
        let e = verify(Some(&edited), &other, &trusted).unwrap_err();
        assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");

        let e = verify(Some(&good), SHA, &[]).unwrap_err();
        assert!(e.to_string().contains("none configured"), "{e}");
    }
}
