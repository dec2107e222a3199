//! Telephone numbers in request targets (RFC 3966): `tel:` URIs and SIP URIs with
//! `user=phone` name a number, which is looked up as `sip:<number>@<default domain>` after
//! the visual separators (`-`, `.`, `(`, `)`) are removed. A global number keeps its `+`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use crate::sip::uri::{SipUri, TelUri};

/// RFC 3966 §5.1.1 visual separators (the whitespace-free ones a URI may carry).
fn is_visual(b: char) -> bool {
    matches!(b, '-' | '.' | '(' | ')')
}

/// A number with its visual separators removed: `+81-3-1234-5678` → `+81312345678`.
/// `None` when nothing is left but a sign, or when the text is not a number.
pub fn normalise(number: &str) -> Option<String> {
    let (plus, digits) = match number.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let mut out = String::with_capacity(number.len());
    if plus {
        out.push('+');
    }
    for c in digits.chars() {
        if is_visual(c) {
            continue;
        }
        // Global numbers are digits only; local ones may also carry hex digits, * and #.
        let ok = if plus {
            c.is_ascii_digit()
        } else {
            c.is_ascii_hexdigit() || c == '*' || c == '#'
        };
        if !ok {
            return None;
        }
        out.push(c.to_ascii_uppercase());
    }
    (out.len() > usize::from(plus)).then_some(out)
}

/// The number of a `tel:` URI, normalised.
pub fn tel_number(u: &TelUri<'_>) -> Option<String> {
    normalise(u.number)
}

/// The number of a SIP URI that names one (`user=phone`), normalised.
pub fn sip_phone_number(u: &SipUri<'_>) -> Option<String> {
    if !u
        .param("user")
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("phone"))
    {
        return None;
    }
    let user = u.user_decoded()?;
    let user = std::str::from_utf8(&user).ok()?;
    // A `;phone-context=` or other telephone-subscriber parameters follow the number.
    let number = user.split(';').next().unwrap_or(user);
    normalise(number)
}

/// The AoR a number is looked up under in `domain`.
pub fn number_aor(number: &str, domain: &str) -> String {
    format!("sip:{number}@{}", domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    #[test]
    fn separators_are_removed_and_the_plus_kept() {
        assert_eq!(
            normalise("+81-3-1234-5678").as_deref(),
            Some("+81312345678")
        );
        assert_eq!(
            normalise("+1.(212).555-0100").as_deref(),
            Some("+12125550100")
        );
        assert_eq!(normalise("555-01*0#").as_deref(), Some("55501*0#"));
        assert_eq!(normalise("+"), None);
        assert_eq!(normalise("+81a"), None);
        assert_eq!(normalise("--"), None);
    }

    #[test]
    fn tel_and_user_phone_give_the_same_number() {
        let Ok(Uri::Tel(t)) = Uri::parse("tel:+81-3-1234-5678;phone-context=+81") else {
            panic!("tel parse")
        };
        assert_eq!(tel_number(&t).as_deref(), Some("+81312345678"));
        let s = SipUri::parse("sip:+81-3-1234-5678@example.com;user=phone").unwrap();
        assert_eq!(sip_phone_number(&s).as_deref(), Some("+81312345678"));
        let plain = SipUri::parse("sip:+81-3-1234-5678@example.com").unwrap();
        assert_eq!(
            sip_phone_number(&plain),
            None,
            "without user=phone it is a name"
        );
        assert_eq!(
            number_aor("+81312345678", "Example.COM"),
            "sip:+81312345678@example.com"
        );
    }
}
