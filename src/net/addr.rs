//! Which addresses an outbound request may reach, and the host rules operators write to widen
//! that. Shared by the push sender (push services) and [`super::Outbound`] (feeds, webhooks):
//! one definition of "public", so a hole fixed here is fixed for every outbound path.

use std::net::IpAddr;

/// One allowed host: exact, or written `*.host` for the subdomains of `host`. An IP address
/// is a host too (exact only), so an operator can allow `127.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    subdomains: bool,
}

impl HostRule {
    /// `host` or `*.host`, lowercase; `None` if it is not a host name or an IP address.
    pub fn parse(rule: &str) -> Option<Self> {
        let rule = rule.trim().to_ascii_lowercase();
        let (host, subdomains) = match rule.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (rule, false),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let ip = host.parse::<IpAddr>().is_ok();
        let name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        ((name || ip) && !(subdomains && ip)).then_some(Self { host, subdomains })
    }

    /// Whether `host` (lowercase, IPv6 without brackets) is covered by this rule.
    pub fn matches(&self, host: &str) -> bool {
        if self.subdomains {
            host.len() > self.host.len() + 1
                && host.ends_with(self.host.as_str())
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }

    /// Written `*.host`: any name under a domain, including ones a stranger makes up.
    pub fn is_wildcard(&self) -> bool {
        self.subdomains
    }
}

/// Hosts the operator allowed to resolve to non-public addresses (`outbound_private_hosts`):
/// a CMS on the newsroom's internal network, a chat bridge beside the service.
#[derive(Debug, Clone, Default)]
pub struct PrivateHosts(Vec<HostRule>);

impl PrivateHosts {
    /// From the setting (already validated; an entry that is not a host rule is ignored).
    pub fn new<S: AsRef<str>>(rules: &[S]) -> Self {
        Self(rules.iter().filter_map(|r| HostRule::parse(r.as_ref())).collect())
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.0.iter().any(|r| r.matches(&host))
    }
}

/// True for addresses on the public internet: not loopback, private (RFC 1918), link-local
/// (cloud metadata at 169.254.169.254), carrier-grade NAT, unspecified, broadcast, multicast,
/// documentation, benchmarking, reserved; for IPv6 not loopback, unique-local, link-local,
/// multicast, documentation, NAT64, and judged by the IPv4 address inside the IPv4-mapped and
/// IPv4-compatible forms (`::ffff:127.0.0.1`, `::127.0.0.1`) and 6to4 (`2002::/16`).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)   // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // IPv4-compatible (deprecated, `::a.b.c.d`): some stacks still route it to the v4
            // address. `::` and `::1` are caught below.
            if s[..6].iter().all(|&x| x == 0) && (s[6] != 0 || s[7] > 1) {
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                )));
            }
            // 6to4 carries an IPv4 address in bits 16..48.
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                )));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 (may map to private v4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["142.250.185.74", "2a00:1450:4001:80b::200a", "63.245.208.195", "::ffff:142.250.185.74"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn host_rules_match_exactly_or_below_a_domain() {
        let exact = HostRule::parse("CMS.example.com.tr").unwrap();
        assert!(exact.matches("cms.example.com.tr"));
        assert!(!exact.matches("x.cms.example.com.tr"));
        let wild = HostRule::parse("*.example.net").unwrap();
        assert!(
            wild.matches("a.example.net") && !wild.matches("example.net") && !wild.matches("aexample.net")
        );
        assert!(HostRule::parse("127.0.0.1").is_some());
        assert!(HostRule::parse("[::1]").is_some_and(|r| r.matches("::1")));
        for bad in ["", "*.", "*.127.0.0.1", "a b", "https://x.example", "x..example"] {
            assert!(HostRule::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn private_hosts_allow_only_what_the_operator_wrote() {
        let p = PrivateHosts::new(&["localhost", "127.0.0.1", "*.intra.example"]);
        assert!(p.allows("localhost") && p.allows("LOCALHOST") && p.allows("127.0.0.1"));
        assert!(p.allows("cms.intra.example"));
        assert!(!p.allows("127.0.0.2") && !p.allows("intra.example") && !p.allows("[::1]"));
        assert!(!PrivateHosts::default().allows("localhost"));
    }
}
