//! Connector-space objects and their anchors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::attribute::{Attributes, ContentHash};
use crate::dn::Dn;
use crate::error::{CoreError, Result};
use crate::immutable_id::ImmutableId;

/// The never-changing key of a source object within one connector: the base64 ImmutableID for
/// AD (objectGUID), the lowercase entryUUID for OpenLDAP, the object `id` for Graph.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Anchor(String);

impl Anchor {
    /// An anchor from its canonical text; empty text is an error.
    pub fn new(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        if text.is_empty() {
            return Err(CoreError::EmptyAnchor);
        }
        Ok(Self(text))
    }
    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ImmutableId> for Anchor {
    fn from(id: ImmutableId) -> Self {
        Self(id.to_base64())
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Anchor({})", self.0)
    }
}

/// One source object as a connector sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsObject {
    /// Its anchor.
    pub anchor: Anchor,
    /// The ImmutableID when the source has objectGUIDs (AD).
    pub immutable_id: Option<ImmutableId>,
    /// Its current DN.
    pub dn: Dn,
    /// Its structural object class in the connector's vocabulary (`user`, `group`, `contact`,
    /// `inetOrgPerson`, `groupOfNames`).
    pub object_class: String,
    /// Its attributes (normalized before hashing).
    pub attributes: Attributes,
}

impl CsObject {
    /// Normalizes the attributes (sorted, de-duplicated values; no empty attribute).
    pub fn normalize(&mut self) {
        self.attributes.normalize();
    }

    /// The content hash over DN, object class and attributes. Call [`CsObject::normalize`]
    /// first; the engine always does.
    pub fn content_hash(&self) -> ContentHash {
        self.hash_and_serialize().0
    }

    /// The content hash and the attributes' serialized form it was computed over (what the
    /// store keeps), in one pass. serde_json of the BTreeMap-backed attributes is deterministic.
    pub fn hash_and_serialize(&self) -> (ContentHash, String) {
        let json = serde_json::to_string(&self.attributes).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(self.dn.as_str().as_bytes());
        h.update(&[0]);
        h.update(self.object_class.as_bytes());
        h.update(&[0]);
        h.update(json.as_bytes());
        (ContentHash(*h.finalize().as_bytes()), json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::AttrValues;

    fn obj(values: Vec<&str>) -> CsObject {
        let mut attributes = Attributes::new();
        attributes
            .insert("proxyAddresses", AttrValues::String(values.into_iter().map(String::from).collect()));
        CsObject {
            anchor: Anchor::new("a").unwrap(),
            immutable_id: None,
            dn: Dn::parse("CN=a,DC=x").unwrap(),
            object_class: "user".into(),
            attributes,
        }
    }

    #[test]
    fn hash_ignores_value_order_after_normalize() {
        let mut a = obj(vec!["SMTP:a@x", "smtp:b@x"]);
        let mut b = obj(vec!["smtp:b@x", "SMTP:a@x"]);
        a.normalize();
        b.normalize();
        assert_eq!(a.content_hash(), b.content_hash());
        let mut c = obj(vec!["smtp:b@x"]);
        c.normalize();
        assert_ne!(a.content_hash(), c.content_hash());
    }

    #[test]
    fn hash_sees_renames() {
        let mut a = obj(vec!["x"]);
        let mut b = a.clone();
        b.dn = Dn::parse("CN=b,DC=x").unwrap();
        a.normalize();
        b.normalize();
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn empty_anchor_is_refused() {
        assert_eq!(Anchor::new(""), Err(CoreError::EmptyAnchor));
    }
}
