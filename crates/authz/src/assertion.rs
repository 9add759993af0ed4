//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9): the client
//! signs a short-lived JWT with a key it published, and sends it as `client_assertion`.

use base64::Engine;
use serde_json::{Map, Value};

use portcullis_oauth::jwks::KeySet;

/// The one `client_assertion_type` (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY: i64 = 30;
/// Assertions may be valid for at most this long: they are single-use proofs, not credentials.
const MAX_LIFETIME: i64 = 600;

/// A verified assertion: what makes it single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub jti: String,
    /// Until when its `jti` must be remembered.
    pub remember_until: i64,
}

/// The client an assertion claims to come from (`sub`, which RFC 7523 §3 requires to equal `iss`), read
/// before anything is verified, to find the keys that verify it.
pub fn claimed_client(assertion: &str) -> Result<String, String> {
    unverified_claim(assertion, "sub", "client_assertion")
}

/// The string claim `name` of a JWT, read without verifying it; errors call the JWT `what`.
pub(crate) fn unverified_claim(jwt: &str, name: &str, what: &str) -> Result<String, String> {
    let payload = jwt.split('.').nth(1).ok_or_else(|| format!("the {what} is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| format!("the {what}'s payload is not base64url"))?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| format!("the {what}'s payload is not a JSON object"))?;
    claims.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("the {what} has no {name}"))
}

/// Verifies `assertion` for `client_id`: a signature by one of `keys` (asymmetric only), `iss` = `sub` =
/// the client, `aud` naming one of `audiences` (our issuer or an endpoint URL), unexpired, not valid for
/// longer than ten minutes, not from the future, and a `jti`.
pub fn verify(
    assertion: &str,
    keys: &KeySet,
    client_id: &str,
    audiences: &[String],
    now: i64,
) -> Result<Accepted, String> {
    let claims = keys.verify_signature(assertion).map_err(|e| format!("the client_assertion: {e}"))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
        return Err("the client_assertion's iss and sub must both be the client_id".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|o| o == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("the client_assertion's aud must name this authorization server ({})", audiences[0]));
    }
    let remember_until = check_lifetime(&claims, "client_assertion", now, MAX_LIFETIME, false)?;
    let jti = text("jti").filter(|j| !j.is_empty()).ok_or("the client_assertion has no jti")?;
    Ok(Accepted { jti: jti.to_owned(), remember_until })
}

/// The lifetime of a single-use JWT (called `what` in refusals), with [`LEEWAY`] for clock skew: an `exp`
/// that has not passed and is at most `max_lifetime` ahead, and no `nbf` or `iat` in the future (`iat`
/// required when `iat_required`). Returns until when the JWT's `jti` must be remembered.
pub(crate) fn check_lifetime(
    claims: &Map<String, Value>,
    what: &str,
    now: i64,
    max_lifetime: i64,
    iat_required: bool,
) -> Result<i64, String> {
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = time("exp").ok_or_else(|| format!("the {what} has no exp"))?;
    if exp + LEEWAY <= now {
        return Err(format!("the {what} expired"));
    }
    if exp > now + max_lifetime + LEEWAY {
        return Err(format!("the {what} is valid for too long (at most {max_lifetime} s)"));
    }
    let iat = time("iat");
    if iat_required && iat.is_none() {
        return Err(format!("the {what} has no iat"));
    }
    if time("nbf").is_some_and(|nbf| nbf > now + LEEWAY) || iat.is_some_and(|iat| iat > now + LEEWAY) {
        return Err(format!("the {what} is not valid yet"));
    }
    Ok(exp + LEEWAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use crate::keys::{KeyAlg, generate};

    const CLIENT: &str = "https://app.example.com/client.json";
    const NOW: i64 = 1_800_000_000;

    fn setup() -> (KeySet, EncodingKey, String) {
        let k = generate(KeyAlg::Es256).unwrap();
        let set = KeySet::parse(json!({"keys": [k.public_jwk]}).to_string().as_bytes()).unwrap().0;
        (set, EncodingKey::from_ec_der(&k.pkcs8), k.kid)
    }

    fn sign(key: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": CLIENT, "sub": CLIENT, "aud": "https://gw.example.com", "exp": NOW + 60, "iat": NOW,
               "jti": "j-1"})
    }

    fn audiences() -> Vec<String> {
        vec!["https://gw.example.com".into(), "https://gw.example.com/token".into()]
    }

    #[test]
    fn a_good_assertion_is_accepted() {
        let (set, key, kid) = setup();
        let a = sign(&key, &kid, claims());
        assert_eq!(claimed_client(&a).unwrap(), CLIENT);
        let ok = verify(&a, &set, CLIENT, &audiences(), NOW).unwrap();
        assert_eq!(ok, Accepted { jti: "j-1".into(), remember_until: NOW + 90 });
        let mut c = claims();
        c["aud"] = json!(["https://other.example", "https://gw.example.com/token"]);
        assert!(verify(&sign(&key, &kid, c), &set, CLIENT, &audiences(), NOW).is_ok(), "the token endpoint");
    }

    #[test]
    fn bad_assertions_are_refused_with_the_reason() {
        let (set, key, kid) = setup();
        let (other_set, _, _) = setup();
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            sign(&key, &kid, c)
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            sign(&key, &kid, c)
        };
        let cases = [
            (with("iss", json!("https://evil.example/c.json")), "iss and sub"),
            (with("aud", json!("https://elsewhere.example")), "aud"),
            (without("aud"), "aud"),
            (with("exp", json!(NOW - 31)), "expired"),
            (without("exp"), "no exp"),
            (with("exp", json!(NOW + 3600)), "too long"),
            (with("nbf", json!(NOW + 120)), "not valid yet"),
            (without("jti"), "no jti"),
        ];
        for (assertion, expected) in cases {
            let e = verify(&assertion, &set, CLIENT, &audiences(), NOW).unwrap_err();
            assert!(e.contains(expected), "{expected}: {e}");
        }
        let good = sign(&key, &kid, claims());
        assert!(verify(&good, &other_set, CLIENT, &audiences(), NOW).is_err(), "another client's keys");
        // A character well inside the signature, changed to another (the last one may carry only padding).
        let i = good.len() - 10;
        let swapped = if &good[i..=i] == "A" { "B" } else { "A" };
        let forged = format!("{}{swapped}{}", &good[..i], &good[i + 1..]);
        assert!(verify(&forged, &set, CLIENT, &audiences(), NOW).is_err(), "a broken signature");
        let hs =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(b"k")).unwrap();
        assert!(verify(&hs, &set, CLIENT, &audiences(), NOW).is_err(), "symmetric");
        assert!(claimed_client("nonsense").is_err());
    }
}
