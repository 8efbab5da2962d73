//! Who is calling: the operator (`Authorization: Bearer <api.admin_token>`,
//! compared in constant time), an observer (`api.readonly_token`: reads what
//! the operator reads, acts on nothing) or an end user (a bearer JWT: HS256 with
//! `api.auth.jwt_secret`, or RS256/ES256 with the PEM public key in
//! `api.auth.jwt_public_key_file`; `exp` required, `iss`/`aud` checked when
//! configured, the user id read from `api.auth.user_claim`).
//!
//! What each caller may do is decided in order-core
//! ([`order_core::service::Caller`]); this module only establishes who it is.

use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use order_core::service::Caller;
use order_runtime::config::{ApiSettings, AuthMode, Secret};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Tolerated clock difference with the token issuer, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Tokens already verified, remembered with their user and expiry so a
/// buyer's next request skips the signature check: at most this many…
const VERIFIED_TOKENS: u64 = 10_000;

/// …each for at most this long (and never past its own `exp`).
const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// Establishes the caller of each request.
pub struct Authenticator {
    admin_token: Secret,
    readonly_token: Secret,
    mode: AuthMode,
    /// HS256 key and the checks of its tokens, when a secret is configured.
    secret: Option<(DecodingKey, Validation)>,
    /// The public key, its algorithm and the checks of its tokens, when a
    /// key file is configured.
    public: Option<(DecodingKey, Algorithm, Validation)>,
    issuer: String,
    audience: String,
    user_claim: String,
    /// Valid tokens seen lately: their user and `exp`.
    verified: moka::sync::Cache<Box<str>, (i64, u64)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("hs256", &self.secret.is_some())
            .field("public_key", &self.public.as_ref().map(|(_, alg, _)| alg))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads the keys the settings name.
    ///
    /// # Errors
    /// When the public key file cannot be read or is not an RSA or EC
    /// public key, or `api.auth.mode` is `jwt` with no key at all; the
    /// message names the key.
    pub fn new(api: &ApiSettings) -> anyhow::Result<Self> {
        let auth = &api.auth;
        let secret = (!auth.jwt_secret.is_empty())
            .then(|| DecodingKey::from_secret(auth.jwt_secret.expose().as_bytes()));
        let public = if auth.jwt_public_key_file.is_empty() {
            None
        } else {
            let path = &auth.jwt_public_key_file;
            let pem = std::fs::read(path)
                .with_context(|| format!("api.auth.jwt_public_key_file: reading {path}"))?;
            Some(public_key(&pem).with_context(|| {
                format!(
                    "api.auth.jwt_public_key_file: {path} is not a PEM RSA or EC (P-256) public key"
                )
            })?)
        };
        if auth.mode == AuthMode::Jwt && secret.is_none() && public.is_none() {
            anyhow::bail!(
                "api.auth.mode is jwt but neither api.auth.jwt_secret nor \
                 api.auth.jwt_public_key_file is set: set one (e.g. ORDER__API__AUTH__JWT_SECRET=$(openssl rand -hex 32)), \
                 or api.auth.mode: none for local use"
            );
        }
        let checks = |alg| {
            let mut validation = Validation::new(alg);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            let mut required = vec!["exp"];
            if auth.issuer.is_empty() {
                validation.iss = None;
            } else {
                validation.set_issuer(&[&auth.issuer]);
                required.push("iss");
            }
            if auth.audience.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&[&auth.audience]);
                required.push("aud");
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        Ok(Self {
            admin_token: api.admin_token.clone(),
            readonly_token: api.readonly_token.clone(),
            mode: auth.mode,
            secret: secret.map(|key| (key, checks(Algorithm::HS256))),
            public: public.map(|(key, alg)| (key, alg, checks(alg))),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            user_claim: auth.user_claim.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_FOR)
                .build(),
        })
    }

    /// True when operator endpoints are on (`api.admin_token` is set).
    #[must_use]
    pub fn operator_enabled(&self) -> bool {
        !self.admin_token.is_empty()
    }

    /// True when operator reads are on (either operator token is set).
    fn reading_enabled(&self) -> bool {
        self.operator_enabled() || !self.readonly_token.is_empty()
    }

    /// The caller of an end-user endpoint.
    ///
    /// # Errors
    /// 401 when no valid credential is presented (in `jwt` mode).
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let presented = match authorization.map(bearer).transpose() {
            Ok(presented) => presented,
            Err(e) if self.mode == AuthMode::Jwt => return Err(e),
            // Without end-user identity, a header that is not ours is ignored.
            Err(_) => None,
        };
        if let Some(token) = presented {
            if self.is_operator(token) {
                return Ok(Caller::Operator);
            }
            if self.is_observer(token) {
                return Ok(Caller::Observer);
            }
        }
        match (self.mode, presented) {
            (AuthMode::None, _) => Ok(Caller::Anyone),
            (AuthMode::Jwt, None) => Err(ApiError::Unauthorized(
                "a bearer token is required (Authorization: Bearer <token>)".into(),
            )),
            (AuthMode::Jwt, Some(token)) => self.user(token).map(Caller::User),
        }
    }

    /// Checks the caller of an operator endpoint that changes something.
    ///
    /// # Errors
    /// 403 when operator endpoints are off, the caller is an end user or
    /// presents the read-only token; 401 when no valid credential is
    /// presented.
    pub fn operator(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        if !self.operator_enabled() {
            return Err(ApiError::Forbidden(
                "operator endpoints are disabled: no api.admin_token is configured".into(),
            ));
        }
        let token = operator_bearer(authorization)?;
        if self.is_operator(token) {
            return Ok(());
        }
        if self.is_observer(token) {
            return Err(ApiError::Forbidden(order_core::service::READ_ONLY.into()));
        }
        self.not_an_operator(token)
    }

    /// Checks the caller of an operator endpoint that only reads: the
    /// operator token or the read-only one.
    ///
    /// # Errors
    /// As [`Self::operator`], the read-only token excepted.
    pub fn observer(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        if !self.reading_enabled() {
            return Err(ApiError::Forbidden(
                "operator endpoints are disabled: neither api.admin_token nor api.readonly_token \
                 is configured"
                    .into(),
            ));
        }
        let token = operator_bearer(authorization)?;
        if self.is_operator(token) || self.is_observer(token) {
            return Ok(());
        }
        self.not_an_operator(token)
    }

    /// Why `token` (not an operator's) is refused: an end user's is 403,
    /// anything else 401.
    fn not_an_operator(&self, token: &str) -> Result<(), ApiError> {
        match self.mode {
            AuthMode::Jwt if self.user(token).is_ok() => Err(ApiError::Forbidden(
                "this endpoint is for operators only".into(),
            )),
            _ => Err(ApiError::Unauthorized("invalid operator token".into())),
        }
    }

    fn is_operator(&self, token: &str) -> bool {
        matches_secret(token, &self.admin_token)
    }

    fn is_observer(&self, token: &str) -> bool {
        matches_secret(token, &self.readonly_token)
    }

    /// The user id in a valid token: remembered from an earlier request
    /// (until its `exp`, as the check allows it), or checked now.
    fn user(&self, token: &str) -> Result<i64, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((user, exp)) = self.verified.get(token)
            && now < exp.saturating_add(LEEWAY_SECS)
        {
            return Ok(user);
        }
        let (user, exp) = self.verify(token)?;
        self.verified.insert(token.into(), (user, exp));
        Ok(user)
    }

    /// Checks a token's signature and claims: its user id and `exp`.
    fn verify(&self, token: &str) -> Result<(i64, u64), ApiError> {
        let invalid = |why: String| ApiError::Unauthorized(format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let (key, validation) = match (header.alg, &self.secret, &self.public) {
            (Algorithm::HS256, Some((secret, checks)), _) => (secret, checks),
            (alg, _, Some((key, expected, checks))) if alg == *expected => (key, checks),
            (alg, _, _) => return Err(invalid(format!("algorithm {alg:?} is not accepted"))),
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| invalid(explain(&e)))?
            .claims;
        // Required, and checked against the clock, above.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let user = match claims.get(&self.user_claim) {
            Some(Value::Number(n)) => n.as_i64().filter(|id| *id > 0),
            Some(Value::String(s)) => s.parse::<i64>().ok().filter(|id| *id > 0),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "claim {:?} must hold a positive integer user id",
                self.user_claim
            ))
        })?;
        Ok((user, exp))
    }
}

/// What is wrong with a token, in words.
fn explain(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "its signature does not match the configured key".into(),
        ErrorKind::InvalidAudience => "it is meant for another audience (aud)".into(),
        ErrorKind::InvalidIssuer => "it comes from another issuer (iss)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the claim {claim:?} is missing"),
        _ => e.to_string(),
    }
}

/// Whether `token` is the set secret `secret` (compared in constant time;
/// an empty secret matches nothing).
fn matches_secret(token: &str, secret: &Secret) -> bool {
    !secret.is_empty() && bool::from(token.as_bytes().ct_eq(secret.expose().as_bytes()))
}

/// The bearer token of an operator request.
fn operator_bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    let Some(header) = authorization else {
        return Err(ApiError::Unauthorized(
            "the operator token is required (Authorization: Bearer <token>)".into(),
        ));
    };
    bearer(header)
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(header: &str) -> Result<&str, ApiError> {
    let header = header.trim();
    match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must read: Bearer <token>".into(),
        )),
    }
}

fn public_key(pem: &[u8]) -> anyhow::Result<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    let key = DecodingKey::from_ec_pem(pem)?;
    Ok((key, Algorithm::ES256))
}

/// Mints an HS256 token for `user` valid for `ttl`, with the configured
/// secret, issuer, audience and user claim (for demos and tests).
///
/// # Errors
/// When no `api.auth.jwt_secret` is configured.
pub fn mint(api: &ApiSettings, user: i64, ttl: Duration) -> anyhow::Result<String> {
    let auth = &api.auth;
    anyhow::ensure!(
        !auth.jwt_secret.is_empty(),
        "api.auth.jwt_secret is not set: there is no key to sign with \
         (set ORDER__API__AUTH__JWT_SECRET, at least 32 bytes)"
    );
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert(auth.user_claim.clone(), Value::String(user.to_string()));
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    if !auth.issuer.is_empty() {
        claims.insert("iss".into(), auth.issuer.clone().into());
    }
    if !auth.audience.is_empty() {
        claims.insert("aud".into(), auth.audience.clone().into());
    }
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(auth.jwt_secret.expose().as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings(configure: impl FnOnce(&mut ApiSettings)) -> ApiSettings {
        let mut api = ApiSettings {
            admin_token: Secret::new("op-token"),
            ..ApiSettings::default()
        };
        api.auth.jwt_secret = Secret::new(SECRET);
        configure(&mut api);
        api
    }

    fn sign(claims: &Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn the_read_only_token_reads_and_never_acts() {
        let auth = Authenticator::new(&settings(|a| a.readonly_token = Secret::new("look-token")))
            .unwrap();
        let look = bearer_of("look-token");
        assert_eq!(auth.caller(Some(&look)).unwrap(), Caller::Observer);
        assert!(auth.observer(Some(&look)).is_ok());
        assert!(auth.observer(Some(&bearer_of("op-token"))).is_ok());
        match auth.operator(Some(&look)) {
            Err(ApiError::Forbidden(m)) => assert!(m.contains("read-only"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            auth.observer(Some(&bearer_of("guess"))),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(Caller::Observer.may_act().is_err() && Caller::Observer.operator().is_err());

        // A read-only token alone: reads on, actions off.
        let alone = Authenticator::new(&settings(|a| {
            a.admin_token = Secret::default();
            a.readonly_token = Secret::new("look-token");
        }))
        .unwrap();
        assert!(alone.observer(Some(&look)).is_ok());
        assert!(matches!(
            alone.operator(Some(&look)),
            Err(ApiError::Forbidden(_))
        ));
        // Neither: both off.
        let none = Authenticator::new(&settings(|a| a.admin_token = Secret::default())).unwrap();
        assert!(matches!(
            none.observer(Some(&look)),
            Err(ApiError::Forbidden(_))
        ));
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    fn bearer_of(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_minted_token_names_its_user() {
        let api = settings(|_| {});
        let auth = Authenticator::new(&api).unwrap();
        let token = mint(&api, 42, Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.caller(Some(&bearer_of(&token))).unwrap(),
            Caller::User(42)
        );
        assert!(matches!(
            auth.operator(Some(&bearer_of(&token))),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn the_operator_token_is_the_operator_everywhere() {
        let auth = Authenticator::new(&settings(|_| {})).unwrap();
        assert_eq!(
            auth.caller(Some("Bearer op-token")).unwrap(),
            Caller::Operator
        );
        assert_eq!(
            auth.caller(Some("bearer op-token")).unwrap(),
            Caller::Operator
        );
        assert!(auth.operator(Some("Bearer op-token")).is_ok());
        assert!(matches!(
            auth.operator(Some("Bearer op-toke")),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.operator(None),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_remembered_token_is_refused_once_it_expires_and_its_forgeries_never_pass() {
        let auth = Authenticator::new(&settings(|_| {})).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        // Valid for one more second, the leeway included.
        let claims = serde_json::json!({"sub": "7", "exp": now + 1 - LEEWAY_SECS});
        let token = sign(&claims, SECRET);
        for _ in 0..2 {
            assert_eq!(
                auth.caller(Some(&bearer_of(&token))).unwrap(),
                Caller::User(7)
            );
        }
        assert!(auth.verified.contains_key(token.as_str()), "remembered");
        // The same claims under another key, or with the signature cut.
        let (signed, _) = token.rsplit_once('.').unwrap();
        for forged in [
            sign(&claims, "another-secret-another-secret-xx"),
            format!("{signed}."),
            format!("{signed}.{}", &token[signed.len() + 2..]),
        ] {
            assert!(
                matches!(
                    auth.caller(Some(&bearer_of(&forged))),
                    Err(ApiError::Unauthorized(_))
                ),
                "{forged}"
            );
        }
        std::thread::sleep(Duration::from_millis(2100));
        assert!(
            matches!(
                auth.caller(Some(&bearer_of(&token))),
                Err(ApiError::Unauthorized(_))
            ),
            "expired while remembered"
        );
    }

    #[test]
    fn expired_forged_unsigned_and_foreign_tokens_are_refused() {
        let auth = Authenticator::new(&settings(|a| a.auth.audience = "orders".into())).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let good = serde_json::json!({"sub": "7", "exp": in_an_hour(), "aud": "orders"});
        assert_eq!(
            auth.caller(Some(&bearer_of(&sign(&good, SECRET)))).unwrap(),
            Caller::User(7)
        );
        let expired = serde_json::json!({"sub": "7", "exp": now - 3600, "aud": "orders"});
        let no_exp = serde_json::json!({"sub": "7", "aud": "orders"});
        let wrong_aud = serde_json::json!({"sub": "7", "exp": in_an_hour(), "aud": "other"});
        let no_aud = serde_json::json!({"sub": "7", "exp": in_an_hour()});
        let bad_user = serde_json::json!({"sub": "-1", "exp": in_an_hour(), "aud": "orders"});
        let not_yet =
            serde_json::json!({"sub": "7", "exp": in_an_hour(), "nbf": now + 600, "aud": "orders"});
        for (what, token) in [
            ("expired", sign(&expired, SECRET)),
            ("no exp", sign(&no_exp, SECRET)),
            ("wrong audience", sign(&wrong_aud, SECRET)),
            ("no audience", sign(&no_aud, SECRET)),
            ("not a user id", sign(&bad_user, SECRET)),
            ("not yet valid", sign(&not_yet, SECRET)),
            (
                "wrong secret",
                sign(&good, "another-secret-another-secret-xx"),
            ),
            ("alg none", unsigned(&good)),
            ("garbage", "a.b.c".to_owned()),
        ] {
            assert!(
                matches!(
                    auth.caller(Some(&bearer_of(&token))),
                    Err(ApiError::Unauthorized(_))
                ),
                "{what}"
            );
        }
        let said = |token: String| match auth.caller(Some(&bearer_of(&token))) {
            Err(ApiError::Unauthorized(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(said(sign(&expired, SECRET)).contains("expired"));
        assert!(said(sign(&wrong_aud, SECRET)).contains("audience"));
        assert!(said(sign(&good, "another-secret-another-secret-xx")).contains("signature"));
        assert!(matches!(auth.caller(None), Err(ApiError::Unauthorized(_))));
        assert!(matches!(
            auth.caller(Some("Basic abc")),
            Err(ApiError::Unauthorized(_))
        ));
    }

    fn unsigned(claims: &Value) -> String {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(claims)
        )
    }

    #[test]
    fn the_issuer_and_the_user_claim_are_configurable() {
        let api = settings(|a| {
            a.auth.issuer = "shop".into();
            a.auth.user_claim = "uid".into();
        });
        let auth = Authenticator::new(&api).unwrap();
        let token = mint(&api, 9, Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.caller(Some(&bearer_of(&token))).unwrap(),
            Caller::User(9)
        );
        let numeric = serde_json::json!({"uid": 9, "iss": "shop", "exp": in_an_hour()});
        assert_eq!(
            auth.caller(Some(&bearer_of(&sign(&numeric, SECRET))))
                .unwrap(),
            Caller::User(9)
        );
        let other_iss = serde_json::json!({"uid": 9, "iss": "elsewhere", "exp": in_an_hour()});
        let sub_only = serde_json::json!({"sub": "9", "iss": "shop", "exp": in_an_hour()});
        for token in [sign(&other_iss, SECRET), sign(&sub_only, SECRET)] {
            assert!(auth.caller(Some(&bearer_of(&token))).is_err());
        }
    }

    fn key(name: &str) -> String {
        format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn sign_with(claims: &Value, alg: Algorithm, private_pem: &str) -> String {
        let pem = std::fs::read(key(private_pem)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_are_checked_with_the_public_key() {
        for (alg, public, private, other_private) in [
            (
                Algorithm::RS256,
                "rs256-public.pem",
                "rs256-private.pem",
                "es256-private.pem",
            ),
            (
                Algorithm::ES256,
                "es256-public.pem",
                "es256-private.pem",
                "rs256-private.pem",
            ),
        ] {
            let api = settings(|a| {
                a.auth.jwt_secret = Secret::default();
                a.auth.jwt_public_key_file = key(public);
            });
            let auth = Authenticator::new(&api).unwrap();
            let claims = serde_json::json!({"sub": "5", "exp": in_an_hour()});
            let good = sign_with(&claims, alg, private);
            assert_eq!(
                auth.caller(Some(&bearer_of(&good))).unwrap(),
                Caller::User(5),
                "{alg:?}"
            );
            // Signed by another key, or HS256 with the public key as the
            // secret (the algorithm-confusion attack): refused.
            let other_alg = if alg == Algorithm::RS256 {
                Algorithm::ES256
            } else {
                Algorithm::RS256
            };
            let public_pem = std::fs::read_to_string(key(public)).unwrap();
            for forged in [
                sign_with(&claims, other_alg, other_private),
                sign(&claims, &public_pem),
            ] {
                assert!(
                    matches!(
                        auth.caller(Some(&bearer_of(&forged))),
                        Err(ApiError::Unauthorized(_))
                    ),
                    "{alg:?}"
                );
            }
            let expired = sign_with(&serde_json::json!({"sub": "5", "exp": 1}), alg, private);
            assert!(auth.caller(Some(&bearer_of(&expired))).is_err());
        }
    }

    #[test]
    fn an_unreadable_or_wrong_public_key_file_stops_the_start_naming_the_key() {
        for file in [key("nope.pem"), key("README.md")] {
            let api = settings(|a| a.auth.jwt_public_key_file = file.clone());
            let e = format!("{:#}", Authenticator::new(&api).unwrap_err());
            assert!(e.contains("api.auth.jwt_public_key_file"), "{e}");
        }
    }

    #[test]
    fn mode_none_lets_anyone_read_but_not_operate() {
        let api = settings(|a| {
            a.auth.mode = AuthMode::None;
            a.auth.jwt_secret = Secret::default();
        });
        let auth = Authenticator::new(&api).unwrap();
        assert_eq!(auth.caller(None).unwrap(), Caller::Anyone);
        assert!(matches!(
            auth.operator(None),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn jwt_mode_without_a_key_does_not_start_and_says_which_keys() {
        let api = settings(|a| a.auth.jwt_secret = Secret::default());
        let e = Authenticator::new(&api).unwrap_err().to_string();
        assert!(
            e.contains("api.auth.jwt_secret") && e.contains("api.auth.jwt_public_key_file"),
            "{e}"
        );
    }

    #[test]
    fn without_an_operator_token_operator_endpoints_are_off() {
        let auth = Authenticator::new(&settings(|a| a.admin_token = Secret::default())).unwrap();
        assert!(matches!(
            auth.operator(Some("Bearer x")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            auth.caller(Some("Bearer ")),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
