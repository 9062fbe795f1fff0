//! Which destination addresses the dispatcher may connect to (SSRF protection).
//!
//! A [`DestinationPolicy`] is checked against every address a webhook URL leads to:
//! IP-literal hosts before connecting, host names after resolving them (only the
//! addresses the policy accepts are connected to, so a name that re-resolves to a
//! private address later cannot slip through).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IP network in CIDR notation: an address and a prefix length.
///
/// Parses from `10.0.0.0/8`, `fd00::/8`, `::1/128` or a bare address (a single-host
/// network). Bits of the address beyond the prefix are cleared, so `10.1.2.3/8`
/// equals `10.0.0.0/8`.
///
/// ```
/// use webhook_dispatcher::destination::Cidr;
///
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.20.30.40".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits; `None` when the prefix is
    /// longer than the address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix)))
            }
            _ => return None,
        };
        Some(Self { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. An IPv4 network never contains an IPv6
    /// address nor the reverse (see [`DestinationPolicy`] for IPv4-mapped addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl From<IpAddr> for Cidr {
    /// The single-host network of `addr`.
    fn from(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some((addr, prefix)) = s.split_once('/') else {
            return s
                .parse::<IpAddr>()
                .map(Self::from)
                .map_err(|_| CidrParseError::Address);
        };
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| CidrParseError::Address)?;
        // Only plain decimal digits: `u8::from_str` would also take a leading `+`.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrParseError::Prefix);
        }
        let prefix = prefix.parse::<u8>().map_err(|_| CidrParseError::Prefix)?;
        Self::new(addr, prefix).ok_or(CidrParseError::Prefix)
    }
}

/// Why a string is not a [`Cidr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrParseError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    Address,
    /// The part after `/` is not a prefix length that fits the address.
    Prefix,
}

impl fmt::Display for CidrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Address => "invalid CIDR: not an IP address",
            Self::Prefix => "invalid CIDR: bad prefix length",
        })
    }
}

impl std::error::Error for CidrParseError {}

/// A destination address the policy refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedDestination {
    ip: IpAddr,
    reason: &'static str,
}

impl RefusedDestination {
    /// The refused address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Why it was refused, e.g. `"loopback address"`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for RefusedDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "destination {} refused by policy: {}",
            self.ip, self.reason
        )
    }
}

impl std::error::Error for RefusedDestination {}

/// Which destination addresses may be contacted.
///
/// [`public_only`](Self::public_only) (the default) refuses every address that is
/// not globally routable: loopback, private (RFC 1918), shared (CGNAT), link-local
/// (including the cloud metadata addresses `169.254.169.254` and `fd00:ec2::254`),
/// unique-local, unspecified, broadcast, multicast, reserved, benchmarking and
/// documentation ranges, IPv6 outside `2000::/3`, and the IPv4-mapped,
/// IPv4-compatible, IPv4-translated, NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`)
/// forms of any refused IPv4 address. [`allow`](Self::allow) lets chosen ranges
/// through anyway. [`allow_all`](Self::allow_all) checks nothing.
///
/// ```
/// use webhook_dispatcher::destination::DestinationPolicy;
///
/// let policy = DestinationPolicy::public_only().allow("10.1.0.0/16".parse().unwrap());
/// assert!(policy.check("10.1.2.3".parse().unwrap()).is_ok());
/// assert!(policy.check("10.2.0.1".parse().unwrap()).is_err());
/// assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
/// assert!(policy.check("93.184.215.14".parse().unwrap()).is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationPolicy {
    allow_private: bool,
    allow_list: Vec<Cidr>,
}

impl Default for DestinationPolicy {
    /// [`DestinationPolicy::public_only`].
    fn default() -> Self {
        Self::public_only()
    }
}

impl DestinationPolicy {
    /// Refuses every address that is not globally routable (see the type's docs).
    pub fn public_only() -> Self {
        Self {
            allow_private: false,
            allow_list: Vec::new(),
        }
    }

    /// Allows every address: no check at all.
    pub fn allow_all() -> Self {
        Self {
            allow_private: true,
            allow_list: Vec::new(),
        }
    }

    /// Also allows the addresses in `cidr` (and their IPv4-mapped and similar IPv6
    /// forms, for an IPv4 range).
    #[must_use]
    pub fn allow(mut self, cidr: Cidr) -> Self {
        self.allow_list.push(cidr);
        self
    }

    /// Whether every address is allowed (the policy was built by
    /// [`allow_all`](Self::allow_all)), so checks can be skipped.
    pub fn allows_all(&self) -> bool {
        self.allow_private
    }

    /// The ranges allowed by [`allow`](Self::allow).
    pub fn allow_list(&self) -> &[Cidr] {
        &self.allow_list
    }

    /// Whether `ip` may be contacted; the error says why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), RefusedDestination> {
        if self.allow_private {
            return Ok(());
        }
        if !self.allow_list.is_empty() {
            let embedded = match ip {
                IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
                IpAddr::V4(_) => None,
            };
            let listed = |ip: IpAddr| self.allow_list.iter().any(|c| c.contains(ip));
            if listed(ip) || embedded.is_some_and(listed) {
                return Ok(());
            }
        }
        let reason = match ip {
            IpAddr::V4(v4) => refused_v4(v4),
            IpAddr::V6(v6) => refused_v6(v6),
        };
        match reason {
            Some(reason) => Err(RefusedDestination { ip, reason }),
            None => Ok(()),
        }
    }
}

/// Why an IPv4 address is not globally routable, if it is not.
fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let reason = match ip.octets() {
        [169, 254, 169, 254] => "cloud metadata address",
        [0, ..] => "unspecified or \"this network\" address (0.0.0.0/8)",
        [10, ..] => "private address (10.0.0.0/8)",
        [100, b, ..] if b & 0xc0 == 64 => "shared (CGNAT) address (100.64.0.0/10)",
        [127, ..] => "loopback address (127.0.0.0/8)",
        [169, 254, ..] => "link-local address (169.254.0.0/16)",
        [172, b, ..] if b & 0xf0 == 16 => "private address (172.16.0.0/12)",
        [192, 0, 0, _] => "IETF protocol assignment (192.0.0.0/24)",
        [192, 0, 2, _] => "documentation address (192.0.2.0/24)",
        [192, 88, 99, _] => "6to4 relay anycast address (192.88.99.0/24)",
        [192, 168, ..] => "private address (192.168.0.0/16)",
        [198, 18 | 19, ..] => "benchmarking address (198.18.0.0/15)",
        [198, 51, 100, _] => "documentation address (198.51.100.0/24)",
        [203, 0, 113, _] => "documentation address (203.0.113.0/24)",
        [224..=239, ..] => "multicast address (224.0.0.0/4)",
        [255, 255, 255, 255] => "broadcast address",
        [240..=255, ..] => "reserved address (240.0.0.0/4)",
        _ => return None,
    };
    Some(reason)
}

/// The IPv4 address embedded in an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`)
/// or 6to4 (`2002:aabb:ccdd::/48`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] | [0, 0, 0, 0, 0, 0, ..] => {
            Some(low)
        }
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Why an IPv6 address is not globally routable, if it is not.
fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    const METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if ip.is_unspecified() {
        return Some("unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("loopback address (::1)");
    }
    if ip == METADATA {
        return Some("cloud metadata address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4);
    }
    let s = ip.segments();
    let reason = match s[0] {
        a if a & 0xfe00 == 0xfc00 => "unique-local address (fc00::/7)",
        a if a & 0xffc0 == 0xfe80 => "link-local address (fe80::/10)",
        a if a & 0xffc0 == 0xfec0 => "site-local address (fec0::/10)",
        a if a & 0xff00 == 0xff00 => "multicast address (ff00::/8)",
        0x2001 if s[1] == 0x0db8 => "documentation address (2001:db8::/32)",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignment (2001::/23)",
        0x3fff if s[1] < 0x1000 => "documentation address (3fff::/20)",
        a if a & 0xe000 != 0x2000 => "not a global unicast address (outside 2000::/3)",
        _ => return None,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(policy: &DestinationPolicy, s: &str) -> bool {
        policy.check(ip(s)).is_err()
    }

    #[test]
    fn cidr_parses_networks_and_bare_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!((c.addr(), c.prefix()), (ip("10.0.0.0"), 8));
        let c: Cidr = "::1/128".parse().unwrap();
        assert_eq!((c.addr(), c.prefix()), (ip("::1"), 128));
        let c: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!((c.addr(), c.prefix()), (ip("192.168.1.7"), 32));
        let c: Cidr = "fd00::1".parse().unwrap();
        assert_eq!(c.prefix(), 128);
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("255.255.255.255")));
        let c: Cidr = "::/0".parse().unwrap();
        assert!(c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("1.2.3.4")));
    }

    #[test]
    fn cidr_rejects_garbage_without_panicking() {
        for bad in [
            "",
            "/",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0/8",
            "10.0.0.0/8/8",
            "10.0.0.0/999999999999",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!("1.2.3.4/40".parse::<Cidr>(), Err(CidrParseError::Prefix));
        assert_eq!("nope".parse::<Cidr>(), Err(CidrParseError::Address));
        assert_eq!(Cidr::new(ip("::"), 129), None);
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(c.contains(ip("172.16.0.0")));
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(!c.contains(ip("172.15.255.255")));
        let c: Cidr = "fe80::/10".parse().unwrap();
        assert!(c.contains(ip("febf::1")));
        assert!(!c.contains(ip("fec0::1")));
    }

    #[test]
    fn public_only_refuses_every_special_ipv4_range() {
        let p = DestinationPolicy::public_only();
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused(&p, s), "{s} should be refused");
        }
    }

    #[test]
    fn public_only_allows_public_ipv4_next_to_the_ranges() {
        let p = DestinationPolicy::public_only();
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(p.check(ip(s)), Ok(()), "{s} should be allowed");
        }
    }

    #[test]
    fn public_only_refuses_every_special_ipv6_range() {
        let p = DestinationPolicy::public_only();
        for s in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:10::1",
            "100::1",
            "64:ff9b:1::1",
            "4000::1",
        ] {
            assert!(refused(&p, s), "{s} should be refused");
        }
        assert!(p.check(ip("2606:4700:4700::1111")).is_ok());
        assert!(p.check(ip("2a00:1450:4001::1")).is_ok());
        assert!(p.check(ip("2001:4860:4860::8888")).is_ok());
    }

    #[test]
    fn ipv6_forms_of_refused_ipv4_are_refused() {
        let p = DestinationPolicy::public_only();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::10.1.2.3",
            "::0.0.0.2",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
        ] {
            assert!(refused(&p, s), "{s} should be refused");
        }
        for s in [
            "::ffff:8.8.8.8",
            "::ffff:0:1.1.1.1",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(p.check(ip(s)), Ok(()), "{s} should be allowed");
        }
    }

    #[test]
    fn refusal_says_why() {
        let p = DestinationPolicy::default();
        let r = p.check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(r.ip(), ip("169.254.169.254"));
        assert_eq!(r.reason(), "cloud metadata address");
        assert_eq!(
            r.to_string(),
            "destination 169.254.169.254 refused by policy: cloud metadata address"
        );
        let r = p.check(ip("::ffff:127.0.0.1")).unwrap_err();
        assert!(r.reason().contains("loopback"), "{r}");
        let r = p.check(ip("fd00:ec2::254")).unwrap_err();
        assert_eq!(r.reason(), "cloud metadata address");
    }

    #[test]
    fn allow_all_allows_everything() {
        let p = DestinationPolicy::allow_all();
        assert!(p.allows_all());
        assert!(!DestinationPolicy::public_only().allows_all());
        for s in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "169.254.169.254",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "8.8.8.8",
        ] {
            assert_eq!(p.check(ip(s)), Ok(()), "{s}");
        }
    }

    #[test]
    fn allow_list_lets_chosen_ranges_through() {
        let p = DestinationPolicy::public_only()
            .allow("127.0.0.1/32".parse().unwrap())
            .allow("10.1.0.0/16".parse().unwrap())
            .allow("fd00:1::/32".parse().unwrap());
        assert_eq!(p.allow_list().len(), 3);
        for s in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.0.1",
            "10.1.255.255",
            "fd00:1::5",
            "8.8.8.8",
        ] {
            assert_eq!(p.check(ip(s)), Ok(()), "{s} should be allowed");
        }
        for s in [
            "127.0.0.2",
            "::1",
            "10.2.0.1",
            "fd00:2::1",
            "192.168.0.1",
            "169.254.169.254",
        ] {
            assert!(refused(&p, s), "{s} should be refused");
        }
    }

    #[test]
    fn default_is_public_only() {
        assert_eq!(
            DestinationPolicy::default(),
            DestinationPolicy::public_only()
        );
    }
}
