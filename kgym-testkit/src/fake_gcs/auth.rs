//! The fake's service account: a real RSA key pair made at start, the
//! service-account key JSON a deployment would download from Google Cloud,
//! and the check GCS makes of the bearer token `object_store` 0.14 sends
//! with such a key — a self-signed JWT (Google's AIP-4111: RS256, `kid` =
//! the key's id, `iss` = `sub` = the account's e-mail, a `scope` or `aud`
//! naming the API, valid for at most an hour), signed with the private key
//! and verified here with the public half. (That client does not exchange
//! the JWT for an OAuth token at the key's `token_uri`: GCS accepts the
//! self-signed JWT itself.)

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

/// The scopes and audiences GCS accepts for object requests.
const ACCEPTED: [&str; 4] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://storage.googleapis.com/",
];
/// Clock skew allowed on `iat`, in seconds.
const SKEW: u64 = 300;

/// A service account of the fake.
#[derive(Debug)]
pub(crate) struct ServiceAccount {
    key_id: String,
    email: String,
    private_pem: String,
    /// The public key, DER `RSAPublicKey` (RFC 8017).
    public_der: Vec<u8>,
}

impl ServiceAccount {
    /// A fresh account with a 2048-bit RSA key.
    pub(crate) fn generate() -> std::io::Result<Self> {
        let fail = |what: &str| std::io::Error::other(format!("service account key: {what}"));
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| fail("generate"))?;
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(|_| fail("encode"))?;
        let body = STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        let private_pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
        let suffix: u64 = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Ok(Self {
            key_id: format!("{suffix:040x}"),
            email: "kgym-test@kgym-test.iam.gserviceaccount.com".to_owned(),
            private_pem,
            public_der: pair.public_key().as_ref().to_vec(),
        })
    }

    /// The key JSON in Google Cloud's format, pointed at `base_url`.
    pub(crate) fn key_json(&self, base_url: &str) -> Value {
        serde_json::json!({
            "type": "service_account",
            "project_id": "kgym-test",
            "private_key_id": self.key_id,
            "private_key": self.private_pem,
            "client_email": self.email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "gcs_base_url": base_url,
        })
    }

    /// Checks an `Authorization` header value; the reason when GCS would
    /// refuse it.
    pub(crate) fn check(&self, authorization: Option<&str>) -> Result<(), String> {
        let value = authorization.ok_or("no Authorization header")?;
        let (scheme, token) = value.split_once(' ').ok_or("Authorization is not `Bearer <token>`")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!("scheme {scheme} is not Bearer"));
        }
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [header, claims, signature] = parts[..] else { return Err("the token is not a JWT".into()) };
        let decode = |part: &str, what: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| format!("{what}: {e}"))?;
            serde_json::from_slice(&bytes).map_err(|e| format!("{what}: {e}"))
        };
        let (h, c) = (decode(header, "JWT header")?, decode(claims, "JWT claims")?);
        if h["alg"] != "RS256" {
            return Err(format!("alg {} is not RS256", h["alg"]));
        }
        if h["kid"] != self.key_id.as_str() {
            return Err(format!("kid {} is not the key's id", h["kid"]));
        }
        if c["iss"] != self.email.as_str() || c["sub"] != self.email.as_str() {
            return Err(format!("iss {} / sub {} is not the service account", c["iss"], c["sub"]));
        }
        let scopes = c["scope"].as_str().unwrap_or_default();
        let aud = c["aud"].as_str().unwrap_or_default();
        if !ACCEPTED.iter().any(|a| aud == *a || scopes.split(' ').any(|s| s == *a)) {
            return Err(format!("scope {scopes:?} / aud {aud:?} does not grant storage access"));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (iat, exp) = (c["iat"].as_u64().ok_or("no iat")?, c["exp"].as_u64().ok_or("no exp")?);
        if iat > now + SKEW || exp <= now || exp.saturating_sub(iat) > 3600 {
            return Err(format!("not valid now (iat {iat}, exp {exp}, now {now})"));
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|e| format!("signature: {e}"))?;
        let message = format!("{header}.{claims}");
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(message.as_bytes(), &signature)
            .map_err(|_| "the signature does not verify with the service account's public key".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token signed the way object_store signs one.
    fn token(account: &ServiceAccount, pair: &KeyPair, claims: Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": account.key_id});
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let message = format!("{}.{}", enc(&header), enc(&claims));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut sig).unwrap();
        format!("Bearer {message}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn only_tokens_signed_by_the_account_for_storage_now_pass() {
        let account = ServiceAccount::generate().unwrap();
        let json = account.key_json("http://x");
        let pem = json["private_key"].as_str().unwrap();
        let der = STANDARD.decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).unwrap();
        let pair = KeyPair::from_pkcs8(&der).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let good = serde_json::json!({"iss": account.email, "sub": account.email,
            "scope": ACCEPTED[0], "iat": now, "exp": now + 3600});
        account.check(Some(&token(&account, &pair, good.clone()))).unwrap();
        let mut expired = good.clone();
        expired["exp"] = (now - 1).into();
        assert!(account.check(Some(&token(&account, &pair, expired))).unwrap_err().contains("not valid now"));
        let mut other_scope = good.clone();
        other_scope["scope"] = "https://www.googleapis.com/auth/compute".into();
        assert!(account.check(Some(&token(&account, &pair, other_scope))).is_err());
        // Another key's signature, a tampered token, no token.
        let other = KeyPair::generate(KeySize::Rsa2048).unwrap();
        assert!(account.check(Some(&token(&account, &other, good.clone()))).unwrap_err().contains("signature"));
        let t = token(&account, &pair, good);
        let tampered = t.replacen(".", ".e30", 1);
        assert!(account.check(Some(&tampered)).is_err());
        assert!(account.check(None).is_err());
        assert!(account.check(Some("Basic a2d5bTp4")).is_err());
    }
}
