//! Which network addresses webhooks may be sent to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for addresses on the public internet; false for loopback, private
/// (RFC 1918), link-local (the cloud metadata service among them), CGNAT,
/// multicast, unspecified, documentation, IPv6 unique-local and link-local,
/// NAT64 forms of any of these, and every IPv6 address that tunnels or
/// translates to an IPv4 one ([`TUNNELS_TO_IPV4`]).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// IPv6 ranges refused whole, whatever IPv4 address they carry: a relay,
/// a translator or the host's own stack turns them into IPv4 traffic that
/// the IPv4 checks never saw, and no webhook receiver needs them.
/// `(prefix, length in bits)`.
pub const TUNNELS_TO_IPV4: [(Ipv6Addr, u32); 5] = [
    // IPv4-mapped (RFC 4291): a dual-stack socket connects over IPv4.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    // IPv4-translated (SIIT, RFC 2765).
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96),
    // 6to4 (RFC 3056): the IPv4 address is in bits 16 to 48.
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
    // Teredo (RFC 4380): the server's IPv4, and the client's inverted.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),
    // NAT64 local use (RFC 8215): a translator inside some network.
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
];

/// Whether `ip` is inside `prefix/len`.
fn in_range(ip: Ipv6Addr, (prefix, len): (Ipv6Addr, u32)) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(prefix) & mask
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if TUNNELS_TO_IPV4.iter().any(|&range| in_range(ip, range)) {
        return false;
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in its last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || seg[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(!public(s), "{s} must not be public");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            // NAT64's well-known prefix reaches the IPv4 internet.
            "64:ff9b::808:808",
            // Next to the ranges below, but not in them.
            "2001:1::1",
            "2003::1",
            "64:ff9b:2::1",
        ] {
            assert!(public(s), "{s} must be public");
        }
    }

    /// Each blocked IPv6 range, with a public IPv4 embedded (the whole range
    /// is refused, not only its private part) and a private one.
    #[test]
    fn ranges_that_tunnel_or_translate_to_ipv4_are_not_public() {
        for (range, examples) in [
            // IPv4-mapped ::ffff:0:0/96: ::ffff:8.8.8.8, ::ffff:127.0.0.1.
            (
                "::ffff:0:0/96",
                ["::ffff:808:808", "::ffff:7f00:1", "::ffff:0:0"],
            ),
            // IPv4-translated ::ffff:0:0:0/96 (SIIT, RFC 2765).
            (
                "::ffff:0:0:0/96",
                ["::ffff:0:808:808", "::ffff:0:a9fe:a9fe", "::ffff:0:0:0"],
            ),
            // 6to4 2002::/16: the IPv4 address is in bits 16 to 48.
            ("2002::/16", ["2002:808:808::1", "2002:7f00:1::1", "2002::"]),
            // Teredo 2001::/32: server IPv4, then the client's, inverted.
            (
                "2001::/32",
                [
                    "2001:0:808:808::f7f7:f7f7",
                    "2001:0:7f00:1::80ff:fffe",
                    "2001::",
                ],
            ),
            // NAT64 local-use 64:ff9b:1::/48 (RFC 8215).
            (
                "64:ff9b:1::/48",
                [
                    "64:ff9b:1::808:808",
                    "64:ff9b:1::a9fe:a9fe",
                    "64:ff9b:1:ffff::1",
                ],
            ),
        ] {
            for s in examples {
                assert!(!public(s), "{s} (in {range}) must not be public");
            }
        }
        // The IPv4 the NAT64 well-known prefix embeds still decides.
        assert!(!public("64:ff9b::7f00:1"));
    }
}
