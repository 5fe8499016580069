//! Who may connect: the `--allow` and `--deny` rules, and the one question
//! they answer, `Access::admits`.
//!
//! The rules are kept in the order the command line gave them, `--allow`
//! and `--deny` interleaved, and the first rule whose network holds the
//! address decides. If no rule holds it, the address is admitted, unless
//! some `--allow` was given: a list of what is allowed means that nothing
//! else is.
//!
//! An address has one meaning however it is spelled. An IPv4-mapped IPv6
//! address (`::ffff:192.0.2.7`, what a dual-stack `[::]` listener reports
//! for an IPv4 client) is the IPv4 address it carries, and a rule is
//! matched against both of an IPv4 address's spellings: `10.0.0.0/8`,
//! `::ffff:10.0.0.0/104` and `::/0` all hold `10.1.2.3`, whichever way
//! the listener reported it. So no rule can be passed by the other
//! spelling of an address it names.
//!
//! This module decides; it neither reads a socket nor logs. The accept
//! loop (`connections/accept.rs`) asks it about each newcomer.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// One `--allow` or `--deny` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Whether an address in `network` is admitted (`--allow`) or not
    /// (`--deny`).
    pub allow: bool,
    /// The addresses the rule holds: a bare address is a /32 or /128.
    pub network: IpNet,
}

/// The access rules, in the order they were given. The default admits
/// every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The rules, first match decides. A boxed slice, not a `Vec`: the
    /// rules never change once given, and `Config` stays small.
    rules: Box<[Rule]>,
    /// What an address no rule holds gets: `false` once any `--allow` is
    /// among the rules.
    otherwise: bool,
}

impl Access {
    /// Rules in the order given; an address none of them holds is admitted
    /// unless one of them is an `--allow`.
    pub fn new(rules: Vec<Rule>) -> Access {
        let otherwise = !rules.iter().any(|rule| rule.allow);
        Access {
            rules: rules.into_boxed_slice(),
            otherwise,
        }
    }

    /// True when there are no rules: every address is admitted, and the
    /// accept loop need not ask.
    pub fn admits_all(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `ip` may connect: the first rule that holds it decides,
    /// and with none, the default (see the module docs).
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        // The other spelling of an IPv4 address, for IPv6 rules.
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.rules
            .iter()
            .find(|rule| {
                rule.network.contains(&ip) || mapped.is_some_and(|m| rule.network.contains(&m))
            })
            .map_or(self.otherwise, |rule| rule.allow)
    }
}

/// Parses a network as `--allow` and `--deny` take it:
/// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (`192.0.2.7`,
/// `::1`), which holds that address alone. Bits set below the prefix
/// (`10.1.2.3/8`) are cleared: the network is `10.0.0.0/8`.
///
/// # Errors
///
/// A one-line reason, if `value` is neither a network nor an address.
pub fn parse_network(value: &str) -> Result<IpNet, String> {
    if let Ok(network) = value.parse::<IpNet>() {
        return Ok(network.trunc());
    }
    match value.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(
            "expected an address or a network such as 192.0.2.0/24, 2001:db8::/32 or ::1".into(),
        ),
    }
}

/// Rules that admit the loopback addresses alone (`127.0.0.0/8` and
/// `::1`): who may send PROXY headers unless `--proxy-from` says otherwise.
pub fn loopback_rules() -> Vec<Rule> {
    let loopback = |network: &str| Rule {
        allow: true,
        network: network.parse().expect("a well-formed literal network"),
    };
    vec![loopback("127.0.0.0/8"), loopback("::1/128")]
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.allow { "allow" } else { "deny" };
        write!(f, "{verb} {}", self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: &[(&str, &str)]) -> Access {
        Access::new(
            spec.iter()
                .map(|(verb, net)| Rule {
                    allow: *verb == "allow",
                    network: parse_network(net).expect("a network"),
                })
                .collect(),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn first_match_decides_and_allow_makes_the_default_deny() {
        let access = rules(&[("deny", "10.0.0.5"), ("allow", "10.0.0.0/8")]);
        assert!(!access.admits(ip("10.0.0.5")));
        assert!(access.admits(ip("10.0.0.6")));
        // An --allow was given: what no rule holds is denied.
        assert!(!access.admits(ip("192.0.2.1")));
        let access = rules(&[("allow", "10.0.0.0/8"), ("deny", "10.0.0.5")]);
        assert!(access.admits(ip("10.0.0.5")), "the allow came first");
        let access = rules(&[("deny", "192.0.2.0/24")]);
        assert!(!access.admits(ip("192.0.2.200")));
        assert!(
            access.admits(ip("198.51.100.1")),
            "deny only: the rest is admitted"
        );
        assert!(rules(&[]).admits(ip("::1")));
    }

    #[test]
    fn an_address_is_matched_under_both_spellings() {
        for rule in ["10.0.0.0/8", "::ffff:10.0.0.0/104", "::/0", "10.1.2.3"] {
            let access = rules(&[("deny", rule)]);
            for peer in ["10.1.2.3", "::ffff:10.1.2.3"] {
                assert!(!access.admits(ip(peer)), "deny {rule} must hold {peer}");
            }
        }
        let access = rules(&[("allow", "::ffff:127.0.0.1")]);
        assert!(access.admits(ip("127.0.0.1")));
        assert!(!access.admits(ip("127.0.0.2")));
        // A v4 rule holds no IPv6 address that is not a mapped one.
        assert!(rules(&[("deny", "0.0.0.0/0")]).admits(ip("2001:db8::1")));
    }

    #[test]
    fn networks_parse_with_or_without_a_length() {
        assert_eq!(
            parse_network("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "::1/129"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }
}
