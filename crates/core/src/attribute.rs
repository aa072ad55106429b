//! Typed, multi-valued attributes and the content hash that import diffs on.
//!
//! LDAP attribute names are case-insensitive, so [`AttrName`] keeps the spelling it was given
//! for display but compares, orders and hashes on its ASCII-lowercase form. LDAP values are
//! unordered sets, so [`Attributes::normalize`] sorts and de-duplicates each attribute's values:
//! two reads of the same object give the same [`ContentHash`] whatever order the server used.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An attribute name: displayed as given, compared case-insensitively.
#[derive(Clone)]
pub struct AttrName {
    display: String,
    key: String,
}

impl AttrName {
    /// A name as the directory or the schema spells it.
    pub fn new(name: impl Into<String>) -> Self {
        let display = name.into();
        let key = display.to_ascii_lowercase();
        Self { display, key }
    }
    /// The spelling it was created with.
    pub fn as_str(&self) -> &str {
        &self.display
    }
    /// The lowercase comparison key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for AttrName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for AttrName {}
impl PartialOrd for AttrName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AttrName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}
/// Borrowed as its lowercase key: maps keyed by [`AttrName`] are searched with a lowercase `&str`
/// (equality, order and hash all follow the key, as `str`'s do).
impl Borrow<str> for AttrName {
    fn borrow(&self) -> &str {
        &self.key
    }
}
impl std::hash::Hash for AttrName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}
impl fmt::Display for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}
impl fmt::Debug for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.display, f)
    }
}
impl From<&str> for AttrName {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}
impl From<String> for AttrName {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}
impl Serialize for AttrName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display)
    }
}
impl<'de> Deserialize<'de> for AttrName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// The syntax an attribute's values are read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttrSyntax {
    /// UTF-8 text.
    String,
    /// A signed 64-bit integer (uSNChanged, userAccountControl).
    Integer,
    /// `TRUE` / `FALSE`.
    Boolean,
    /// Octets (objectGUID, objectSid, jpegPhoto).
    Binary,
    /// A DN that refers to another object (member, manager).
    Reference,
    /// A generalized time (`20261122093417.0Z`), kept as written.
    Timestamp,
}

/// The values of one attribute, all of one syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "kebab-case")]
pub enum AttrValues {
    /// Text values.
    String(Vec<String>),
    /// Integer values.
    Integer(Vec<i64>),
    /// Boolean values.
    Boolean(Vec<bool>),
    /// Binary values, base64 in the serialized form.
    Binary(#[serde(with = "b64_vec")] Vec<Vec<u8>>),
    /// DN references, as the directory wrote them.
    Reference(Vec<String>),
    /// Generalized-time values, as the directory wrote them.
    Timestamp(Vec<String>),
}

impl AttrValues {
    /// How many values there are.
    pub fn len(&self) -> usize {
        match self {
            Self::String(v) | Self::Reference(v) | Self::Timestamp(v) => v.len(),
            Self::Integer(v) => v.len(),
            Self::Boolean(v) => v.len(),
            Self::Binary(v) => v.len(),
        }
    }
    /// True when there is no value (such an attribute is dropped by [`Attributes::normalize`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The syntax of these values.
    pub fn syntax(&self) -> AttrSyntax {
        match self {
            Self::String(_) => AttrSyntax::String,
            Self::Integer(_) => AttrSyntax::Integer,
            Self::Boolean(_) => AttrSyntax::Boolean,
            Self::Binary(_) => AttrSyntax::Binary,
            Self::Reference(_) => AttrSyntax::Reference,
            Self::Timestamp(_) => AttrSyntax::Timestamp,
        }
    }
    /// Text values (String, Reference, Timestamp), if these are textual.
    pub fn texts(&self) -> Option<&[String]> {
        match self {
            Self::String(v) | Self::Reference(v) | Self::Timestamp(v) => Some(v),
            _ => None,
        }
    }
    /// The first text value, if textual and not empty.
    pub fn first_text(&self) -> Option<&str> {
        self.texts().and_then(|v| v.first()).map(String::as_str)
    }
    /// Each value rendered for people: text as is, binary as base64, integers and booleans in
    /// LDAP's spelling.
    pub fn display_values(&self) -> Vec<String> {
        use base64::Engine as _;
        match self {
            Self::String(v) | Self::Reference(v) | Self::Timestamp(v) => v.clone(),
            Self::Integer(v) => v.iter().map(i64::to_string).collect(),
            Self::Boolean(v) => v.iter().map(|b| if *b { "TRUE" } else { "FALSE" }.to_owned()).collect(),
            Self::Binary(v) => {
                v.iter().map(|b| base64::engine::general_purpose::STANDARD.encode(b)).collect()
            }
        }
    }

    /// Sorts and de-duplicates the values. DN references and text compare case-sensitively
    /// here: a change of case is a real change in the directory.
    fn normalize(&mut self) {
        match self {
            Self::String(v) | Self::Reference(v) | Self::Timestamp(v) => {
                v.sort_unstable();
                v.dedup();
            }
            Self::Integer(v) => {
                v.sort_unstable();
                v.dedup();
            }
            Self::Boolean(v) => {
                v.sort_unstable();
                v.dedup();
            }
            Self::Binary(v) => {
                v.sort_unstable();
                v.dedup();
            }
        }
    }

    /// Applies a value increment (values added and removed) of the same syntax. Returns false
    /// when the syntaxes differ and nothing was changed. Linear in the values: a delta of 50,000
    /// members against a group of 50,000 is one pass over each, not one over the group per value.
    pub fn apply_delta(&mut self, add: &AttrValues, remove: &AttrValues) -> bool {
        fn go<T: Eq + std::hash::Hash + Clone>(cur: &mut Vec<T>, add: &[T], remove: &[T]) {
            if !remove.is_empty() {
                let removed: std::collections::HashSet<&T> = remove.iter().collect();
                cur.retain(|v| !removed.contains(v));
            }
            // Duplicates go in `normalize` below.
            cur.extend_from_slice(add);
        }
        let ok = match (&mut *self, add, remove) {
            // DN references compare as DNs: a value removed as `cn=a,dc=x` removes `CN=A,DC=x`.
            (Self::Reference(c), Self::Reference(a), Self::Reference(r)) => {
                let norm = |v: &str| {
                    crate::dn::Dn::parse(v)
                        .map(|d| d.normalized().to_owned())
                        .unwrap_or_else(|_| v.to_owned())
                };
                if !r.is_empty() {
                    let removed: std::collections::HashSet<String> = r.iter().map(|v| norm(v)).collect();
                    c.retain(|v| !removed.contains(&norm(v)));
                }
                if !a.is_empty() {
                    // A value already there under another spelling of the same DN stays as it is.
                    let mut present: std::collections::HashSet<String> = c.iter().map(|v| norm(v)).collect();
                    for v in a {
                        if present.insert(norm(v)) {
                            c.push(v.clone());
                        }
                    }
                }
                true
            }
            (Self::String(c), Self::String(a), Self::String(r))
            | (Self::Timestamp(c), Self::Timestamp(a), Self::Timestamp(r)) => {
                go(c, a, r);
                true
            }
            (Self::Integer(c), Self::Integer(a), Self::Integer(r)) => {
                go(c, a, r);
                true
            }
            (Self::Boolean(c), Self::Boolean(a), Self::Boolean(r)) => {
                go(c, a, r);
                true
            }
            (Self::Binary(c), Self::Binary(a), Self::Binary(r)) => {
                go(c, a, r);
                true
            }
            _ => false,
        };
        if ok {
            self.normalize();
        }
        ok
    }

    /// An empty value list of the given syntax.
    pub fn empty(syntax: AttrSyntax) -> Self {
        match syntax {
            AttrSyntax::String => Self::String(Vec::new()),
            AttrSyntax::Integer => Self::Integer(Vec::new()),
            AttrSyntax::Boolean => Self::Boolean(Vec::new()),
            AttrSyntax::Binary => Self::Binary(Vec::new()),
            AttrSyntax::Reference => Self::Reference(Vec::new()),
            AttrSyntax::Timestamp => Self::Timestamp(Vec::new()),
        }
    }
}

mod b64_vec {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(&STANDARD.encode(b))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom)).collect()
    }
}

/// A content hash over an object's DN, object class and normalized attributes (BLAKE3, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Lower-case hex of the 32 bytes.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An object's attributes: name -> typed values, ordered by lowercase name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(BTreeMap<AttrName, AttrValues>);

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets (replaces) one attribute.
    pub fn insert(&mut self, name: impl Into<AttrName>, values: AttrValues) {
        self.0.insert(name.into(), values);
    }
    /// Removes one attribute, returning its values.
    pub fn remove(&mut self, name: &str) -> Option<AttrValues> {
        with_key(name, |key| self.0.remove(key))
    }
    /// The values of one attribute, looked up case-insensitively.
    pub fn get(&self, name: &str) -> Option<&AttrValues> {
        with_key(name, |key| self.0.get(key))
    }
    /// The values of one attribute, by [`AttrName`].
    pub fn get_name(&self, name: &AttrName) -> Option<&AttrValues> {
        self.0.get(name)
    }
    /// Mutable values of one attribute.
    pub fn get_mut(&mut self, name: &AttrName) -> Option<&mut AttrValues> {
        self.0.get_mut(name)
    }
    /// The first text value of one attribute.
    pub fn first_text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(AttrValues::first_text)
    }
    /// Iterates in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&AttrName, &AttrValues)> {
        self.0.iter()
    }
    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there is no attribute.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Whether an attribute is present.
    pub fn contains(&self, name: &str) -> bool {
        with_key(name, |key| self.0.contains_key(key))
    }
    /// Sorts and de-duplicates every attribute's values and drops empty attributes, so that equal
    /// content has equal serialization and hash.
    pub fn normalize(&mut self) {
        self.0.retain(|_, v| !v.is_empty());
        for v in self.0.values_mut() {
            v.normalize();
        }
    }
}

/// Calls `f` with the lowercase key of `name`, without allocating for a name already lowercase or
/// one that fits on the stack (every LDAP attribute name does).
fn with_key<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(name);
    }
    let mut buffer = [0u8; 64];
    match buffer.get_mut(..name.len()) {
        Some(slot) => {
            slot.copy_from_slice(name.as_bytes());
            slot.make_ascii_lowercase();
            // ASCII lowercasing keeps UTF-8 valid.
            match std::str::from_utf8(slot) {
                Ok(key) => f(key),
                Err(_) => f(&name.to_ascii_lowercase()),
            }
        }
        None => f(&name.to_ascii_lowercase()),
    }
}

impl<N: Borrow<str>> FromIterator<(N, AttrValues)> for Attributes {
    fn from_iter<T: IntoIterator<Item = (N, AttrValues)>>(iter: T) -> Self {
        Self(iter.into_iter().map(|(n, v)| (AttrName::new(n.borrow()), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_case_insensitively_but_keep_their_spelling() {
        let mut a = Attributes::new();
        a.insert("userPrincipalName", AttrValues::String(vec!["a@x".into()]));
        assert_eq!(a.first_text("USERPRINCIPALNAME"), Some("a@x"));
        let (name, _) = a.iter().next().unwrap();
        assert_eq!(name.as_str(), "userPrincipalName");
    }

    #[test]
    fn lookups_fold_case_for_short_and_long_names() {
        let long = format!("x{}Name", "Very".repeat(30));
        let mut a = Attributes::new();
        a.insert("givenName", AttrValues::String(vec!["Ann".into()]));
        a.insert(long.as_str(), AttrValues::String(vec!["v".into()]));
        a.insert("sn", AttrValues::String(vec!["Lee".into()]));
        for name in ["givenName", "GIVENNAME", "givenname"] {
            assert_eq!(a.first_text(name), Some("Ann"), "{name}");
            assert!(a.contains(name), "{name}");
        }
        assert_eq!(a.first_text(&long.to_uppercase()), Some("v"));
        assert_eq!(a.first_text("SN"), Some("Lee"));
        assert_eq!(a.get("given"), None);
        assert!(!a.contains("GIVENNAMES"));
        assert_eq!(a.remove(&long.to_ascii_uppercase()), Some(AttrValues::String(vec!["v".into()])));
        assert_eq!(a.remove("Sn"), Some(AttrValues::String(vec!["Lee".into()])));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn normalize_makes_value_order_irrelevant() {
        let mut a = Attributes::new();
        a.insert("member", AttrValues::Reference(vec!["CN=b".into(), "CN=a".into(), "CN=b".into()]));
        a.insert("empty", AttrValues::String(vec![]));
        a.normalize();
        assert_eq!(a.get("member"), Some(&AttrValues::Reference(vec!["CN=a".into(), "CN=b".into()])));
        assert!(!a.contains("empty"));
    }

    #[test]
    fn serialization_round_trips_every_syntax() {
        let mut a = Attributes::new();
        a.insert("s", AttrValues::String(vec!["x".into()]));
        a.insert("i", AttrValues::Integer(vec![-1, 5]));
        a.insert("b", AttrValues::Boolean(vec![true]));
        a.insert("bin", AttrValues::Binary(vec![vec![0, 255, 16]]));
        a.insert("r", AttrValues::Reference(vec!["CN=x,DC=y".into()]));
        a.insert("t", AttrValues::Timestamp(vec!["20261122093417.0Z".into()]));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""bin":{"t":"binary","v":["AP8Q"]}"#), "{json}");
        let back: Attributes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn value_deltas_add_and_remove() {
        let mut v = AttrValues::Reference(vec!["CN=a".into(), "CN=b".into()]);
        assert!(v.apply_delta(
            &AttrValues::Reference(vec!["CN=c".into()]),
            &AttrValues::Reference(vec!["CN=a".into()])
        ));
        assert_eq!(v, AttrValues::Reference(vec!["CN=b".into(), "CN=c".into()]));
        assert!(!v.apply_delta(&AttrValues::String(vec![]), &AttrValues::String(vec![])));
        // References compare as DNs.
        let mut r = AttrValues::Reference(vec!["CN=b,DC=x".into(), "CN=c,DC=x".into()]);
        assert!(r.apply_delta(
            &AttrValues::Reference(vec!["cn=C,DC=x".into()]),
            &AttrValues::Reference(vec!["cn=b,dc=X".into()])
        ));
        assert_eq!(r, AttrValues::Reference(vec!["CN=c,DC=x".into()]));
    }

    proptest::proptest! {
        /// apply_delta agrees with set semantics (remove, then add) on plain values, and on DN
        /// references compared as DNs, where a value already present keeps its spelling.
        #[test]
        fn value_deltas_are_set_operations(
            cur in proptest::collection::vec(0u8..12, 0..20),
            add in proptest::collection::vec(0u8..12, 0..20),
            remove in proptest::collection::vec(0u8..12, 0..20),
            upper in proptest::collection::vec(proptest::bool::ANY, 12),
        ) {
            use std::collections::BTreeSet;
            let mut v = AttrValues::Integer(cur.iter().map(|&i| i64::from(i)).collect());
            proptest::prop_assert!(v.apply_delta(
                &AttrValues::Integer(add.iter().map(|&i| i64::from(i)).collect()),
                &AttrValues::Integer(remove.iter().map(|&i| i64::from(i)).collect()),
            ));
            let mut want: BTreeSet<i64> = cur.iter().map(|&i| i64::from(i)).collect();
            for r in &remove {
                want.remove(&i64::from(*r));
            }
            want.extend(add.iter().map(|&i| i64::from(i)));
            proptest::prop_assert_eq!(v, AttrValues::Integer(want.into_iter().collect()));

            // References: the stored ones in upper case where `upper` says so, the delta's in
            // lower case; each kept value is spelled as first seen (stored, then added).
            let dn = |i: u8, up: bool| if up { format!("CN=U{i},DC=X") } else { format!("cn=u{i},dc=x") };
            let stored: Vec<String> = cur.iter().map(|&i| dn(i, upper[usize::from(i)])).collect();
            let mut r = AttrValues::Reference(stored.clone());
            proptest::prop_assert!(r.apply_delta(
                &AttrValues::Reference(add.iter().map(|&i| dn(i, false)).collect()),
                &AttrValues::Reference(remove.iter().map(|&i| dn(i, false)).collect()),
            ));
            let removed: BTreeSet<u8> = remove.iter().copied().collect();
            let mut spelled: std::collections::BTreeMap<u8, String> = std::collections::BTreeMap::new();
            for (&i, s) in cur.iter().zip(&stored) {
                if !removed.contains(&i) {
                    spelled.entry(i).or_insert_with(|| s.clone());
                }
            }
            for &i in &add {
                spelled.entry(i).or_insert_with(|| dn(i, false));
            }
            let mut want: Vec<String> = spelled.into_values().collect();
            want.sort();
            proptest::prop_assert_eq!(r, AttrValues::Reference(want));
        }
    }
}
