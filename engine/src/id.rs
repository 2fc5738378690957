//! Identifiers of storage objects, as newtypes: storage image, LSS, volume, extent pool,
//! volume group, host connection.
//!
//! These are storage facts (a volume's LSS is its high byte), not DS CLI text: ranges, `-`
//! from stdin and shortened IDs are the cli's business. Display is the canonical form
//! (upper-case hex, zero padded) used in catalogs, logs and NBD export names.

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// DS6000 (1750) or DS8000 (2107): decides the LSS and address-group ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MachineType {
    Ds6000,
    Ds8000,
}

impl MachineType {
    pub fn code(self) -> &'static str {
        match self {
            MachineType::Ds6000 => "1750",
            MachineType::Ds8000 => "2107",
        }
    }

    /// Highest LSS number: 1750 has 00-1F, 2107 has 00-FE (FF is reserved).
    pub fn max_lss(self) -> u8 {
        match self {
            MachineType::Ds6000 => 0x1F,
            MachineType::Ds8000 => 0xFE,
        }
    }

    /// Model shown by `lssi` (a representative model of each family).
    pub fn model(self) -> &'static str {
        match self {
            MachineType::Ds6000 => "511",
            MachineType::Ds8000 => "961",
        }
    }
}

/// A storage image ID such as `IBM.2107-75FA120`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageId {
    pub machine: MachineType,
    /// Seven upper-case alphanumerics.
    pub serial: String,
}

impl ImageId {
    /// The storage unit this image belongs to: the serial with its last character `0`.
    pub fn unit(&self) -> String {
        let mut s = self.serial.clone();
        s.pop();
        format!("IBM.{}-{}0", self.machine.code(), s)
    }

    /// A deterministic WWNN derived from the ID (IBM's 5005076 prefix, then a hash of the
    /// serial), so the same image always shows the same WWNN.
    pub fn wwnn(&self) -> String {
        let crc = crc32c::crc32c(self.to_string().as_bytes());
        format!("5005076{:01X}{:08X}", (crc >> 28) & 0xF, crc.rotate_left(7))
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IBM.{}-{}", self.machine.code(), self.serial)
    }
}

impl FromStr for ImageId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::new(ErrorKind::InvalidArgument, s, "storage image ID must look like IBM.2107-75FA120");
        let rest = s.strip_prefix("IBM.").or_else(|| s.strip_prefix("ibm.")).ok_or_else(bad)?;
        let (mt, serial) = rest.split_once('-').ok_or_else(bad)?;
        let machine = match mt {
            "1750" => MachineType::Ds6000,
            "2107" => MachineType::Ds8000,
            _ => return Err(bad()),
        };
        if serial.len() != 7 || !serial.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        Ok(ImageId { machine, serial: serial.to_ascii_uppercase() })
    }
}

impl TryFrom<String> for ImageId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ImageId> for String {
    fn from(id: ImageId) -> String {
        id.to_string()
    }
}

/// A logical subsystem (FB) or logical control unit (CKD): two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LssId(pub u8);

impl LssId {
    /// Address group: 16 consecutive LSSs share one, and one storage type.
    pub fn addrgrp(self) -> u8 {
        self.0 >> 4
    }
    /// Even LSSs belong to server (rank group) 0, odd to 1.
    pub fn rankgrp(self) -> u8 {
        self.0 & 1
    }
}

impl fmt::Display for LssId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}", self.0)
    }
}

/// A volume ID `XYZZ`: `XY` is the LSS, `ZZ` the volume within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeId(pub u16);

impl VolumeId {
    pub fn lss(self) -> LssId {
        LssId((self.0 >> 8) as u8)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// An extent pool `P<n>`; even numbers belong to rank group 0, odd to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolId(pub u16);

impl PoolId {
    pub fn rankgrp(self) -> u8 {
        (self.0 & 1) as u8
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

impl FromStr for PoolId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.strip_prefix('P')
            .or_else(|| s.strip_prefix('p'))
            .filter(|d| !d.is_empty() && d.len() <= 5 && d.chars().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .map(PoolId)
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, s, "extent pool ID must look like P0"))
    }
}

/// A volume group `V<n>` (DS8000: `V0`, `V15`): the volumes a host connection may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolGrpId(pub u32);

impl fmt::Display for VolGrpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}", self.0)
    }
}

impl FromStr for VolGrpId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.strip_prefix('V')
            .or_else(|| s.strip_prefix('v'))
            .filter(|d| !d.is_empty() && d.len() <= 6 && d.chars().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .map(VolGrpId)
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, s, "volume group ID must look like V0"))
    }
}

/// A host connection: four hex digits (`0000`), as DS8000 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostId(pub u16);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// A volume somewhere on the site: image plus volume. Its Display form
/// (`IBM.2107-75FA120/1000`) is the NBD export name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeKey {
    pub image: ImageId,
    pub volume: VolumeId,
}

impl fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.image, self.volume)
    }
}

impl FromStr for VolumeKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::new(ErrorKind::InvalidArgument, s, "volume must look like IBM.2107-75FA120/1000");
        let (img, vol) = s.rsplit_once('/').ok_or_else(bad)?;
        if vol.len() != 4 {
            return Err(bad());
        }
        let volume = u16::from_str_radix(vol, 16).map_err(|_| bad())?;
        Ok(VolumeKey { image: img.parse()?, volume: VolumeId(volume) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_parse_and_print() {
        let id: ImageId = "IBM.2107-75fa120".parse().unwrap();
        assert_eq!(id.to_string(), "IBM.2107-75FA120");
        assert_eq!(id.unit(), "IBM.2107-75FA120");
        assert_eq!(id.machine.max_lss(), 0xFE);
        let id: ImageId = "IBM.1750-68FA121".parse().unwrap();
        assert_eq!(id.unit(), "IBM.1750-68FA120");
        assert_eq!(id.machine.max_lss(), 0x1F);
        assert!("IBM.2105-75FA120".parse::<ImageId>().is_err());
        assert!("IBM.2107-75FA12".parse::<ImageId>().is_err());
        assert!("2107-75FA120".parse::<ImageId>().is_err());
    }

    #[test]
    fn wwnn_is_deterministic_16_hex() {
        let id: ImageId = "IBM.2107-75FA120".parse().unwrap();
        assert_eq!(id.wwnn(), id.wwnn());
        assert_eq!(id.wwnn().len(), 16);
        let other: ImageId = "IBM.2107-75FA150".parse().unwrap();
        assert_ne!(id.wwnn(), other.wwnn());
    }

    #[test]
    fn volume_and_lss() {
        let v = VolumeId(0x1A05);
        assert_eq!(v.lss(), LssId(0x1A));
        assert_eq!(v.lss().addrgrp(), 1);
        assert_eq!(v.lss().rankgrp(), 0);
        assert_eq!(v.to_string(), "1A05");
        let k: VolumeKey = "IBM.2107-75FA120/1a05".parse().unwrap();
        assert_eq!(k.to_string(), "IBM.2107-75FA120/1A05");
        assert_eq!("P12".parse::<PoolId>().unwrap(), PoolId(12));
        assert!("Q1".parse::<PoolId>().is_err());
        assert_eq!("v15".parse::<VolGrpId>().unwrap(), VolGrpId(15));
        assert_eq!(VolGrpId(3).to_string(), "V3");
        assert!("V".parse::<VolGrpId>().is_err());
        assert_eq!(HostId(0x1A).to_string(), "001A");
    }
}
