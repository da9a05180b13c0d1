//! The node's pod CIDR (`spec.podCIDR`, `--pod-cidr`): an IPv4 network that pods take their
//! addresses from. The first host address is the gateway on the bridge; the network and
//! broadcast addresses are never handed out.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// What is wrong with a pod CIDR string. Each variant carries the string as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("pod cidr {value:?}: expected <ipv4 network>/<prefix length>, e.g. 10.244.0.0/24")]
    MissingPrefix { value: String },
    #[error("pod cidr {value:?}: {addr:?} is not an ipv4 address")]
    BadAddress { value: String, addr: String },
    #[error("pod cidr {value:?}: prefix length {prefix:?} is not a number from 0 to 32")]
    BadPrefix { value: String, prefix: String },
    /// A /31 or /32 has no room for a network address, a gateway, a pod and a broadcast.
    #[error("pod cidr {value:?}: prefix length /{prefix} is too long; at most /30 (network, gateway, one pod, broadcast)")]
    TooSmall { value: String, prefix: u8 },
    #[error("pod cidr {value:?}: host bits are set; the network address is {network}/{prefix}")]
    HostBits {
        value: String,
        network: Ipv4Addr,
        prefix: u8,
    },
}

/// A validated IPv4 pod network: the address is the network address and the prefix is at
/// most 30.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodCidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl PodCidr {
    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        // prefix is 0..=30, so the shift never overflows.
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The first host address: the gateway, which the bridge holds.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `addr` lies inside this network (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// The addresses pods may get: every host address except the gateway, in order.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }

    /// How many addresses pods may get.
    pub fn pod_capacity(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix))) - 3
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for PodCidr {
    type Err = CidrError;

    fn from_str(value: &str) -> Result<Self, CidrError> {
        let owned = || value.to_string();
        let (addr, prefix) = value
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix { value: owned() })?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::BadAddress {
            value: owned(),
            addr: addr.to_string(),
        })?;
        // Only plain decimal digits: u8::from_str would also take "+24".
        let prefix_num = if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) {
            prefix.parse::<u8>().ok().filter(|p| *p <= 32)
        } else {
            None
        };
        let prefix = prefix_num.ok_or_else(|| CidrError::BadPrefix {
            value: owned(),
            prefix: prefix.to_string(),
        })?;
        if prefix > 30 {
            return Err(CidrError::TooSmall {
                value: owned(),
                prefix,
            });
        }
        let cidr = PodCidr {
            network: addr,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        if network != addr {
            return Err(CidrError::HostBits {
                value: owned(),
                network,
                prefix,
            });
        }
        Ok(cidr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_derives_addresses() {
        let c: PodCidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(c.pod_capacity(), 253);
        let addrs: Vec<_> = c.pod_addresses().collect();
        assert_eq!(addrs.len(), 253);
        assert_eq!(addrs[0], Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(addrs[252], Ipv4Addr::new(10, 244, 1, 254));
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 1)));

        let small: PodCidr = "192.168.7.4/30".parse().unwrap();
        assert_eq!(
            small.pod_addresses().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 168, 7, 6)]
        );
        assert_eq!(small.pod_capacity(), 1);

        let big: PodCidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(big.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
        assert_eq!(big.pod_capacity(), (1 << 24) - 3);
    }

    #[test]
    fn rejects_bad_cidrs_with_a_reason() {
        let table: &[(&str, CidrError)] = &[
            (
                "10.0.0.0",
                CidrError::MissingPrefix {
                    value: "10.0.0.0".into(),
                },
            ),
            (
                "10.0.0/24",
                CidrError::BadAddress {
                    value: "10.0.0/24".into(),
                    addr: "10.0.0".into(),
                },
            ),
            (
                "fd00::/64",
                CidrError::BadAddress {
                    value: "fd00::/64".into(),
                    addr: "fd00::".into(),
                },
            ),
            (
                "10.0.0.0/33",
                CidrError::BadPrefix {
                    value: "10.0.0.0/33".into(),
                    prefix: "33".into(),
                },
            ),
            (
                "10.0.0.0/+24",
                CidrError::BadPrefix {
                    value: "10.0.0.0/+24".into(),
                    prefix: "+24".into(),
                },
            ),
            (
                "10.0.0.0/",
                CidrError::BadPrefix {
                    value: "10.0.0.0/".into(),
                    prefix: "".into(),
                },
            ),
            (
                "10.0.0.0/31",
                CidrError::TooSmall {
                    value: "10.0.0.0/31".into(),
                    prefix: 31,
                },
            ),
            (
                "10.244.1.5/24",
                CidrError::HostBits {
                    value: "10.244.1.5/24".into(),
                    network: Ipv4Addr::new(10, 244, 1, 0),
                    prefix: 24,
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(&input.parse::<PodCidr>().unwrap_err(), want, "{input}");
        }
        let msg = "10.244.1.5/24".parse::<PodCidr>().unwrap_err().to_string();
        assert_eq!(
            msg,
            "pod cidr \"10.244.1.5/24\": host bits are set; the network address is 10.244.1.0/24"
        );
    }
}
