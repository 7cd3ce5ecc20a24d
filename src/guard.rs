//! Who may use the board, and how much: the optional passphrase and the
//! budget of wrong guesses at it, the Origin check against cross-site
//! WebSocket hijacking, connections per address, and the token buckets that
//! limit posting.
//!
//! Every check returns a [`Refusal`]: an HTTP status plus the same
//! `{"code","message"}` body the `error` event carries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use parking_lot::Mutex;

use crate::protocol::{Code, Rejection};

/// Name of the cookie that carries a browser's login.
pub const SESSION_COOKIE: &str = "lanboard_session";

/// A request refused before it reached the board.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub rejection: Rejection,
}

impl Refusal {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            rejection: Rejection::new(code, message),
        }
    }
}

/// A rate: `per_second` tokens flow in, at most `burst` wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// A token bucket: allows bursts up to `burst`, then `per_second` on average.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate.burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when a token is there to take, without taking it.
    fn has_token(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate.per_second >= 1.0
    }

    /// True when the bucket has refilled completely, so forgetting it changes nothing.
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate.per_second >= self.rate.burst
    }
}

/// The access rules, set from the flags.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub password: Option<String>,
    /// Origins allowed besides the board's own, as `scheme://host[:port]`.
    pub allow_origins: Vec<String>,
    /// 0 means no limit. 127.0.0.1 and ::1 are never limited: they are this
    /// computer itself, or a reverse proxy in front of the board.
    pub max_connections_per_ip: usize,
    /// Posts per remote address through the HTTP API; `None` is unlimited.
    pub post_rate: Option<Rate>,
    /// True when the board is served over TLS (the login cookie is then `Secure`).
    pub tls: bool,
}

/// Remote addresses whose idle buckets are swept away past this many.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The budget of wrong passphrases (or login cookies) one address may send,
/// whatever the path: `POST /api/login`, `Authorization: Bearer` on the API,
/// or the WebSocket upgrade. Twenty covers any amount of honest mistyping;
/// once spent, the address is refused with 429 on every one of those paths,
/// and earns one more guess a minute: about 1,400 a day, where an
/// unlimited API took thousands a second.
const GUESSES: Rate = Rate {
    per_second: 1.0 / 60.0,
    burst: 20.0,
};

/// Wrong guesses at the passphrase, per address.
#[derive(Default)]
struct Guesses {
    by_address: HashMap<IpAddr, Guesser>,
}

struct Guesser {
    budget: TokenBucket,
    /// True once the refusal has been logged, so a flood of refused guesses
    /// writes one line, not one per attempt.
    announced: bool,
}

impl Guesses {
    /// True when `ip` has spent its budget (and says so in the log once).
    fn refuses(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(guesser) = self.by_address.get_mut(&ip) else {
            return false;
        };
        if guesser.budget.has_token(now) {
            guesser.announced = false;
            return false;
        }
        if !guesser.announced {
            guesser.announced = true;
            log::warn!(
                "{ip}: too many wrong passphrases; refusing it with 429 until its budget refills"
            );
        }
        true
    }

    /// Counts one wrong guess from `ip`.
    fn spend(&mut self, ip: IpAddr, now: Instant) {
        if self.by_address.len() >= MAX_TRACKED_ADDRESSES {
            self.by_address
                .retain(|_, guesser| !guesser.budget.is_full(now));
        }
        self.by_address
            .entry(ip)
            .or_insert_with(|| Guesser {
                budget: TokenBucket::new(GUESSES),
                announced: false,
            })
            .budget
            .try_take(now);
    }
}

/// The refusal for an address that spent its budget of wrong guesses.
fn too_many_guesses() -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        Code::RateLimited,
        "too many wrong passphrases or keys from this address; wait a minute and try again",
    )
}

pub struct Guard {
    config: GuardConfig,
    /// What a browser's login cookie holds (see [`Guard::new`]).
    session_token: String,
    connections: Mutex<HashMap<IpAddr, usize>>,
    post_buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    guesses: Mutex<Guesses>,
}

/// Holds one connection's place in its address's count; dropping it frees the place.
pub struct Permit {
    guard: Option<(Arc<Guard>, IpAddr)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((guard, ip)) = self.guard.take() {
            let mut connections = guard.connections.lock();
            if let Some(count) = connections.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    connections.remove(&ip);
                }
            }
        }
    }
}

impl Guard {
    /// `secret` keys the login cookie: random per board, and shared by every
    /// node of a board kept in Redis, so a cookie from one node is good on all.
    pub fn new(config: GuardConfig, secret: &[u8]) -> Guard {
        // The cookie is an HMAC of the passphrase: the passphrase itself is
        // never stored in a cookie, and changing it voids every old cookie.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let passphrase = config.password.as_deref().unwrap_or("");
        let tag = ring::hmac::sign(&key, passphrase.as_bytes());
        Guard {
            config,
            session_token: crate::protocol::hex(tag.as_ref()),
            connections: Mutex::new(HashMap::new()),
            post_buckets: Mutex::new(HashMap::new()),
            guesses: Mutex::new(Guesses::default()),
        }
    }

    pub fn has_password(&self) -> bool {
        self.config.password.is_some()
    }

    /// Refuses a request sent by a page of another site. Requests without
    /// an `Origin` (scripts, curl) pass: they cannot carry a victim's cookies
    /// through a browser.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if same_origin(origin, host)
            || self
                .config
                .allow_origins
                .iter()
                .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return Ok(());
        }
        log::info!("refused a request from foreign origin {origin:?}");
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            Code::ForbiddenOrigin,
            format!("requests from {origin} are not allowed; see --allow-origin"),
        ))
    }

    /// Refuses a request without the passphrase, when one is set. Accepts
    /// `Authorization: Bearer <passphrase>` (scripts) or the login cookie
    /// (browsers, after `POST /api/login`). A wrong passphrase or cookie
    /// counts against `ip`'s budget of guesses; a request without either
    /// (a page that has not logged in yet) does not.
    pub fn check_auth(&self, headers: &HeaderMap, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let Some(password) = &self.config.password else {
            return Ok(());
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        let mut cookies = cookies(headers, SESSION_COOKIE).peekable();
        let guessed = bearer.is_some() || cookies.peek().is_some();
        self.judge(ip, guessed, || {
            bearer.is_some_and(|given| constant_time_eq(given.as_bytes(), password.as_bytes()))
                || cookies
                    .any(|value| constant_time_eq(value.as_bytes(), self.session_token.as_bytes()))
        })
        .map_err(|wrong| {
            wrong.unwrap_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    Code::Unauthorized,
                    "this board needs its passphrase",
                )
            })
        })
    }

    /// Checks a passphrase given to `POST /api/login` from `ip`; returns the
    /// cookie to set.
    pub fn login(
        &self,
        given: &str,
        ip: Option<IpAddr>,
    ) -> Result<Option<actix_web::cookie::Cookie<'static>>, Refusal> {
        let Some(password) = &self.config.password else {
            return Ok(None);
        };
        self.judge(ip, true, || {
            constant_time_eq(given.as_bytes(), password.as_bytes())
        })
        .map_err(|wrong| {
            wrong.unwrap_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    Code::Unauthorized,
                    "wrong passphrase",
                )
            })
        })?;
        Ok(Some(
            actix_web::cookie::Cookie::build(SESSION_COOKIE, self.session_token.clone())
                .path("/")
                .http_only(true)
                .secure(self.config.tls)
                .same_site(actix_web::cookie::SameSite::Strict)
                // The page no longer keeps the passphrase, so the cookie is
                // what keeps a browser logged in: past a browser restart
                // too, up to the 400 days browsers allow.
                .max_age(actix_web::cookie::time::Duration::days(400))
                .finish(),
        ))
    }

    /// The one place a secret is checked: refuses an address that spent its
    /// budget before looking at what it sent (so a right guess then tells it
    /// nothing), runs `matches`, and counts a miss when something was
    /// `guessed`. `Err(Some(refusal))` is the 429; `Err(None)` a plain miss.
    fn judge(
        &self,
        ip: Option<IpAddr>,
        guessed: bool,
        matches: impl FnOnce() -> bool,
    ) -> Result<(), Option<Refusal>> {
        let now = Instant::now();
        // An IPv6 host usually holds a whole /64: its guesses count as one
        // address's, as its posts are blocked as one sender's.
        let ip = ip.map(crate::protocol::sender_address);
        if let Some(ip) = ip {
            if self.guesses.lock().refuses(ip, now) {
                return Err(Some(too_many_guesses()));
            }
        }
        if matches() {
            return Ok(());
        }
        if let (Some(ip), true) = (ip, guessed) {
            self.guesses.lock().spend(ip, now);
        }
        Err(None)
    }

    /// Refuses `ip` once it has spent its budget of wrong guesses: an author
    /// key or the operator secret (on `edit-message`, `delete-message`,
    /// `block-sender` and their HTTP twins) is a secret like the
    /// passphrase, and wrong ones draw on the same budget.
    pub fn may_guess(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        match ip.map(crate::protocol::sender_address) {
            Some(ip) if self.guesses.lock().refuses(ip, Instant::now()) => Err(too_many_guesses()),
            _ => Ok(()),
        }
    }

    /// Counts a key that was refused as `forbidden` as one wrong guess from `ip`.
    pub fn missed(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip.map(crate::protocol::sender_address) {
            self.guesses.lock().spend(ip, Instant::now());
        }
    }

    /// Counts a new connection from `ip`, or refuses it when the address
    /// already has as many as allowed.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let limit = self.config.max_connections_per_ip;
        let Some(ip) = ip.filter(|ip| limit > 0 && !is_this_computer(*ip)) else {
            return Ok(Permit { guard: None });
        };
        let mut connections = self.connections.lock();
        let count = connections.entry(ip).or_insert(0);
        if *count >= limit {
            log::info!("{ip}: refused a connection over the limit of {limit}");
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::TooManyConnections,
                format!("at most {limit} connections per address"),
            ));
        }
        *count += 1;
        Ok(Permit {
            guard: Some((self.clone(), ip)),
        })
    }

    /// Takes a token from `ip`'s posting bucket, or refuses the post.
    pub fn allow_post(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let (Some(rate), Some(ip)) = (self.config.post_rate, ip) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.post_buckets.lock();
        if buckets.len() >= MAX_TRACKED_ADDRESSES {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let allowed = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate))
            .try_take(now);
        if allowed {
            Ok(())
        } else {
            log::info!("{ip}: rejected a post or login (rate-limited)");
            Err(rate_limited(rate))
        }
    }
}

/// The values of every cookie named `name` in the request's `Cookie` headers.
/// (The login token is plain hex, so no percent-decoding is needed.)
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// True for 127.0.0.1 and ::1 (also as an IPv4-mapped address): where this
/// computer's own browser, a load test or a reverse proxy connects from.
fn is_this_computer(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

/// The refusal for a post over its rate.
pub fn rate_limited(rate: Rate) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        Code::RateLimited,
        format!(
            "too many messages: at most {} per second (bursts of {}); this one was not posted",
            rate.per_second, rate.burst
        ),
    )
}

/// True when `origin` (`scheme://host[:port]`) names the `host` header's authority.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let normalize = |authority: &str| {
        let authority = authority.to_ascii_lowercase();
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !authority.ends_with(']');
        if has_port {
            authority
        } else {
            format!("{authority}:{default_port}")
        }
    };
    !host.is_empty() && normalize(authority) == normalize(host)
}

/// Compares two secrets in time that depends only on their lengths, so the
/// time a wrong guess takes tells nothing about how close it was.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_second: 10.0,
            burst: 20.0,
        };
        let mut bucket = TokenBucket::new(rate);
        let start = Instant::now();
        let allowed = (0..25).filter(|_| bucket.try_take(start)).count();
        assert_eq!(allowed, 20);
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(160)));
        assert!(bucket.is_full(start + Duration::from_secs(5)));
    }

    #[test]
    fn same_origin_compares_scheme_default_ports_and_case() {
        assert!(same_origin("http://192.168.1.5:4000", "192.168.1.5:4000"));
        assert!(same_origin("http://Board.local", "board.local:80"));
        assert!(same_origin("https://board.local", "board.local"));
        assert!(same_origin("http://[::1]:4000", "[::1]:4000"));
        assert!(!same_origin("http://evil.example", "192.168.1.5:4000"));
        assert!(!same_origin("http://192.168.1.5:4001", "192.168.1.5:4000"));
        assert!(!same_origin("null", "192.168.1.5:4000"));
        assert!(!same_origin("http://a", ""));
    }

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
