//! SSRF protection. A webhook URL is chosen by whoever can create webhooks, but requests leave
//! from the database server, next to private services and cloud metadata endpoints. Addresses
//! are judged after DNS resolution, on the address actually connected to, so neither a DNS
//! name pointing inside nor an odd literal form (`http://2130706433/`) gets through.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::InvalidField;

/// Which addresses may be connected to: everything public, plus the networks an operator
/// listed in `webhook.allowed_networks`.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
}

/// An address the policy refuses, and the name of the range it falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    pub range: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "address {} is refused by the network policy ({}); \
             list it in webhook.allowed_networks to allow it",
            self.ip, self.range
        )
    }
}

impl std::error::Error for Refusal {}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

const PRIVATE: &str = "private";
const DOCUMENTATION: &str = "documentation";

const REFUSED_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "this network"),
    (v4(10, 0, 0, 0, 8), PRIVATE),
    (v4(172, 16, 0, 0, 12), PRIVATE),
    (v4(192, 168, 0, 0, 16), PRIVATE),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local / cloud metadata"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), DOCUMENTATION),
    (v4(198, 51, 100, 0, 24), DOCUMENTATION),
    (v4(203, 0, 113, 0, 24), DOCUMENTATION),
    (v4(192, 88, 99, 0, 24), "6to4 relay"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    // Includes the limited broadcast address 255.255.255.255.
    (v4(240, 0, 0, 0, 4), "reserved"),
];

const REFUSED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), DOCUMENTATION),
    // Includes Teredo (2001::/32), whose embedded address cannot be trusted.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments",
    ),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), PRIVATE),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// IPv6 forms that carry an IPv4 address in their last 32 bits and reach it.
const EMBEDDING_V6: &[Ipv6Net] = &[
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),    // IPv4-mapped
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),         // IPv4-compatible (deprecated)
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64
];

const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// The IPv4 address an IPv6 address leads to, for the forms that embed one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if ip.is_unspecified() || ip.is_loopback() {
        None // inside ::/96, but not IPv4-compatible addresses
    } else if EMBEDDING_V6.iter().any(|net| net.contains(&ip)) {
        Some(Ipv4Addr::from(bits as u32))
    } else if SIX_TO_FOUR.contains(&ip) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

/// The name of the refused range `ip` falls in, if any.
fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => REFUSED_V4
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, range)| range),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(inner) => refused_range(IpAddr::V4(inner)),
            None => REFUSED_V6
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|&(_, range)| range),
        },
    }
}

impl NetworkPolicy {
    /// `webhook.allowed_networks`: CIDRs or bare addresses, separated by commas and/or
    /// whitespace. Empty allows nothing beyond public addresses.
    pub fn parse(allowed_networks: &str) -> Result<Self, InvalidField> {
        let allowed = allowed_networks
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        InvalidField::new(
                            "webhook.allowed_networks",
                            format!("{entry:?} is not a CIDR network or an IP address"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(NetworkPolicy { allowed })
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let listed = |ip: IpAddr| self.allowed.iter().any(|net| net.contains(&ip));
        listed(ip)
            || match ip {
                IpAddr::V6(v6) => embedded_v4(v6).is_some_and(|v4| listed(IpAddr::V4(v4))),
                IpAddr::V4(_) => false,
            }
    }

    /// Is `ip` in a network the operator listed (whatever the range it falls in)?
    pub fn lists(&self, ip: IpAddr) -> bool {
        self.allows(ip)
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        match refused_range(ip) {
            Some(range) if !self.allows(ip) => Err(Refusal { ip, range }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range_of(s: &str) -> Option<&'static str> {
        NetworkPolicy::default().check(ip(s)).err().map(|r| r.range)
    }

    #[test]
    fn every_refused_ipv4_range() {
        let cases = [
            ("0.0.0.0", "this network"),
            ("0.255.255.255", "this network"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local / cloud metadata"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("192.88.99.1", "6to4 relay"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ];
        for (addr, range) in cases {
            assert_eq!(range_of(addr), Some(range), "{addr}");
        }
    }

    #[test]
    fn neighbours_of_refused_ipv4_ranges_are_public() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(range_of(addr), None, "{addr}");
        }
    }

    #[test]
    fn every_refused_ipv6_range() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("64:ff9b:1::1", "local NAT64"),
            ("100::1", "discard"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol assignments"),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "IETF protocol assignments",
            ),
            ("2001:1ff::1", "IETF protocol assignments"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ];
        for (addr, range) in cases {
            assert_eq!(range_of(addr), Some(range), "{addr}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for addr in [
            "8.8.8.8",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2a00:1450:4001::1",
        ] {
            assert_eq!(NetworkPolicy::default().check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address() {
        let cases = [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local / cloud metadata"),
            ("::127.0.0.1", "loopback"),
            ("::169.254.169.254", "link-local / cloud metadata"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::169.254.169.254", "link-local / cloud metadata"),
            ("2002:7f00:0001::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local / cloud metadata"),
            ("::ffff:10.1.2.3", "private"),
        ];
        for (addr, range) in cases {
            assert_eq!(range_of(addr), Some(range), "{addr}");
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:0808:0808::1"] {
            assert_eq!(range_of(public), None, "{public}");
        }
    }

    #[test]
    fn allowed_networks_exempt_addresses() {
        let policy = NetworkPolicy::parse("127.0.0.1/32").unwrap();
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("2002:7f00:1::")), Ok(()));
        assert_eq!(
            policy.check(ip("127.0.0.2")),
            Err(Refusal {
                ip: ip("127.0.0.2"),
                range: "loopback"
            })
        );
        assert!(policy.check(ip("::1")).is_err());

        let policy = NetworkPolicy::parse(" 10.0.0.0/8,192.168.1.5  ::1\nfd00::/8 ,").unwrap();
        assert!(policy.check(ip("10.20.30.40")).is_ok());
        assert!(policy.check(ip("192.168.1.5")).is_ok());
        assert!(policy.check(ip("192.168.1.6")).is_err());
        assert!(policy.check(ip("::1")).is_ok());
        assert!(policy.check(ip("fd00::5")).is_ok());
        assert!(policy.check(ip("fc00::5")).is_err());

        let nothing = NetworkPolicy::parse("").unwrap();
        assert!(nothing.check(ip("127.0.0.1")).is_err());
        assert!(nothing.check(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "10.0.0.0/33",
            "localhost",
            "10.0.0",
            "::1/129",
            "127.0.0.1/8/8",
        ] {
            let err = NetworkPolicy::parse(&format!("8.8.8.8/32, {bad}")).unwrap_err();
            assert_eq!(err.field, "webhook.allowed_networks");
            assert!(err.message.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn refusal_message() {
        let refusal = NetworkPolicy::default().check(ip("127.0.0.1")).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "address 127.0.0.1 is refused by the network policy (loopback); \
             list it in webhook.allowed_networks to allow it"
        );
    }

    #[test]
    fn odd_literal_hosts_resolve_to_refused_addresses() {
        for literal in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://0251.0376.0251.0376/", // 169.254.169.254 in octal
        ] {
            let url = url::Url::parse(literal).unwrap();
            let addrs = url.socket_addrs(|| None).unwrap();
            assert!(!addrs.is_empty(), "{literal}");
            for addr in addrs {
                assert!(
                    NetworkPolicy::default().check(addr.ip()).is_err(),
                    "{literal} → {addr}"
                );
            }
        }
    }
}
