//! Certificate serial numbers as lowercase hex: how they are generated (random,
//! positive, 16 bytes), printed, parsed back from the CLI and matched against
//! serials read out of certificates and CRLs.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::CertError;

/// A certificate serial number as lowercase hex, without leading zero bytes.
///
/// Serials generated here are 16 random bytes with the top bit clear (so the DER
/// INTEGER is positive) and a non-zero first byte (so no byte is dropped in the
/// DER encoding): always 32 hex digits. Parsing accepts upper case and
/// `:`-separated forms (as printed by openssl) and normalizes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SerialHex(String);

impl SerialHex {
    /// A fresh random positive 16-byte serial.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        bytes[0] = (bytes[0] & 0x7f).max(1);
        Self::from_bytes(&bytes)
    }

    /// The serial of the big-endian bytes of a DER INTEGER (leading zeros are dropped).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let trimmed = &bytes[start..];
        if trimmed.is_empty() {
            return SerialHex("00".to_owned());
        }
        let mut s = String::with_capacity(trimmed.len() * 2);
        for b in trimmed {
            s.push_str(&format!("{b:02x}"));
        }
        SerialHex(s)
    }

    /// The big-endian bytes of the serial.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Invariant: self.0 is an even-length string of lowercase hex digits.
        self.0
            .as_bytes()
            .chunks(2)
            .map(|pair| (hex_val(pair[0]) << 4) | hex_val(pair[1]))
            .collect()
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.to_bytes())
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

impl fmt::Display for SerialHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SerialHex {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CertError::InvalidSerial {
            input: s.to_owned(),
        };
        let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes: Vec<u8> = padded
            .as_bytes()
            .chunks(2)
            .map(|pair| (hex_val(pair[0]) << 4) | hex_val(pair[1]))
            .collect();
        let serial = Self::from_bytes(&bytes);
        if serial.0.len() > 40 {
            return Err(bad());
        }
        Ok(serial)
    }
}

impl TryFrom<String> for SerialHex {
    type Error = CertError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SerialHex> for String {
    fn from(value: SerialHex) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_32_hex_digits_and_positive() {
        for _ in 0..200 {
            let s = SerialHex::random();
            assert_eq!(s.as_str().len(), 32);
            assert!(s.to_bytes()[0] & 0x80 == 0);
            assert_eq!(s.as_str(), s.as_str().to_lowercase());
        }
    }

    #[test]
    fn parse_normalizes() {
        let s: SerialHex = "00:AB:cd:01".parse().unwrap();
        assert_eq!(s.as_str(), "abcd01");
        let s: SerialHex = "abc".parse().unwrap();
        assert_eq!(s.as_str(), "0abc");
        assert!("xyz".parse::<SerialHex>().is_err());
        assert!("".parse::<SerialHex>().is_err());
        assert!("ab".repeat(21).parse::<SerialHex>().is_err());
    }

    #[test]
    fn bytes_round_trip() {
        let s = SerialHex::random();
        assert_eq!(SerialHex::from_bytes(&s.to_bytes()), s);
        assert_eq!(s.to_string().parse::<SerialHex>().unwrap(), s);
    }
}
