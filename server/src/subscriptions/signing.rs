//! The webhook signing keys (PROTOCOL.md §6.5, §7.1): Ed25519 keys in PKCS#8
//! PEM files, published as a JWK Set; the first one signs.
//!
//! A key's `kid` is `ds_` and its RFC 7638 JWK thumbprint (SHA-256,
//! base64url): stable for the key's lifetime and unique in the set.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// The server's webhook signing keys.
///
/// ```
/// use durable_session_server::subscriptions::signing::WebhookKeys;
/// let keys = WebhookKeys::from_keys(vec![ed25519_dalek::SigningKey::from_bytes(&[7; 32])]);
/// let header = keys.signature_header(1_700_000_000, b"{}");
/// assert!(header.starts_with(&format!("t=1700000000,kid={},ed25519=", keys.kid())));
/// assert_eq!(keys.jwks()["keys"][0]["crv"], "Ed25519");
/// ```
pub struct WebhookKeys {
    /// The first signs; all are published.
    keys: Vec<(String, SigningKey)>,
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("WebhookKeys").field("kids", &kids).finish()
    }
}

/// What became of the key files at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Every file was read.
    Loaded,
    /// The first file did not exist: a new key was generated, to be written
    /// there ([`WebhookKeys::save_generated`]) once the server starts.
    Generated(PathBuf),
}

impl WebhookKeys {
    /// Keys given directly (tests); the first signs.
    pub fn from_keys(keys: Vec<SigningKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (kid_of(&k), k)).collect(),
        }
    }

    /// Reads the keys from PEM files (PKCS#8). The first one signs; the
    /// others are published only (rotation: keep an old key listed until no
    /// delivery it signed can still be replayed). For a missing first file a
    /// fresh random key is generated ([`KeyOrigin::Generated`]): write it with
    /// [`WebhookKeys::save_generated`] (not before the server is sure to
    /// start, so a refused start leaves no file behind).
    pub fn load(files: &[PathBuf]) -> Result<(Self, KeyOrigin), String> {
        let Some((first, rest)) = files.split_first() else {
            return Err("no webhook signing key file given".into());
        };
        let mut origin = KeyOrigin::Loaded;
        let mut keys = Vec::with_capacity(files.len());
        if first.exists() {
            keys.push(read_key(first)?);
        } else {
            let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            origin = KeyOrigin::Generated(first.clone());
            keys.push(key);
        }
        for file in rest {
            keys.push(read_key(file)?);
        }
        Ok((Self::from_keys(keys), origin))
    }

    /// Writes the signing key to `path` (mode 0600), which must not exist:
    /// a key [`WebhookKeys::load`] generated.
    pub fn save_generated(&self, path: &Path) -> Result<(), String> {
        write_key(path, &self.keys[0].1)
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        &self.keys[0].0
    }

    /// The `Webhook-Signature` header of `body` sent at `t` (Unix seconds):
    /// `t=<t>,kid=<kid>,ed25519=<base64url signature of "<t>.<body>">`.
    pub fn signature_header(&self, t: u64, body: &[u8]) -> String {
        let (kid, key) = &self.keys[0];
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let signature = key.sign(&signed);
        format!(
            "t={t},kid={kid},ed25519={}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The JWK Set of every key (`GET /v1/stream/__ds/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                    "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// `ds_` + the RFC 7638 thumbprint of the key's public JWK.
fn kid_of(key: &SigningKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    // The thumbprint's input: the required members, sorted, no spaces.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    format!("ds_{}", URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn read_key(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("{} is not an Ed25519 private key in PKCS#8 PEM: {e}", path.display()))
}

fn write_key(path: &Path, key: &SigningKey) -> Result<(), String> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode a webhook key: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    #[test]
    fn signatures_verify_with_the_published_key() {
        let keys = WebhookKeys::from_keys(vec![SigningKey::from_bytes(&[3; 32])]);
        let header = keys.signature_header(42, b"{\"a\":1}");
        let sig = header.rsplit_once("ed25519=").unwrap().1;
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let jwks = keys.jwks();
        let x = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert!(public.verify(b"42.{\"a\":1}", &sig).is_ok());
        assert!(public.verify(b"43.{\"a\":1}", &sig).is_err());
        assert!(keys.kid().starts_with("ds_"));
    }

    #[test]
    fn a_missing_key_file_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let (a, origin) = WebhookKeys::load(std::slice::from_ref(&path)).unwrap();
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        assert!(!path.exists(), "written only when asked");
        a.save_generated(&path).unwrap();
        assert!(a.save_generated(&path).is_err(), "never overwritten");
        let (b, origin) = WebhookKeys::load(&[path]).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(a.kid(), b.kid());
    }
}
