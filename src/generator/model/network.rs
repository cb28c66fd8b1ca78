//! IPv4 subnets for the appliance network and the WireGuard overlay.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`; the address must be the network address.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a subnet in a.b.c.d/n form"))?;
        let base: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=29).contains(p))
            .ok_or_else(|| format!("prefix `/{prefix}` must be between /8 and /29"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(base) & !mask != 0 {
            let network = Ipv4Addr::from(u32::from(base) & mask);
            return Err(format!(
                "`{text}` has host bits set; did you mean `{network}/{prefix}`?"
            ));
        }
        if !base.is_private() {
            return Err(format!("`{text}` is not a private (RFC 1918) range"));
        }
        Ok(Subnet { base, prefix })
    }

    /// The n-th address of the subnet (0 is the network address).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n < self.size() - 1).then(|| Ipv4Addr::from(u32::from(self.base) + n))
    }

    /// The first usable address: the host side of the bridge or link.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_numbers_hosts() {
        let subnet = Subnet::parse("10.88.0.0/16").unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(subnet.host(258), Some(Ipv4Addr::new(10, 88, 1, 2)));
        assert_eq!(subnet.host(65535), None);
        assert!(Subnet::parse("10.88.0.1/16").unwrap_err().contains("10.88.0.0/16"));
        assert!(Subnet::parse("8.8.8.0/24").is_err());
        assert!(Subnet::parse("10.0.0.0").is_err());
    }
}
