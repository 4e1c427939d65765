//! Authentication as pveproxy does it (NOTES §3):
//!
//! - `Authorization: PVEAPIToken=user@realm!id=secret` (also with a space
//!   instead of the first `=`; the value is URI-unescaped and split on its
//!   last `=`); secrets compared in constant time;
//! - ticket cookies `PVEAuthCookie=PVE:user:HEXTIME::signature` (from the
//!   `Cookie` header or `Authorization`), which win over a token, plus a
//!   `CSRFPreventionToken` header for every write;
//! - failures are 401 with PVE 8.4's reason phrases.

use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::world::World;
use homestak_pve::schema::wire::decode_component;

/// Tickets live two hours (not scaled: it is a protocol constant).
const TICKET_LIFETIME: i64 = 2 * 3600;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `root@pam` or `root@pam!tokenid` (what UPIDs record).
    pub user: String,
    /// Authenticated by ticket: writes need the CSRF token.
    pub ticket: bool,
}

/// Why authentication failed: the 401 reason phrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub &'static str);

fn key(world: &World) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, world.ticket_key.expose().as_bytes())
}

fn sign(world: &World, text: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac::sign(&key(world), text.as_bytes()).as_ref())
}

fn verify(world: &World, text: &str, sig_b64: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
        return false;
    };
    hmac::verify(&key(world), text.as_bytes(), &sig).is_ok()
}

/// A new ticket and CSRF token for `user`.
pub fn issue_ticket(world: &World, user: &str, now: i64) -> (String, String) {
    let plain = format!("PVE:{user}:{now:08X}");
    let ticket = format!("{plain}::{}", sign(world, &plain));
    let csrf_plain = format!("{now:08X}:{user}");
    let csrf = format!("{now:08X}:{}", sign(world, &csrf_plain));
    (ticket, csrf)
}

/// Checks a ticket; returns the user.
fn check_ticket(world: &World, ticket: &str, now: i64) -> Option<String> {
    let (plain, sig) = ticket.rsplit_once("::")?;
    let rest = plain.strip_prefix("PVE:")?;
    let (user, hex) = rest.rsplit_once(':')?;
    let time = i64::from_str_radix(hex, 16).ok()?;
    // Saturating: the time is the caller's text until the signature holds.
    if !verify(world, plain, sig)
        || now.saturating_sub(time) > TICKET_LIFETIME
        || time.saturating_sub(now) > 300
    {
        return None;
    }
    Some(user.to_string())
}

fn check_csrf(world: &World, token: &str, user: &str, now: i64) -> bool {
    let Some((hex, sig)) = token.split_once(':') else {
        return false;
    };
    let Ok(time) = i64::from_str_radix(hex, 16) else {
        return false;
    };
    now.saturating_sub(time) <= TICKET_LIFETIME && verify(world, &format!("{hex}:{user}"), sig)
}

/// Checks a root password in constant time.
pub fn check_password(world: &World, password: &str) -> bool {
    password
        .as_bytes()
        .ct_eq(world.root_password.expose().as_bytes())
        .into()
}

/// `PVEAuthCookie=…` from a `Cookie` or `Authorization` header.
fn cookie_ticket(header: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        part.trim()
            .strip_prefix("PVEAuthCookie=")
            .map(|v| decode_component(v.trim()))
    })
}

/// `(?:^|\s)PVEAPIToken(?:=| )([^;]*)`, URI-unescaped.
fn api_token(header: &str) -> Option<String> {
    let mut search = header;
    let mut offset = 0;
    while let Some(i) = search.find("PVEAPIToken") {
        let at = offset + i;
        let before_ok = at == 0 || header[..at].ends_with(char::is_whitespace);
        let rest = &header[at + "PVEAPIToken".len()..];
        if before_ok && let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' '))
        {
            let value = value.split(';').next().unwrap_or("");
            return Some(decode_component(value));
        }
        offset = at + 1;
        search = &header[offset..];
    }
    None
}

/// The request headers auth looks at.
#[derive(Debug, Default)]
pub struct Headers<'a> {
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub csrf: Option<&'a str>,
}

/// Authenticates a request; `write` is any method but GET.
pub fn authenticate(
    world: &World,
    h: &Headers<'_>,
    write: bool,
    now: i64,
) -> Result<Identity, Failure> {
    let ticket = h
        .cookie
        .and_then(cookie_ticket)
        .or_else(|| h.authorization.and_then(cookie_ticket));
    if let Some(ticket) = ticket {
        let user = check_ticket(world, &ticket, now).ok_or(Failure("Authentication failed!"))?;
        if write && !h.csrf.is_some_and(|c| check_csrf(world, c, &user, now)) {
            return Err(Failure("Permission denied - invalid csrf token"));
        }
        return Ok(Identity { user, ticket: true });
    }
    let Some(token) = h.authorization.and_then(api_token) else {
        return Err(Failure("No ticket"));
    };
    // `user@realm!tokenid=secret`, split on the last `=`.
    let (id, secret) = token
        .rsplit_once('=')
        .ok_or(Failure("Authentication failed!"))?;
    let known = world
        .tokens
        .get(id)
        .filter(|t| t.expire == 0 || t.expire > now);
    let ok = match known {
        Some(t) => bool::from(secret.as_bytes().ct_eq(t.secret.expose().as_bytes())),
        None => {
            // Spend the same time on unknown ids.
            let _ = secret.as_bytes().ct_eq(secret.as_bytes());
            false
        }
    };
    if !ok {
        return Err(Failure("Authentication failed!"));
    }
    Ok(Identity {
        user: id.to_string(),
        ticket: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use crate::config::Config;

    fn world() -> World {
        World::from_config(
            &Config::with_defaults(),
            1_700_000_000,
            Secret::new("s3cret-uuid"),
            Secret::new("pw"),
            Secret::new("k"),
        )
    }

    fn h<'a>(auth: Option<&'a str>, cookie: Option<&'a str>, csrf: Option<&'a str>) -> Headers<'a> {
        Headers {
            authorization: auth,
            cookie,
            csrf,
        }
    }

    #[test]
    fn token_variants_are_accepted() {
        let w = world();
        let now = 1_700_000_000;
        for header in [
            "PVEAPIToken=root@pam!homestak=s3cret-uuid",
            "PVEAPIToken root@pam!homestak=s3cret-uuid",
            "PVEAPIToken=root%40pam%21homestak=s3cret-uuid",
            "Other x PVEAPIToken=root@pam!homestak=s3cret-uuid",
        ] {
            let id = authenticate(&w, &h(Some(header), None, None), true, now).expect(header);
            assert_eq!(
                id,
                Identity {
                    user: "root@pam!homestak".into(),
                    ticket: false
                }
            );
        }
        for (header, reason) in [
            (
                "PVEAPIToken=root@pam!homestak=wrong",
                "Authentication failed!",
            ),
            (
                "PVEAPIToken=root@pam!other=s3cret-uuid",
                "Authentication failed!",
            ),
            ("xPVEAPIToken=root@pam!homestak=s3cret-uuid", "No ticket"),
            ("Bearer abc", "No ticket"),
        ] {
            assert_eq!(
                authenticate(&w, &h(Some(header), None, None), false, now),
                Err(Failure(reason)),
                "{header}"
            );
        }
        assert_eq!(
            authenticate(&w, &h(None, None, None), false, now),
            Err(Failure("No ticket"))
        );
    }

    #[test]
    fn tickets_need_csrf_for_writes_and_win_over_tokens() {
        let w = world();
        let now = 1_700_000_000;
        let (ticket, csrf) = issue_ticket(&w, "root@pam", now);
        assert!(ticket.starts_with("PVE:root@pam:6553F100::"));
        let cookie = format!("PVEAuthCookie={ticket}");
        let id = authenticate(&w, &h(None, Some(&cookie), None), false, now).unwrap();
        assert_eq!(id.user, "root@pam");
        assert_eq!(
            authenticate(&w, &h(None, Some(&cookie), None), true, now),
            Err(Failure("Permission denied - invalid csrf token"))
        );
        assert!(authenticate(&w, &h(None, Some(&cookie), Some(&csrf)), true, now).is_ok());
        // A CSRF time that would overflow `now - time` is refused, not a panic.
        for forged in ["-8000000000000000:AAAA", "7FFFFFFFFFFFFFFF:AAAA"] {
            assert_eq!(
                authenticate(&w, &h(None, Some(&cookie), Some(forged)), true, now),
                Err(Failure("Permission denied - invalid csrf token"))
            );
        }
        // A bad ticket fails even when a good token is present.
        let bad = "PVEAuthCookie=PVE:root@pam:6553F100::AAAA";
        let token = "PVEAPIToken=root@pam!homestak=s3cret-uuid";
        assert_eq!(
            authenticate(&w, &h(Some(token), Some(bad), None), false, now),
            Err(Failure("Authentication failed!"))
        );
        // Expired after two hours.
        assert!(
            authenticate(
                &w,
                &h(None, Some(&cookie), None),
                false,
                now + TICKET_LIFETIME + 1
            )
            .is_err()
        );
    }

    #[test]
    fn passwords_compare() {
        let w = world();
        assert!(check_password(&w, "pw"));
        assert!(!check_password(&w, "pw2"));
    }
}
