//! Stripe's webhook signature, verified as Stripe documents it
//! (<https://docs.stripe.com/webhooks#verify-manually>): the `Stripe-Signature` header is a list
//! of `key=value` pairs, `t` the Unix time of signing and each `v1` a hex HMAC-SHA256 of
//! `<t>.<raw body>` keyed with the endpoint's secret. Several `v1` values may be present (while a
//! secret is being rolled); one match is enough. Other schemes (`v0`) are ignored. Comparisons
//! are constant-time, and a `t` further than the tolerance from now is refused, so a captured
//! delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `t` may be from now, in seconds (Stripe's libraries' default).
pub const TOLERANCE_S: i64 = 300;

/// Why a delivery is not accepted as Stripe's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// The header is not `t=<seconds>,v1=<hex>[,...]`.
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// Signed too long ago (or in the future).
    #[error(
        "the Stripe-Signature timestamp is {age_s} s from now; at most {TOLERANCE_S} s is accepted"
    )]
    Stale {
        /// Seconds between `t` and now (negative: in the future).
        age_s: i64,
    },
    /// No `v1` value is the HMAC of this body with this secret.
    #[error("no v1 signature in the Stripe-Signature header matches the body")]
    Mismatch,
}

/// Check `header` (the `Stripe-Signature` value, `None` when absent) against the raw `body`,
/// `secret` and the current Unix time `now`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        let (key, value) = pair
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("every element must be key=value"))?;
        match key {
            "t" => {
                let t: i64 = value
                    .parse()
                    .map_err(|_| SignatureError::Malformed("`t` must be a Unix time in seconds"))?;
                if timestamp.replace(t).is_some() {
                    return Err(SignatureError::Malformed("`t` is given twice"));
                }
            }
            // A value that is not hex cannot match; it is skipped like a signature that does not.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed("no `t` element"))?;
    if !header.split(',').any(|pair| pair.trim().starts_with("v1=")) {
        return Err(SignatureError::Malformed("no `v1` signature"));
    }
    let age_s = now.saturating_sub(t);
    if age_s.abs() > TOLERANCE_S {
        return Err(SignatureError::Stale { age_s });
    }
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    // Every candidate is compared in full and in constant time (`verify_slice` compares with
    // `subtle`), so the answer's timing says nothing about how close a guess was.
    let matched = signatures.iter().fold(false, |any, candidate| {
        any | mac.clone().verify_slice(candidate).is_ok()
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripe's documented signing, written out independently of `verify`.
    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_documented_scheme_is_accepted_and_everything_else_refused() {
        let (secret, body, now) = ("whsec_test", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let good = sign(secret, now, body);
        let header = format!("t={now},v1={good}");
        assert_eq!(verify(Some(&header), body, secret, now), Ok(()));
        assert_eq!(verify(Some(&header), body, secret, now + 300), Ok(()));
        let rolled = format!(
            "t={now},v1={},v0=abc,v1={good}",
            sign("whsec_old", now, body)
        );
        assert_eq!(verify(Some(&rolled), body, secret, now), Ok(()));
        assert_eq!(
            verify(None, body, secret, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&header), body, "whsec_other", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), b"{}", secret, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), body, secret, now + 301),
            Err(SignatureError::Stale { age_s: 301 })
        );
        for malformed in [
            "",
            "garbage",
            "t=abc,v1=00",
            &format!("v1={good}"),
            &format!("t={now}"),
        ] {
            assert!(
                matches!(
                    verify(Some(malformed), body, secret, now),
                    Err(SignatureError::Malformed(_))
                ),
                "{malformed}"
            );
        }
        assert_eq!(
            verify(Some(&format!("t={now},v1=zz")), body, secret, now),
            Err(SignatureError::Mismatch)
        );
    }
}
