//! JWT verification (and minting, for development and tests) with the
//! `jsonwebtoken` crate: HS256 shared secrets and EdDSA (Ed25519) public
//! keys, several at once, chosen by the token's `kid`.
//!
//! ```
//! use durable_session_server::auth::{Right, jwt::Keys};
//! let keys = Keys::hs256("dev", b"a shared secret of at least 32 bytes!").unwrap();
//! let token = keys.mint(None, "ada", &[("sessions/abc".into(), vec![Right::Read])], 3600).unwrap();
//! let ada = keys.verify(&token).unwrap();
//! assert_eq!(ada.sub, "ada");
//! assert!(ada.allows("sessions/abc", Right::Read));
//! assert!(keys.verify("not.a.token").is_err());
//! ```

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::{Denied, MAX_GRANTS, MAX_TOKEN_BYTES, Principal, Right, now_s};

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// One `{path, rights}` entry of the `grants` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantClaim {
    pub path: String,
    pub rights: Vec<String>,
}

/// The claims this server reads. Others are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub grants: Vec<GrantClaim>,
}

struct Key {
    kid: String,
    alg: Algorithm,
    /// Absent for an Ed25519 private key (it only signs).
    decoding: Option<DecodingKey>,
    /// Absent for an Ed25519 public key (it only verifies).
    encoding: Option<EncodingKey>,
}

/// The keys tokens may be signed with.
pub struct Keys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keys {
    // Key material never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.alg)).collect();
        f.debug_struct("Keys").field("kids", &kids).finish()
    }
}

fn fail(message: impl Into<String>) -> Denied {
    Denied::Unauthorized(message.into())
}

/// Parses `PATH:RIGHT,RIGHT` (the CLI's `--grant`).
///
/// ```
/// use durable_session_server::auth::{Right, jwt::parse_grant};
/// assert_eq!(parse_grant("sessions/*:read,agent").unwrap(), ("sessions/*".into(), vec![Right::Read, Right::Agent]));
/// assert!(parse_grant("sessions/abc:fly").is_err());
/// assert!(parse_grant("no-rights").is_err());
/// ```
pub fn parse_grant(spec: &str) -> Result<(String, Vec<Right>), String> {
    let (path, rights) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("grant {spec:?}: expected PATH:RIGHT[,RIGHT…]"))?;
    if path.is_empty() {
        return Err(format!("grant {spec:?}: the path is empty"));
    }
    let rights = rights
        .split(',')
        .map(|r| {
            Right::parse(r.trim()).ok_or_else(|| {
                format!("grant {spec:?}: unknown right {r:?} (read, append, control, create, delete, agent)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((path.to_owned(), rights))
}

impl Keys {
    /// One HS256 key.
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, String> {
        let mut keys = Keys { keys: Vec::new() };
        keys.add_hs256(kid, secret)?;
        Ok(keys)
    }

    /// Loads keys from `--jwt-key` specs: `hs256:KID:file:PATH`,
    /// `hs256:KID:env:VAR` (the secret), or `ed25519:KID:file:PATH` (a PEM
    /// file: a public key verifies, a private key signs).
    pub fn load(specs: &[String]) -> Result<Self, String> {
        let mut keys = Keys { keys: Vec::new() };
        for spec in specs {
            let mut parts = spec.splitn(4, ':');
            let (Some(alg), Some(kid), Some(kind), Some(source)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "--jwt-key {}: expected ALG:KID:file:PATH or ALG:KID:env:VAR",
                    spec.split(':').next().unwrap_or_default()
                ));
            };
            let material = match kind {
                "file" => {
                    std::fs::read(source).map_err(|e| format!("--jwt-key {alg}:{kid}: cannot read {source}: {e}"))?
                }
                "env" => std::env::var(source)
                    .map_err(|_| format!("--jwt-key {alg}:{kid}: environment variable {source} is not set"))?
                    .into_bytes(),
                other => {
                    return Err(format!(
                        "--jwt-key {alg}:{kid}: source must be file or env, not {other:?}"
                    ));
                }
            };
            match alg {
                "hs256" => keys.add_hs256(kid, material.trim_ascii())?,
                "ed25519" => keys.add_ed25519_pem(kid, &material)?,
                other => return Err(format!("--jwt-key: algorithm must be hs256 or ed25519, not {other:?}")),
            }
        }
        if keys.keys.is_empty() {
            return Err("no keys given".into());
        }
        Ok(keys)
    }

    fn check_kid(&self, kid: &str) -> Result<(), String> {
        if kid.is_empty() {
            return Err("a key id (kid) must not be empty".into());
        }
        if self.keys.iter().any(|k| k.kid == kid) {
            return Err(format!("key id {kid:?} is given twice"));
        }
        Ok(())
    }

    fn add_hs256(&mut self, kid: &str, secret: &[u8]) -> Result<(), String> {
        self.check_kid(kid)?;
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "hs256 key {kid:?}: the secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
            ));
        }
        let bad = |e: jsonwebtoken::errors::Error| format!("hs256 key {kid:?}: {e}");
        self.keys.push(Key {
            kid: kid.to_owned(),
            alg: Algorithm::HS256,
            decoding: Some(DecodingKey::from_secret(secret).map_err(bad)?),
            encoding: Some(EncodingKey::from_secret(secret).map_err(bad)?),
        });
        Ok(())
    }

    /// Adds an Ed25519 key from a PEM file's text.
    pub fn add_ed25519_pem(&mut self, kid: &str, pem: &[u8]) -> Result<(), String> {
        self.check_kid(kid)?;
        let bad = |e: jsonwebtoken::errors::Error| format!("ed25519 key {kid:?}: not an Ed25519 PEM key: {e}");
        let private = pem.windows(11).any(|w| w == b"PRIVATE KEY");
        let (decoding, encoding) = if private {
            (None, Some(EncodingKey::from_ed_pem(pem).map_err(bad)?))
        } else {
            (Some(DecodingKey::from_ed_pem(pem).map_err(bad)?), None)
        };
        self.keys.push(Key {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            decoding,
            encoding,
        });
        Ok(())
    }

    /// Whether some key can verify tokens (a server needs one).
    pub fn can_verify(&self) -> bool {
        self.keys.iter().any(|k| k.decoding.is_some())
    }

    /// Verifies a token: size, header, key by `kid`, algorithm of that key
    /// only, signature, `exp` (required), `nbf`, and the grants.
    pub fn verify(&self, token: &str) -> Result<Principal, Denied> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(fail(format!("the token is longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| fail("the token is not a well-formed JWT"))?;
        let verifiers: Vec<&Key> = self.keys.iter().filter(|k| k.decoding.is_some()).collect();
        let key = match &header.kid {
            Some(kid) => verifiers
                .iter()
                .find(|k| &k.kid == kid)
                .ok_or_else(|| fail("the token's key id (kid) is not one of this server's keys"))?,
            None if verifiers.len() == 1 => &verifiers[0],
            None => return Err(fail("the token has no key id (kid) and this server has several keys")),
        };
        if header.alg != key.alg {
            return Err(fail("the token's algorithm does not match its key"));
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let Some(decoding) = &key.decoding else {
            return Err(fail("the token's key cannot verify"));
        };
        let data = jsonwebtoken::decode::<Claims>(token, decoding, &validation).map_err(|e| {
            fail(match e.kind() {
                ErrorKind::ExpiredSignature => "the access token has expired",
                ErrorKind::ImmatureSignature => "the access token is not valid yet (nbf)",
                ErrorKind::InvalidSignature => "the token's signature is not valid",
                ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is not valid",
            })
        })?;
        let claims = data.claims;
        if claims.grants.len() > MAX_GRANTS {
            return Err(fail(format!("the token has more than {MAX_GRANTS} grants")));
        }
        if claims.sub.is_empty() {
            return Err(fail("the token's sub is empty"));
        }
        let grants = claims
            .grants
            .into_iter()
            .map(|g| {
                let rights = g
                    .rights
                    .iter()
                    .map(|r| Right::parse(r).ok_or_else(|| fail(format!("the token grants an unknown right {r:?}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((g.path, rights))
            })
            .collect::<Result<Vec<_>, Denied>>()?;
        Ok(Principal::new(claims.sub, claims.exp, grants))
    }

    /// Mints a token valid for `ttl_s` seconds, signed with the key `kid` (or
    /// the first key that can sign). For development, scripts and tests: in
    /// production the app's backend mints tokens.
    pub fn mint(
        &self,
        kid: Option<&str>,
        sub: &str,
        grants: &[(String, Vec<Right>)],
        ttl_s: u64,
    ) -> Result<String, String> {
        let now = now_s();
        self.mint_claims(
            kid,
            &Claims {
                sub: sub.to_owned(),
                exp: now + ttl_s,
                nbf: None,
                iat: Some(now),
                grants: grants
                    .iter()
                    .map(|(path, rights)| GrantClaim {
                        path: path.clone(),
                        rights: rights.iter().map(|r| r.as_str().to_owned()).collect(),
                    })
                    .collect(),
            },
        )
    }

    /// Mints a token with exactly these claims.
    pub fn mint_claims(&self, kid: Option<&str>, claims: &Claims) -> Result<String, String> {
        let key = self
            .keys
            .iter()
            .filter(|k| k.encoding.is_some())
            .find(|k| kid.is_none_or(|kid| k.kid == kid))
            .ok_or_else(|| match kid {
                Some(kid) => format!("no signing key with id {kid:?} (Ed25519 public keys cannot sign)"),
                None => "no key can sign (Ed25519 public keys cannot sign)".to_owned(),
            })?;
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        let encoding = key.encoding.as_ref().ok_or("the key cannot sign")?;
        jsonwebtoken::encode(&header, claims, encoding).map_err(|e| format!("cannot sign the token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_rejections() {
        let keys = Keys::hs256("k1", SECRET).unwrap();
        let t = keys
            .mint(None, "ada", &[("sessions/*".into(), vec![Right::Read])], 60)
            .unwrap();
        assert!(keys.verify(&t).unwrap().allows("sessions/x", Right::Read));
        // Tampered payload.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = "eyJzdWIiOiJldmUiLCJleHAiOjQxMDI0NDQ4MDAsImdyYW50cyI6W3sicGF0aCI6IioiLCJyaWdodHMiOlsicmVhZCJdfV19";
        parts[1] = forged;
        assert!(keys.verify(&parts.join(".")).is_err());
        // Expired.
        let old = keys
            .mint_claims(
                None,
                &Claims {
                    sub: "ada".into(),
                    exp: 1,
                    nbf: None,
                    iat: None,
                    grants: vec![],
                },
            )
            .unwrap();
        assert_eq!(
            keys.verify(&old),
            Err(Denied::Unauthorized("the access token has expired".into()))
        );
        // Another key.
        let other = Keys::hs256("k1", b"another secret of thirty-two bytes!!").unwrap();
        assert!(keys.verify(&other.mint(None, "ada", &[], 60).unwrap()).is_err());
        // Too long.
        assert!(keys.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn weak_secrets_and_bad_specs_are_refused() {
        assert!(Keys::hs256("k", b"short").is_err());
        assert!(Keys::load(&["hs256:k".into()]).is_err());
        assert!(Keys::load(&["rsa:k:file:/dev/null".into()]).is_err());
        assert!(Keys::load(&["hs256:k:env:DS_TEST_SURELY_UNSET_VAR".into()]).is_err());
        assert!(Keys::load(&[]).is_err());
    }

    #[test]
    fn unknown_rights_are_refused() {
        let keys = Keys::hs256("k1", SECRET).unwrap();
        let t = keys
            .mint_claims(
                None,
                &Claims {
                    sub: "ada".into(),
                    exp: now_s() + 60,
                    nbf: None,
                    iat: None,
                    grants: vec![GrantClaim {
                        path: "*".into(),
                        rights: vec!["admin".into()],
                    }],
                },
            )
            .unwrap();
        assert!(keys.verify(&t).is_err());
    }
}
