//! Property tests of the SSRF guard over arbitrary addresses, CIDR strings and host
//! spellings: nothing panics, CIDRs round-trip, the policy refuses every range the
//! standard library knows to be non-global (in every IPv6 disguise of an IPv4
//! address), and the transport never connects to a refused address however its URL
//! spells it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use bytes::Bytes;
use proptest::prelude::*;
use webhook_dispatcher::{
    destination::{Cidr, DestinationPolicy},
    transport::{Request, SendError, Transport, TransportConfig, parse_url},
};

const CASES: u32 = 512;

/// IPv6 forms that carry an IPv4 address, as the policy documents them.
fn disguises(v4: Ipv4Addr) -> [Ipv6Addr; 4] {
    let [a, b, c, d] = v4.octets();
    let hi = u16::from_be_bytes([a, b]);
    let lo = u16::from_be_bytes([c, d]);
    [
        v4.to_ipv6_mapped(),
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
        Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
    ]
}

/// Addresses in the special IPv4 ranges, and anything at all.
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(10, b, c, d)),
        any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
        any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
        (16u8..32, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(172, b, c, d)),
        any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(192, 168, c, d)),
        (64u8..128, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(100, b, c, d)),
        (224u8..=255, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d)),
    ]
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (0u16..0x4000, any::<u128>())
            .prop_map(|(top, rest)| Ipv6Addr::from((u128::from(top) << 112) | (rest >> 16))),
        (
            prop_oneof![Just(0xfc00u16), Just(0xfe80), Just(0xff00), Just(0xfec0)],
            any::<u128>()
        )
            .prop_map(|(top, rest)| Ipv6Addr::from((u128::from(top) << 112) | (rest >> 24))),
    ]
}

/// Whether the standard library calls a v4 address non-global (stable predicates only).
fn std_special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
}

fn std_special_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
}

/// The IPv4 address a v6 address carries, in any of the documented forms.
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] | [0, 0, 0, 0, 0, 0, ..] => {
            Some(low())
        }
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low()),
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// CIDR text: parses or fails cleanly; what parses prints and parses back the same,
    /// contains its own address, and has a prefix that fits.
    #[test]
    fn cidr_text_round_trips(s in prop_oneof![
        any::<String>(),
        "[0-9.]{1,16}(/[0-9+-]{0,4})?",
        "[0-9a-fA-F:.]{1,40}(/[0-9]{0,4})?",
        " ?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,3} ?",
    ]) {
        if let Ok(c) = s.parse::<Cidr>() {
            let bits = if c.addr().is_ipv4() { 32 } else { 128 };
            prop_assert!(c.prefix() <= bits);
            prop_assert!(c.contains(c.addr()));
            prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
        }
    }

    /// `Cidr::new` accepts exactly the prefixes that fit, and `contains` compares the
    /// leading `prefix` bits.
    #[test]
    fn cidr_contains_compares_leading_bits(a in any::<u128>(), b in any::<u128>(), prefix in any::<u8>(), v4 in any::<bool>()) {
        let (net, ip, bits) = if v4 {
            // Truncation is the point: any 32 bits.
            #[allow(clippy::cast_possible_truncation)]
            let (x, y) = (a as u32, b as u32);
            (IpAddr::V4(x.into()), IpAddr::V4(y.into()), 32u32)
        } else {
            (IpAddr::V6(a.into()), IpAddr::V6(b.into()), 128u32)
        };
        let cidr = Cidr::new(net, prefix);
        prop_assert_eq!(cidr.is_some(), u32::from(prefix) <= bits);
        let Some(cidr) = cidr else { return Ok(()) };
        prop_assert!(cidr.contains(net));
        let shift = bits - u32::from(prefix);
        let same = if v4 {
            // The low 32 bits, as above.
            #[allow(clippy::cast_possible_truncation)]
            let (x, y) = (a as u32, b as u32);
            x.checked_shr(shift).unwrap_or(0) == y.checked_shr(shift).unwrap_or(0)
        } else {
            a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
        };
        prop_assert_eq!(cidr.contains(ip), same);
        // Never across families.
        let other = if v4 { IpAddr::V6(Ipv6Addr::from(a)) } else { IpAddr::V4(Ipv4Addr::from(0)) };
        prop_assert!(!cidr.contains(other));
    }

    /// Every IPv4 address the standard library calls special is refused, and each of its
    /// IPv6 disguises gets the same answer as the address itself.
    #[test]
    fn ipv4_ranges_and_their_disguises(ip in v4()) {
        let policy = DestinationPolicy::public_only();
        let verdict = policy.check(IpAddr::V4(ip));
        if std_special_v4(ip) {
            prop_assert!(verdict.is_err(), "{ip} allowed");
        }
        if let Err(r) = verdict {
            prop_assert_eq!(r.ip(), IpAddr::V4(ip));
            prop_assert!(!r.reason().is_empty());
        }
        for v6 in disguises(ip) {
            prop_assert_eq!(
                policy.check(IpAddr::V6(v6)).is_err(),
                verdict.is_err(),
                "{} vs {}", v6, ip
            );
        }
        prop_assert!(DestinationPolicy::allow_all().check(IpAddr::V4(ip)).is_ok());
        // An allow-listed range lets the address and its disguises through.
        let listed = DestinationPolicy::public_only().allow(Cidr::from(IpAddr::V4(ip)));
        prop_assert!(listed.check(IpAddr::V4(ip)).is_ok());
        prop_assert!(listed.check(IpAddr::V6(ip.to_ipv6_mapped())).is_ok());
    }

    /// Every IPv6 address the standard library calls special is refused; what is
    /// allowed is global unicast (`2000::/3`) or carries an allowed IPv4 address.
    #[test]
    fn ipv6_ranges(ip in v6()) {
        let policy = DestinationPolicy::public_only();
        let verdict = policy.check(IpAddr::V6(ip));
        if std_special_v6(ip) {
            prop_assert!(verdict.is_err(), "{ip} allowed");
        }
        if verdict.is_ok() {
            let global = ip.segments()[0] & 0xe000 == 0x2000;
            let carries_public = carried_v4(ip)
                .is_some_and(|v4| policy.check(IpAddr::V4(v4)).is_ok());
            prop_assert!(global || carries_public, "{ip} allowed");
        }
    }

    /// URLs with arbitrary hosts parse or fail cleanly.
    #[test]
    fn urls_with_arbitrary_hosts_parse_cleanly(host in prop_oneof![any::<String>(), "[a-z0-9.:\\[\\]%@-]{0,30}"]) {
        for url in [format!("http://{host}/hook"), format!("https://{host}"), host] {
            if let Ok(uri) = parse_url(&url) {
                prop_assert!(uri.host().is_some_and(|h| !h.is_empty()));
            }
        }
    }
}

/// Spellings of an IPv4 address in a URL host that reach a connector.
fn spellings(ip: Ipv4Addr) -> Vec<String> {
    let n = u32::from(ip);
    let mut out = vec![ip.to_string(), format!("[{}]", ip.to_ipv6_mapped())];
    out.extend(disguises(ip).iter().map(|v6| format!("[{v6}]")));
    // Numeric forms a system resolver reads as an address (inet_aton).
    out.push(n.to_string());
    out
}

/// The transport refuses every refused address before connecting, whatever the
/// spelling: a connection attempt would show up as a connect error or a timeout.
#[test]
fn transport_refuses_every_spelling_of_a_refused_address() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = Transport::new(TransportConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    });
    let policy = DestinationPolicy::public_only();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 48,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&v4(), |ip| {
            if policy.check(IpAddr::V4(ip)).is_ok() {
                // Public: nothing to check without sending a packet.
                return Ok(());
            }
            for host in spellings(ip) {
                let url = format!("http://{host}:9/hook");
                let uri =
                    parse_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
                let outcome =
                    runtime.block_on(transport.send(Request::new(uri, Bytes::from_static(b"{}"))));
                prop_assert!(outcome.status.is_none(), "{url} answered");
                prop_assert!(
                    matches!(&outcome.error, Some(SendError::Refused(_))),
                    "{url}: {:?}",
                    outcome.error
                );
            }
            Ok(())
        })
        .unwrap();
}
