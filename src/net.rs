//! The addresses a board can be reached at, for the startup banner, the
//! invite panel and the QR codes.
//!
//! Pure functions over the interface list, so they are unit-tested without a
//! network; `if-addrs` reads the real list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use qrcode::render::{svg, unicode};
use qrcode::QrCode;

/// One address to print, and whether it reaches other machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareUrl {
    pub url: String,
    /// True for an address of the local network; false for loopback, which
    /// only works on this computer.
    pub lan: bool,
    /// True for the board's `.local` name (`--mdns`) rather than an address.
    /// Phones resolve such names unevenly, so QR codes keep to an address.
    pub named: bool,
}

/// The non-loopback IPv4 addresses of the interfaces that are up.
pub fn lan_ipv4_addresses() -> Vec<Ipv4Addr> {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    let mut addresses: Vec<Ipv4Addr> = interfaces
        .iter()
        .filter(|i| !i.is_loopback() && i.oper_status != if_addrs::IfOperStatus::Down)
        .filter_map(|i| match i.ip() {
            IpAddr::V4(v4) if !v4.is_link_local() && !v4.is_unspecified() => Some(v4),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The IPv6 addresses of the interfaces that are up, but for loopback and
/// link-local ones (which need an interface named beside them to be used).
pub fn lan_ipv6_addresses() -> Vec<Ipv6Addr> {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    let mut addresses: Vec<Ipv6Addr> = interfaces
        .iter()
        .filter(|i| !i.is_loopback() && i.oper_status != if_addrs::IfOperStatus::Down)
        .filter_map(|i| match i.ip() {
            IpAddr::V6(v6)
                if !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local() =>
            {
                Some(v6)
            }
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The URLs to share for a server bound to `bind` on `port`: every LAN
/// address first (the ones to send to coworkers), then the local one.
pub fn share_urls(scheme: &str, bind: IpAddr, port: u16, lan: &[Ipv4Addr]) -> Vec<ShareUrl> {
    let url = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    };
    let mut urls = Vec::new();
    if bind.is_unspecified() {
        urls.extend(lan.iter().map(|&ip| ShareUrl {
            url: url(IpAddr::V4(ip)),
            lan: true,
            named: false,
        }));
        let local = match bind {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        urls.push(ShareUrl {
            url: url(local),
            lan: false,
            named: false,
        });
    } else {
        urls.push(ShareUrl {
            url: url(bind),
            lan: !bind.is_loopback(),
            named: false,
        });
    }
    urls
}

/// Puts the URL of the board's `.local` name (`--mdns`) before the addresses
/// in `urls`: it reaches whoever the first address reaches.
pub fn add_name(urls: &mut Vec<ShareUrl>, scheme: &str, host: &str, port: u16) {
    let lan = urls.first().is_some_and(|u| u.lan);
    urls.insert(
        0,
        ShareUrl {
            url: format!("{scheme}://{host}:{port}"),
            lan,
            named: true,
        },
    );
}

/// The URL a QR code encodes: the first address, a LAN one if there is one,
/// never the `.local` name.
pub fn qr_url(urls: &[ShareUrl]) -> Option<&ShareUrl> {
    let mut addresses = urls.iter().filter(|u| !u.named);
    let first = addresses.clone().next();
    addresses.find(|u| u.lan).or(first)
}

/// The startup banner: which address to send, which is local only.
pub fn banner(urls: &[ShareUrl]) -> String {
    let width = urls.iter().map(|u| u.url.len()).max().unwrap_or(0);
    let mut text = String::new();
    if urls.iter().any(|u| u.lan) {
        text.push_str("Share this address with your team:\n\n");
    } else {
        text.push_str("Only this computer can reach the board (no network address to share):\n\n");
    }
    let named = urls.iter().any(|u| u.named && u.lan);
    for u in urls {
        let note = if !u.lan {
            "(this computer only)"
        } else if named && !u.named {
            "(the same board, where the name does not open)"
        } else {
            "<- send this one to coworkers"
        };
        text.push_str(&format!("  {:width$}   {note}\n", u.url));
    }
    text
}

/// A QR code of `url` drawn with half-block characters, for a terminal.
pub fn qr_text(url: &str) -> Option<String> {
    let code = QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// A QR code of `url` as an SVG image, for the invite panel.
pub fn qr_svg(url: &str) -> Option<String> {
    let code = QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<svg::Color>()
            .min_dimensions(240, 240)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(192, 168, 1, 20)];

    #[test]
    fn all_interfaces_lists_every_lan_address_then_the_local_one() {
        let urls = share_urls("http", "0.0.0.0".parse().unwrap(), 4000, &LAN);
        let shown: Vec<(&str, bool)> = urls.iter().map(|u| (u.url.as_str(), u.lan)).collect();
        assert_eq!(
            shown,
            [
                ("http://10.0.0.5:4000", true),
                ("http://192.168.1.20:4000", true),
                ("http://127.0.0.1:4000", false),
            ]
        );
    }

    #[test]
    fn a_specific_bind_address_is_the_only_one_shown() {
        let urls = share_urls("http", "127.0.0.1".parse().unwrap(), 9, &LAN);
        assert_eq!(
            urls,
            [ShareUrl {
                url: "http://127.0.0.1:9".into(),
                lan: false,
                named: false,
            }]
        );
        let urls = share_urls("http", "::1".parse().unwrap(), 9, &LAN);
        assert_eq!(urls[0].url, "http://[::1]:9");
    }

    #[test]
    fn the_banner_marks_which_address_to_send() {
        let text = banner(&share_urls("http", "0.0.0.0".parse().unwrap(), 4000, &LAN));
        let lan_line = text.lines().find(|l| l.contains("192.168.1.20")).unwrap();
        assert!(lan_line.contains("send this one"));
        let local_line = text.lines().find(|l| l.contains("127.0.0.1")).unwrap();
        assert!(local_line.contains("this computer only"));
    }

    #[test]
    fn a_name_comes_first_with_the_addresses_as_its_fallback() {
        let mut urls = share_urls("http", "0.0.0.0".parse().unwrap(), 4000, &LAN);
        add_name(&mut urls, "http", "lanboard.local", 4000);
        assert_eq!(urls[0].url, "http://lanboard.local:4000");
        let text = banner(&urls);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("http")).collect();
        assert!(lines[0].contains("lanboard.local") && lines[0].contains("send this one"));
        assert!(lines[1].contains("10.0.0.5") && lines[1].contains("where the name does not"));
        assert!(lines[3].contains("127.0.0.1") && lines[3].contains("this computer only"));
    }

    #[test]
    fn the_qr_code_keeps_to_an_address_when_a_name_is_shown() {
        let mut urls = share_urls("http", "0.0.0.0".parse().unwrap(), 4000, &LAN);
        add_name(&mut urls, "http", "lanboard.local", 4000);
        assert_eq!(qr_url(&urls).unwrap().url, "http://10.0.0.5:4000");
        let mut local = share_urls("http", "127.0.0.1".parse().unwrap(), 4000, &LAN);
        add_name(&mut local, "http", "lanboard.local", 4000);
        let only = qr_url(&local).unwrap();
        assert_eq!(
            (only.url.as_str(), only.lan),
            ("http://127.0.0.1:4000", false)
        );
    }

    #[test]
    fn qr_codes_render_as_text_and_svg() {
        let text = qr_text("http://192.168.1.20:4000").unwrap();
        assert!(text.lines().count() > 10);
        let svg = qr_svg("http://192.168.1.20:4000").unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
