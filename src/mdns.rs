//! The board's name on the local network (`--mdns`): [`Advert`] answers
//! multicast DNS for `NAME.local` with the board's addresses and offers an
//! `_http._tcp` service (`_https._tcp` with TLS), from `Server::build` until
//! shutdown, when it says goodbye. The responder, its probing and the renaming
//! to `NAME-2` on a conflict are mdns-sd's; this module picks what to
//! advertise and turns the outcome into a sentence for the banner.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, RRType, ServiceDaemon, ServiceInfo};

/// How long startup waits for the name to be claimed. RFC 6762 probing takes
/// under a second (three probes 250 ms apart), and one more round after each
/// conflict; past this, the board starts anyway and says the name is unsure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// After the first interface announces, how long to wait for the others to
/// finish probing, so a conflict seen on only one of them is still reported.
const SETTLE: Duration = Duration::from_millis(400);

/// How long a stop waits for each answer of the responder thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// mdns-sd repeats a goodbye 120 ms after the first, for peers that missed it;
/// shutting the responder down earlier would drop the repeat.
const GOODBYE_REPEAT: Duration = Duration::from_millis(200);

/// Why the name could not be advertised.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error(
        "--mdns has no network address to advertise: this computer has no LAN \
         address (join a network, pick one with --bind, or drop --mdns)"
    )]
    NoAddress,
    #[error("cannot start the mDNS responder for --mdns: {0}")]
    Responder(#[from] mdns_sd::Error),
}

/// Checks a `--mdns` name and returns it as the single lower-case DNS label
/// that goes before `.local` (a trailing `.local` is accepted and dropped).
pub fn check_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim().trim_end_matches('.');
    let label = name
        .strip_suffix(".local")
        .unwrap_or(name)
        .to_ascii_lowercase();
    let valid = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if valid {
        Ok(label)
    } else {
        Err("must be a name of 1 to 63 letters, digits and inner hyphens, such as `lanboard` or `team-board`")
    }
}

/// The addresses `NAME.local` stands for, those the board listens on: with
/// `0.0.0.0` the LAN's IPv4 addresses the banner shows (A records), with
/// `::` those and the IPv6 ones too (AAAA records), else the one it is
/// bound to.
pub fn addresses(
    bind: IpAddr,
    lan: &[std::net::Ipv4Addr],
    lan6: &[std::net::Ipv6Addr],
) -> Vec<IpAddr> {
    let v4 = lan.iter().map(|&ip| IpAddr::V4(ip));
    match bind {
        IpAddr::V4(any) if any.is_unspecified() => v4.collect(),
        // `::` takes IPv4 connections too (the socket is dual-stack).
        IpAddr::V6(any) if any.is_unspecified() => {
            v4.chain(lan6.iter().map(|&ip| IpAddr::V6(ip))).collect()
        }
        one => vec![one],
    }
}

/// The board's name and service, advertised until dropped. Dropping it sends
/// the goodbyes (records with a TTL of 0) and stops the responder thread, so
/// resolvers forget the name at once instead of when their cache expires.
pub struct Advert {
    daemon: ServiceDaemon,
    /// The service instance's full name, as registered (goodbyes go by it).
    service: String,
    /// The instance's name as announced: `NAME (2)` after a conflict.
    instance: String,
    /// The label asked for (`lanboard`).
    requested: String,
    /// The label in use: the one asked for, or `lanboard-2` and so on after a
    /// conflict.
    name: String,
    /// False when no interface announced the name in time.
    confirmed: bool,
}

impl Advert {
    /// Starts the responder, registers `name.local` with `addresses` and the
    /// service on `port`, and waits (up to [`PROBE_TIMEOUT`]) until the name
    /// is claimed, so that the banner can show the name finally in use.
    pub fn start(
        name: &str,
        addresses: &[IpAddr],
        port: u16,
        scheme: &str,
    ) -> Result<Advert, MdnsError> {
        if addresses.is_empty() {
            return Err(MdnsError::NoAddress);
        }
        let daemon = ServiceDaemon::new()?;
        // Subscribed before registering, so that no outcome of the probes is missed.
        let events = daemon.monitor()?;
        let host = format!("{name}.local.");
        // The instance is named like the host, so a second board with the
        // same name shows up as "NAME (2)" beside "NAME-2.local".
        let info = ServiceInfo::new(
            &format!("_{scheme}._tcp.local."),
            name,
            &host,
            addresses,
            port,
            &[("path", "/")][..],
        )?;
        let service = info.get_fullname().to_string();
        daemon.register(info)?;
        let mut advert = Advert {
            daemon,
            instance: service.clone(),
            service,
            requested: name.to_string(),
            name: name.to_string(),
            confirmed: false,
        };
        advert.await_claim(&events, &host);
        // Later events (a conflict after startup, a socket error) only go to
        // the log; the thread ends when the responder stops.
        let host = advert.host();
        std::thread::Builder::new()
            .name("mdns-log".into())
            .spawn(move || {
                while let Ok(event) = events.recv() {
                    if let DaemonEvent::NameChange(change) = &event {
                        if matches!(change.rr_type, RRType::A | RRType::AAAA) {
                            log::warn!(
                                "another computer claimed {host}, so on {} this board is now {} \
                                 (the banner's name no longer reaches it there)",
                                change.intf_name,
                                change.new_name.trim_end_matches('.')
                            );
                        }
                    }
                    log_event(&event);
                }
            })
            .map_err(|e| mdns_sd::Error::Msg(format!("cannot start its log thread: {e}")))?;
        Ok(advert)
    }

    /// Reads the responder's events until the name is announced (plus
    /// [`SETTLE`]) or [`PROBE_TIMEOUT`] passes, noting any rename of the host.
    fn await_claim(&mut self, events: &mdns_sd::Receiver<DaemonEvent>, host: &str) {
        let start = Instant::now();
        let mut deadline = start + PROBE_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(event) = events.recv_timeout(left) else {
                break;
            };
            match &event {
                DaemonEvent::NameChange(change)
                    if matches!(change.rr_type, RRType::A | RRType::AAAA)
                        && change.original.eq_ignore_ascii_case(host) =>
                {
                    let renamed = change.new_name.trim_end_matches('.');
                    let renamed = renamed.strip_suffix(".local").unwrap_or(renamed);
                    self.name = renamed.to_ascii_lowercase();
                }
                DaemonEvent::NameChange(change)
                    if change.original.eq_ignore_ascii_case(&self.service) =>
                {
                    self.instance = change.new_name.trim_end_matches('.').to_string();
                }
                DaemonEvent::Announce(..) if !self.confirmed => {
                    self.confirmed = true;
                    deadline = deadline.min(Instant::now() + SETTLE);
                }
                _ => {}
            }
            log_event(&event);
        }
        if self.confirmed {
            log::info!(
                "advertising {}.local and the service {:?} over mDNS",
                self.name,
                self.instance
            );
        } else {
            log::warn!(
                "no interface announced {}.local within {} s; the name may not resolve",
                self.name,
                PROBE_TIMEOUT.as_secs()
            );
        }
        if let Some(notice) = self.notice() {
            log::warn!("{notice}");
        }
    }

    /// The host name in use, such as `lanboard.local` or `lanboard-2.local`.
    pub fn host(&self) -> String {
        format!("{}.local", self.name)
    }

    /// A sentence for the banner when the name asked for was taken.
    pub fn notice(&self) -> Option<String> {
        (self.name != self.requested).then(|| {
            format!(
                "{}.local is already taken on this network, so this board is {}.local.",
                self.requested, self.name
            )
        })
    }
}

impl Drop for Advert {
    fn drop(&mut self) {
        // Each step is best effort: a responder that is already gone has
        // nothing left to withdraw, and shutdown must go on regardless.
        if let Ok(status) = self.daemon.unregister(&self.service) {
            let _ = status.recv_timeout(STOP_TIMEOUT);
            std::thread::sleep(GOODBYE_REPEAT);
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(STOP_TIMEOUT);
        }
        log::info!("stopped advertising {}.local", self.name);
    }
}

/// Logs what the responder reports that matters to whoever runs the board.
fn log_event(event: &DaemonEvent) {
    match event {
        DaemonEvent::Error(error) => log::warn!("mDNS: {error}"),
        _ => log::debug!("mDNS: {event:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_becomes_one_lower_case_label() {
        assert_eq!(check_name("lanboard").unwrap(), "lanboard");
        assert_eq!(check_name("Team-Board.local").unwrap(), "team-board");
        assert_eq!(check_name("standup.local.").unwrap(), "standup");
    }

    #[test]
    fn a_name_that_is_no_dns_label_is_refused() {
        for bad in [
            "",
            "-board",
            "board-",
            "two words",
            "a.b",
            "ünï",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_interface_advertises_the_lan_addresses_ipv6_too_on_dual_stack_and_a_bound_one_itself()
    {
        let lan = ["192.168.1.20".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        let lan6 = ["2001:db8::20".parse().unwrap()];
        let all = addresses("0.0.0.0".parse().unwrap(), &lan, &lan6);
        assert_eq!(all, [IpAddr::from(lan[0]), IpAddr::from(lan[1])]);
        let dual = addresses("::".parse().unwrap(), &lan, &lan6);
        assert_eq!(
            dual,
            [
                IpAddr::from(lan[0]),
                IpAddr::from(lan[1]),
                IpAddr::from(lan6[0])
            ]
        );
        let one = addresses("192.168.1.20".parse().unwrap(), &lan, &lan6);
        assert_eq!(one, ["192.168.1.20".parse::<IpAddr>().unwrap()]);
    }
}
