//! [`ImmutableId`]: the sourceAnchor derived from objectGUID.
//!
//! The ImmutableID is standard base64 (with padding) of the 16 objectGUID bytes exactly as LDAP
//! returns them. Those bytes are the .NET `Guid.ToByteArray()` layout: the first three fields are
//! little-endian, so the GUID *string* that AD tools print is the byte-swapped ("mixed-endian")
//! reading of the same bytes.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{CoreError, Result};

/// The 16 raw objectGUID bytes, in wire order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImmutableId([u8; 16]);

impl ImmutableId {
    /// Builds an ImmutableID from objectGUID bytes as LDAP returns them; anything but 16 bytes is
    /// an error.
    pub fn from_object_guid(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; 16] = bytes.try_into().map_err(|_| CoreError::GuidLength { len: bytes.len() })?;
        Ok(Self(raw))
    }

    /// The raw bytes, in wire order (what an LDAP filter on objectGUID must escape).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The ImmutableID proper: standard base64 with padding (24 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Reads the base64 form; the decoded value must be 16 bytes.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| CoreError::ImmutableIdSyntax { input: text.to_owned() })?;
        Self::from_object_guid(&bytes)
    }

    /// Lower-case hex of the wire bytes (32 digits), as `ldapsearch` filters escape them.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads 32 hex digits of wire bytes (case-insensitive).
    pub fn from_hex(text: &str) -> Result<Self> {
        let t = text.trim();
        let err = || CoreError::ImmutableIdSyntax { input: text.to_owned() };
        if t.len() != 32 || !t.is_ascii() {
            return Err(err());
        }
        let mut raw = [0u8; 16];
        for (i, byte) in raw.iter_mut().enumerate() {
            let pair = t.get(2 * i..2 * i + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(Self(raw))
    }

    /// The GUID string AD tools print (`ee537b72-9eb5-474a-8286-431309133fd9`): the wire bytes
    /// read as a little-endian .NET GUID.
    pub fn to_guid_string(&self) -> String {
        uuid::Uuid::from_bytes_le(self.0).hyphenated().to_string()
    }

    /// Reads the GUID string form (with or without braces) back into wire bytes.
    pub fn from_guid_string(text: &str) -> Result<Self> {
        let t = text.trim().trim_start_matches('{').trim_end_matches('}');
        if t.len() != 36 {
            return Err(CoreError::ImmutableIdSyntax { input: text.to_owned() });
        }
        let u =
            uuid::Uuid::parse_str(t).map_err(|_| CoreError::ImmutableIdSyntax { input: text.to_owned() })?;
        Ok(Self(u.to_bytes_le()))
    }

    /// Accepts any of the three forms: GUID string, 32 hex digits, or base64.
    pub fn parse_any(text: &str) -> Result<Self> {
        let t = text.trim();
        if (t.len() == 36 || t.len() == 38)
            && let Ok(id) = Self::from_guid_string(t)
        {
            return Ok(id);
        }
        if t.len() == 32
            && let Ok(id) = Self::from_hex(t)
        {
            return Ok(id);
        }
        Self::from_base64(t)
    }

    /// An LDAP filter value that matches this objectGUID (`\72\7b...`).
    pub fn to_ldap_filter_value(&self) -> String {
        self.0.iter().map(|b| format!("\\{b:02x}")).collect()
    }
}

impl fmt::Display for ImmutableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for ImmutableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImmutableId({})", self.to_base64())
    }
}

impl serde::Serialize for ImmutableId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for ImmutableId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

impl FromStr for ImmutableId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse_any(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (wire hex, GUID string, ImmutableID): the vectors of sync-facts.md. The first row's hex is
    /// derived from its string and ImmutableID (both published); the other two were read from a
    /// real Samba AD DC.
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "7fe6c7fcc6fe654ab8212f40a292d185",
            "fcc7e67f-fec6-4a65-b821-2f40a292d185",
            "f+bH/Mb+ZUq4IS9AopLRhQ==",
        ),
        (
            "727b53eeb59e4a478286431309133fd9",
            "ee537b72-9eb5-474a-8286-431309133fd9",
            "cntT7rWeSkeChkMTCRM/2Q==",
        ),
        (
            "51d487907f888940af14ef4afe7cdadd",
            "9087d451-887f-4089-af14-ef4afe7cdadd",
            "UdSHkH+IiUCvFO9K/nza3Q==",
        ),
    ];

    #[test]
    fn published_vectors_convert_in_every_direction() {
        for (hex, guid, b64) in VECTORS {
            let from_hex = ImmutableId::from_hex(hex).unwrap();
            let from_guid = ImmutableId::from_guid_string(guid).unwrap();
            let from_b64 = ImmutableId::from_base64(b64).unwrap();
            assert_eq!(from_hex, from_guid, "{guid}");
            assert_eq!(from_hex, from_b64, "{b64}");
            assert_eq!(from_hex.to_base64(), *b64);
            assert_eq!(from_hex.to_guid_string(), *guid);
            assert_eq!(from_hex.to_hex(), *hex);
            assert_eq!(ImmutableId::parse_any(guid).unwrap(), from_hex);
            assert_eq!(ImmutableId::parse_any(&guid.to_uppercase()).unwrap(), from_hex);
            assert_eq!(ImmutableId::parse_any(&format!("{{{guid}}}")).unwrap(), from_hex);
            assert_eq!(ImmutableId::parse_any(hex).unwrap(), from_hex);
            assert_eq!(ImmutableId::parse_any(b64).unwrap(), from_hex);
        }
    }

    #[test]
    fn big_endian_encoding_is_the_documented_wrong_answer() {
        // Encoding the RFC 4122 (big-endian) bytes of the string gives the wrong value that
        // sync-facts.md warns about; our conversion must not produce it.
        let id = ImmutableId::from_guid_string("fcc7e67f-fec6-4a65-b821-2f40a292d185").unwrap();
        assert_ne!(id.to_base64(), "/Mfmf/7GSmW4IS9AopLRhQ==");
        let be = uuid::Uuid::parse_str("fcc7e67f-fec6-4a65-b821-2f40a292d185").unwrap();
        assert_eq!(STANDARD.encode(be.as_bytes()), "/Mfmf/7GSmW4IS9AopLRhQ==");
    }

    #[test]
    fn object_guid_must_be_sixteen_bytes() {
        assert_eq!(ImmutableId::from_object_guid(&[0u8; 15]), Err(CoreError::GuidLength { len: 15 }));
        assert_eq!(ImmutableId::from_object_guid(&[0u8; 17]), Err(CoreError::GuidLength { len: 17 }));
        assert_eq!(ImmutableId::from_object_guid(&[]), Err(CoreError::GuidLength { len: 0 }));
        // base64 of 15 bytes is refused with the length error, not silently padded.
        assert_eq!(
            ImmutableId::from_base64(&STANDARD.encode([1u8; 15])),
            Err(CoreError::GuidLength { len: 15 })
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in
            ["", "not-a-guid", "zz7b53eeb59e4a478286431309133fd9", "ee537b72-9eb5-474a-8286-43130913", "===="]
        {
            assert!(ImmutableId::parse_any(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ldap_filter_value_escapes_every_byte() {
        let id = ImmutableId::from_hex("727b53eeb59e4a478286431309133fd9").unwrap();
        assert_eq!(
            id.to_ldap_filter_value(),
            "\\72\\7b\\53\\ee\\b5\\9e\\4a\\47\\82\\86\\43\\13\\09\\13\\3f\\d9"
        );
    }

    proptest! {
        #[test]
        fn every_form_round_trips(bytes in proptest::array::uniform16(any::<u8>())) {
            let id = ImmutableId::from_object_guid(&bytes).unwrap();
            prop_assert_eq!(ImmutableId::from_base64(&id.to_base64()).unwrap(), id);
            prop_assert_eq!(ImmutableId::from_hex(&id.to_hex()).unwrap(), id);
            prop_assert_eq!(ImmutableId::from_guid_string(&id.to_guid_string()).unwrap(), id);
            prop_assert_eq!(ImmutableId::parse_any(&id.to_base64()).unwrap(), id);
            prop_assert_eq!(ImmutableId::parse_any(&id.to_guid_string()).unwrap(), id);
            prop_assert_eq!(ImmutableId::parse_any(&id.to_hex()).unwrap(), id);
        }

        #[test]
        fn parse_any_never_panics(s in ".{0,64}") {
            let _ = ImmutableId::parse_any(&s);
        }
    }
}
