//! JWT authentication (jsonwebtoken): HS256 shared secrets, RS256/ES256 public keys (PEM) and
//! JWKS files with `kid` selection. Checks signature, `exp`, `nbf` (with leeway), `iss`, `aud`,
//! against each key's own allow-list of algorithms (never the token header's word alone).
//! Verified claims are forwarded upstream (e.g. `sub` → `x-user-id`, as a header on proxy routes
//! and gRPC metadata on transcoded ones) after client-sent copies are removed.
//!
//! Missing token → 401 with `WWW-Authenticate: Bearer`; invalid or expired → 401 with
//! `error="invalid_token"`; valid but without the required scope → 403 `insufficient_scope`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::Code;

use crate::gateway::config::AuthConfig;
use crate::gateway::status::GwError;
use crate::gateway::{GwRequest, GwResponse};

/// Shortest HMAC secret accepted: as long as the SHA-256 output (RFC 7518 §3.2). An empty or
/// short secret would let anyone who guesses it mint tokens.
pub const MIN_HS_SECRET: usize = 32;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The verified JWT subject, left by the auth layer in the request's extensions: the identity
/// a rate limit (`key = "sub"`) and a private cache entry count against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

/// Claims to forward upstream, left by the auth layer in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ForwardedClaims(pub Vec<(HeaderName, HeaderValue)>);

/// One verification key.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// The verifier's rules with this key's algorithms, built once (a `Validation` holds hash
    /// sets: cloning one per request was a fifth of an HS256 verification).
    validation: Validation,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token (401 with a plain challenge).
    Missing(String),
    /// A token that does not verify (401 `invalid_token`).
    Invalid(String),
    /// A valid token without the required scope (403).
    Forbidden(String),
}

/// Verifies tokens against the configured keys and rules.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<Key>,
    required_scope: Option<String>,
    forward: Vec<(String, HeaderName)>,
    public_paths: Vec<String>,
}

fn parse_alg(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        other => Err(format!(
            "algorithm {other:?} is not supported (HS256/384/512, RS256/384/512, ES256/384)"
        )),
    }
}

/// The algorithm a JWKS key names, when it is one we verify.
fn jwk_alg(alg: jsonwebtoken::jwk::KeyAlgorithm) -> Option<Algorithm> {
    use jsonwebtoken::jwk::KeyAlgorithm as K;
    Some(match alg {
        K::HS256 => Algorithm::HS256,
        K::HS384 => Algorithm::HS384,
        K::HS512 => Algorithm::HS512,
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        _ => return None,
    })
}

/// The kind of key an algorithm verifies with; one key serves one family only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// HS*: a shared secret.
    Hmac,
    /// RS*: an RSA public key.
    Rsa,
    /// ES*: an EC public key.
    Ec,
}

impl Family {
    /// The family of one of the algorithms [`parse_alg`] accepts.
    fn of(alg: Algorithm) -> Family {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            _ => Family::Rsa,
        }
    }
}

/// Refuses a token whose header lists critical parameters (`crit`, RFC 7515 §4.1.11): this
/// gateway understands none, so it must not accept such a token. The header is parsed only
/// when its bytes could hold the name (plainly or escaped).
fn refuse_crit(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    let encoded = token.split('.').next().unwrap_or_default();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // Headers are small: decode on the stack, allocating only for an unusually long one.
    let mut stack = [0u8; 512];
    let heap;
    let raw: &[u8] = match engine.decode_slice(encoded, &mut stack) {
        Ok(n) => &stack[..n],
        Err(_) => match engine.decode(encoded) {
            Ok(v) => {
                heap = v;
                &heap
            }
            Err(_) => return Ok(()), // decode_header accepted it; the signature check decides
        },
    };
    let may_name_crit = raw.windows(4).any(|w| w == b"crit") || raw.contains(&b'\\');
    if may_name_crit
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw)
            .is_ok_and(|h| h.contains_key("crit"))
    {
        return Err(AuthError::Invalid(
            "the token has critical header parameters (crit) this gateway does not understand"
                .into(),
        ));
    }
    Ok(())
}

/// One `[[auth.keys]]` entry: a secret for HS*, a PEM public key file for RS*/ES*.
fn configured_key(k: &crate::gateway::config::AuthKey) -> Result<Key, String> {
    let algorithms = k
        .algorithms
        .iter()
        .map(|a| parse_alg(a))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(&first) = algorithms.first() else {
        return Err("algorithms must list at least one algorithm".into());
    };
    let family = Family::of(first);
    if algorithms.iter().any(|&a| Family::of(a) != family) {
        return Err("algorithms of one key must be of one family (HS, RS or ES)".into());
    }
    let key = match (&k.secret, &k.public_key_file, family) {
        (Some(secret), None, Family::Hmac) if secret.len() < MIN_HS_SECRET => {
            return Err(format!(
                "an HS secret must be at least {MIN_HS_SECRET} bytes (RFC 7518 §3.2); this one has {}",
                secret.len()
            ));
        }
        (Some(secret), None, Family::Hmac) => DecodingKey::from_secret(secret.as_bytes()),
        (None, Some(_), Family::Hmac) => {
            return Err("an HS key takes `secret`, not a public key file".into());
        }
        (None, Some(path), family) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let parsed = match family {
                Family::Ec => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            };
            parsed.map_err(|e| format!("{}: not a usable public key ({e})", path.display()))?
        }
        _ => return Err("give `secret` (HS*) or `public_key_file` (RS*/ES*)".into()),
    };
    Ok(Key {
        kid: k.kid.clone(),
        key,
        algorithms,
        validation: Validation::default(), // set by the caller, with the shared rules
    })
}

/// The keys of a JWKS file, each with the one algorithm it names.
fn jwks_keys(path: &std::path::Path) -> Result<Vec<Key>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("auth.jwks_file {}: {e}", path.display()))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("auth.jwks_file {}: not a JWKS ({e})", path.display()))?;
    set.keys
        .iter()
        .map(|jwk| {
            let kid = jwk.common.key_id.clone();
            let alg =
                jwk.common.key_algorithm.and_then(jwk_alg).ok_or_else(|| {
                    format!("auth.jwks_file: key {kid:?} names no supported \"alg\"")
                })?;
            if let jsonwebtoken::jwk::AlgorithmParameters::OctetKey(oct) = &jwk.algorithm {
                use base64::Engine;
                let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(oct.value.trim_end_matches('='))
                    .map_or(0, |k| k.len());
                if len < MIN_HS_SECRET {
                    return Err(format!(
                        "auth.jwks_file: key {kid:?}: an HS secret must be at least \
                         {MIN_HS_SECRET} bytes (RFC 7518 §3.2); this one has {len}"
                    ));
                }
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("auth.jwks_file: key {kid:?}: {e}"))?;
            Ok(Key {
                kid,
                key,
                algorithms: vec![alg],
                validation: Validation::default(), // set by the caller, with the shared rules
            })
        })
        .collect()
}

/// The rules every token meets: `exp` required, `nbf` checked, leeway, issuer and audience.
fn validation(cfg: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = cfg.leeway.0.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
    }
    match &cfg.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

impl Verifier {
    /// Loads the keys (secrets, PEM files, JWKS files) of `cfg`. Errors name the key.
    pub fn new(cfg: &AuthConfig) -> Result<Verifier, String> {
        let mut keys = cfg
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| configured_key(k).map_err(|m| format!("auth.keys[{i}]: {m}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &cfg.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        if keys.is_empty() {
            return Err("auth: no key configured (auth.keys or auth.jwks_file)".into());
        }
        let validation = validation(cfg);
        for k in &mut keys {
            k.validation = validation.clone();
            k.validation.algorithms = k.algorithms.clone();
        }
        let forward = cfg
            .forward_claims
            .iter()
            .map(|(claim, header)| {
                HeaderName::try_from(header.as_str())
                    .map(|h| (claim.clone(), h))
                    .map_err(|_| {
                        format!("auth.forward_claims.{claim}: {header:?} is not a header name")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier {
            keys,
            required_scope: cfg.required_scope.clone().filter(|s| !s.is_empty()),
            forward,
            public_paths: cfg.public_paths.clone(),
        })
    }

    /// Whether `path` skips authentication.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    /// The token of an `Authorization: Bearer` header (exactly one).
    fn bearer<'a>(&self, headers: &'a http::HeaderMap) -> Result<&'a str, AuthError> {
        let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = all
            .next()
            .ok_or_else(|| AuthError::Missing("missing bearer token".into()))?;
        if all.next().is_some() {
            return Err(AuthError::Invalid(
                "more than one Authorization header".into(),
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| AuthError::Invalid("Authorization is not text".into()))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing(format!(
                "the {scheme} scheme is not accepted; use Bearer"
            )));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing("missing bearer token".into()));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid(format!(
                "token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        Ok(token)
    }

    /// Verifies the request's token; returns its claims.
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
        let token = self.bearer(headers)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        refuse_crit(token)?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| AuthError::Invalid(format!("unknown key id {kid:?}")))?,
            None => self
                .keys
                .iter()
                .find(|k| k.algorithms.contains(&header.alg))
                .ok_or_else(|| {
                    AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg))
                })?,
        };
        // The key's allow-list decides, whatever the header says.
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted for this key",
                header.alg
            )));
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &key.validation,
        )
        .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if let Some(serde_json::Value::String(sub)) = claims.get("sub")
            && sub.chars().any(char::is_control)
        {
            // It could not travel upstream as a header: refused, not forwarded without it.
            return Err(AuthError::Invalid(
                "the token's subject contains control characters".into(),
            ));
        }
        if let Some(scope) = &self.required_scope {
            let has = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.split_whitespace().any(|x| x == scope),
                serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(scope)),
                _ => false,
            };
            if !claims
                .get("scope")
                .or_else(|| claims.get("scp"))
                .or_else(|| claims.get("roles"))
                .is_some_and(has)
            {
                return Err(AuthError::Forbidden(format!(
                    "the token lacks the required scope {scope:?}"
                )));
            }
        }
        Ok(claims)
    }

    /// Replaces client-sent copies of the forwarded headers with the verified claims.
    fn forward(&self, req: &mut GwRequest, claims: &serde_json::Map<String, serde_json::Value>) {
        let mut forwarded = ForwardedClaims::default();
        for (claim, header) in &self.forward {
            req.parts.headers.remove(header);
            let value = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.parts.headers.insert(header.clone(), v.clone());
                forwarded.0.push((header.clone(), v));
            }
        }
        if let Some(serde_json::Value::String(sub)) = claims.get("sub") {
            if let Some(note) = req
                .parts
                .extensions
                .get::<crate::gateway::observe::observer::Observed>()
            {
                note.subject(sub);
            }
            req.parts.extensions.insert(Subject(sub.clone()));
        }
        req.parts.extensions.insert(forwarded);
    }
}

fn refuse(err: AuthError) -> GwResponse {
    let (status, code, message, challenge) = match err {
        AuthError::Missing(m) => (
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            m,
            "Bearer realm=\"gwbench\"".to_string(),
        ),
        AuthError::Invalid(m) => {
            let desc = m.replace('"', "'");
            let challenge = format!(
                "Bearer realm=\"gwbench\", error=\"invalid_token\", error_description=\"{desc}\""
            );
            (
                StatusCode::UNAUTHORIZED,
                Code::Unauthenticated,
                m,
                challenge,
            )
        }
        AuthError::Forbidden(m) => {
            let challenge = "Bearer realm=\"gwbench\", error=\"insufficient_scope\"".to_string();
            (StatusCode::FORBIDDEN, Code::PermissionDenied, m, challenge)
        }
    };
    let mut resp = GwError::http(status, code, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

// ===== Auth =====

/// Requires a valid JWT: refuses with 401/403, or forwards the verified claims.
#[derive(Debug, Clone)]
pub struct Auth {
    verifier: Arc<Verifier>,
}

impl Auth {
    /// A policy checking tokens with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Auth { verifier }
    }
}

/// The auth middleware: [`Auth`] run by the policy service.
pub type AuthLayer = super::PolicyLayer<Auth>;

impl super::Policy for Auth {
    type State = ();

    fn on_request(&self, req: &mut GwRequest) -> super::Decision<()> {
        if !self.verifier.is_public(req.parts.uri.path()) {
            match self.verifier.verify(&req.parts.headers) {
                Ok(claims) => self.verifier.forward(req, &claims),
                Err(e) => return super::Decision::Now(Err(Box::new(refuse(e)))),
            }
        }
        super::Decision::Now(Ok(()))
    }

    fn on_response(&self, (): (), _resp: &mut GwResponse) {}
}

// ===== minting (gwbench token) =====

/// Mints a token signed with an HS* secret or an RS*/ES* private key (PEM).
pub fn mint(
    alg: &str,
    key: &[u8],
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<String, String> {
    let alg = parse_alg(alg)?;
    let encoding = match format!("{alg:?}").get(..2) {
        Some("HS") => jsonwebtoken::EncodingKey::from_secret(key),
        Some("RS") => jsonwebtoken::EncodingKey::from_rsa_pem(key)
            .map_err(|e| format!("not an RSA private key: {e}"))?,
        _ => jsonwebtoken::EncodingKey::from_ec_pem(key)
            .map_err(|e| format!("not an EC private key: {e}"))?,
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::{AuthConfig, AuthKey, TextDuration};
    use base64::Engine;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    const TEST_SECRET: &str = "a-test-secret-of-thirty-two-bytes";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn cfg() -> AuthConfig {
        let mut forward = std::collections::BTreeMap::new();
        forward.insert("sub".to_string(), "x-user-id".to_string());
        AuthConfig {
            issuer: Some("gwbench".into()),
            audience: Some("gwbench-api".into()),
            leeway: TextDuration(Duration::from_secs(0)),
            required_scope: None,
            public_paths: vec!["/public/".into()],
            forward_claims: forward,
            jwks_file: None,
            keys: vec![
                AuthKey {
                    kid: Some("hs".into()),
                    algorithms: vec!["HS256".into()],
                    secret: Some(TEST_SECRET.into()),
                    public_key_file: None,
                },
                AuthKey {
                    kid: Some("rs".into()),
                    algorithms: vec!["RS256".into()],
                    secret: None,
                    public_key_file: Some(format!("{FIX}rsa_public.pem").into()),
                },
                AuthKey {
                    kid: Some("es".into()),
                    algorithms: vec!["ES256".into()],
                    secret: None,
                    public_key_file: Some(format!("{FIX}ec_public.pem").into()),
                },
            ],
        }
    }

    fn claims(exp_in: i64) -> serde_json::Value {
        serde_json::json!({"sub": "alice", "iss": "gwbench", "aud": "gwbench-api", "exp": now() + exp_in, "scope": "read write"})
    }

    fn headers(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIX}{name}")).unwrap()
    }

    #[test]
    fn valid_tokens_of_each_algorithm_verify() {
        let v = Verifier::new(&cfg()).unwrap();
        let hs = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &claims(60)).unwrap();
        let rs = mint("RS256", &pem("rsa_private.pem"), Some("rs"), &claims(60)).unwrap();
        let es = mint("ES256", &pem("ec_private.pem"), Some("es"), &claims(60)).unwrap();
        for t in [hs, rs, es] {
            assert_eq!(v.verify(&headers(&t)).unwrap()["sub"], "alice");
        }
        // Without a kid, the key is chosen by algorithm among those that allow it.
        let no_kid = mint("HS256", TEST_SECRET.as_bytes(), None, &claims(60)).unwrap();
        assert!(v.verify(&headers(&no_kid)).is_ok());
    }

    #[test]
    fn critical_headers_and_subjects_with_control_characters_are_refused() {
        let v = Verifier::new(&cfg()).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        // Signed with the right key, so only what they say is wrong.
        let signed = |header: &str, claims: &serde_json::Value| {
            let message = format!("{}.{}", b64(header), b64(&claims.to_string()));
            let key = jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes());
            let sig =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{message}.{sig}")
        };
        let plain = signed(r#"{"alg":"HS256","kid":"hs"}"#, &claims(60));
        assert!(
            v.verify(&headers(&plain)).is_ok(),
            "the control case verifies"
        );
        for header in [
            r#"{"alg":"HS256","kid":"hs","crit":["exp"]}"#,
            r#"{"alg":"HS256","kid":"hs","cr\u0069t":["x"]}"#,
        ] {
            let t = signed(header, &claims(60));
            assert!(
                matches!(v.verify(&headers(&t)), Err(AuthError::Invalid(m)) if m.contains("crit")),
                "{header}"
            );
        }
        for sub in ["alice\r\nx-admin: 1", "bob\0", "eve\n"] {
            let mut c = claims(60);
            c["sub"] = serde_json::json!(sub);
            let t = signed(r#"{"alg":"HS256","kid":"hs"}"#, &c);
            assert!(
                matches!(v.verify(&headers(&t)), Err(AuthError::Invalid(_))),
                "{sub:?}"
            );
        }
    }

    #[test]
    fn the_attack_list_is_refused() {
        let v = Verifier::new(&cfg()).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let body = b64(&claims(60).to_string());
        let alg_none = format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        // HS256 signed with the RSA public key as the secret, claiming the RSA key's kid.
        let confused = mint("HS256", &pem("rsa_public.pem"), Some("rs"), &claims(60)).unwrap();
        let confused_no_kid = mint("HS256", &pem("rsa_public.pem"), None, &claims(60)).unwrap();
        let expired = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &claims(-10)).unwrap();
        let mut nbf = claims(60);
        nbf["nbf"] = serde_json::json!(now() + 600);
        let not_yet = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &nbf).unwrap();
        let mut iss = claims(60);
        iss["iss"] = serde_json::json!("mallory");
        let wrong_iss = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &iss).unwrap();
        let mut aud = claims(60);
        aud["aud"] = serde_json::json!("another-api");
        let wrong_aud = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &aud).unwrap();
        let bad_sig = mint("HS256", b"not-the-secret", Some("hs"), &claims(60)).unwrap();
        let good = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &claims(60)).unwrap();
        let truncated = good[..good.len() / 2].to_string();
        let not_base64 = "!!!.@@@.###".to_string();
        let huge = format!("{}.{}.x", b64(r#"{"alg":"HS256"}"#), "A".repeat(64 * 1024));
        let unknown_kid = mint("HS256", TEST_SECRET.as_bytes(), Some("nope"), &claims(60)).unwrap();
        for (name, token) in [
            ("alg none", alg_none),
            ("algorithm confusion", confused),
            ("algorithm confusion without kid", confused_no_kid),
            ("expired", expired),
            ("nbf in the future", not_yet),
            ("wrong iss", wrong_iss),
            ("wrong aud", wrong_aud),
            ("bad signature", bad_sig),
            ("truncated", truncated),
            ("not base64", not_base64),
            ("64 KiB", huge),
            ("unknown kid", unknown_kid),
        ] {
            assert!(
                matches!(v.verify(&headers(&token)), Err(AuthError::Invalid(_))),
                "{name} was accepted"
            );
        }
        let mut basic = http::HeaderMap::new();
        basic.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cHc="),
        );
        assert!(matches!(v.verify(&basic), Err(AuthError::Missing(_))));
        let mut two = headers(&good);
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {good}")).unwrap(),
        );
        assert!(matches!(v.verify(&two), Err(AuthError::Invalid(_))));
        assert!(matches!(
            v.verify(&http::HeaderMap::new()),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn jwks_keys_are_selected_by_kid() {
        let mut c = cfg();
        c.keys.clear();
        c.jwks_file = Some(format!("{FIX}jwks.json").into());
        let v = Verifier::new(&c).unwrap();
        let rs = mint(
            "RS256",
            &pem("rsa_private.pem"),
            Some("jw-rsa"),
            &claims(60),
        )
        .unwrap();
        let hs = mint(
            "HS256",
            b"jwks-shared-secret-of-32-bytes-ok",
            Some("jw-hs"),
            &claims(60),
        )
        .unwrap();
        assert!(v.verify(&headers(&rs)).is_ok());
        assert!(v.verify(&headers(&hs)).is_ok());
        // The RSA key's allow-list is RS256 alone: an HS256 token naming it is refused.
        let confused = mint("HS256", &pem("rsa_public.pem"), Some("jw-rsa"), &claims(60)).unwrap();
        assert!(matches!(
            v.verify(&headers(&confused)),
            Err(AuthError::Invalid(_))
        ));
        // A short shared secret in a JWKS file is refused as in the config.
        let short = std::env::temp_dir().join(format!("gwbench-jwks-{}.json", std::process::id()));
        std::fs::write(
            &short,
            r#"{"keys": [{"kty": "oct", "kid": "s", "alg": "HS256", "k": "c2hvcnQ"}]}"#,
        )
        .unwrap();
        c.jwks_file = Some(short.clone());
        let err = Verifier::new(&c).unwrap_err();
        let _ = std::fs::remove_file(&short);
        assert!(err.contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn scope_and_bad_key_config() {
        let mut c = cfg();
        c.required_scope = Some("admin".into());
        let v = Verifier::new(&c).unwrap();
        let t = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &claims(60)).unwrap();
        assert!(matches!(
            v.verify(&headers(&t)),
            Err(AuthError::Forbidden(_))
        ));
        let mut bad = cfg();
        bad.keys[1].algorithms = vec!["RS256".into(), "HS256".into()];
        assert!(Verifier::new(&bad).unwrap_err().contains("one family"));
        let mut bad = cfg();
        bad.keys[0].algorithms = vec!["none".into()];
        assert!(Verifier::new(&bad).unwrap_err().contains("not supported"));
        // An empty or short HMAC secret would let anyone mint tokens: refused, key named.
        for secret in ["", "s3cret", &"x".repeat(MIN_HS_SECRET - 1)] {
            let mut bad = cfg();
            bad.keys[0].secret = Some(secret.to_string());
            let err = Verifier::new(&bad).unwrap_err();
            assert!(
                err.starts_with("auth.keys[0]:") && err.contains("at least 32 bytes"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn the_layer_refuses_or_forwards_verified_claims() {
        use tower::ServiceExt;
        let v = Arc::new(Verifier::new(&cfg()).unwrap());
        let inner = tower::service_fn(|req: GwRequest| async move {
            // The upstream sees the verified subject, not the client's forged one.
            let user = req
                .parts
                .headers
                .get("x-user-id")
                .map(|v| v.to_str().unwrap().to_string());
            let body = serde_json::json!({ "user": user }).to_string();
            Ok::<_, std::convert::Infallible>(
                crate::net::json(StatusCode::OK, body).map(http_body_util::Either::Left),
            )
        });
        let svc = tower::Layer::layer(&AuthLayer::new(Auth::new(v)), inner);
        let request = |auth: Option<String>, path: &str| {
            let mut headers = vec![("x-user-id", "forged".to_string())];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::gateway::test_request(http::Method::GET, path, &headers)
        };
        let token = mint("HS256", TEST_SECRET.as_bytes(), Some("hs"), &claims(60)).unwrap();
        let resp = svc
            .clone()
            .oneshot(request(Some(format!("Bearer {token}")), "/x"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["user"],
            "alice"
        );
        let resp = svc.clone().oneshot(request(None, "/x")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"gwbench\""
        );
        let resp = svc
            .clone()
            .oneshot(request(Some("Bearer x.y.z".into()), "/x"))
            .await
            .unwrap();
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        let resp = svc.oneshot(request(None, "/public/x")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "public paths skip auth");
    }

    proptest::proptest! {
        /// Arbitrary strings as bearer tokens (and token-shaped ones): refused with a named
        /// error, never a panic.
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(
            raw in ".{0,200}",
            parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,40}", 0..5),
        ) {
            let v = Verifier::new(&cfg()).unwrap();
            for token in [raw.clone(), parts.join(".")] {
                if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
                    let mut h = http::HeaderMap::new();
                    h.insert(http::header::AUTHORIZATION, value);
                    proptest::prop_assert!(v.verify(&h).is_err());
                }
            }
        }
    }
}
