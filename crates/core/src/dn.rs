//! Distinguished names (RFC 4514), compared the way directories compare them.
//!
//! A [`Dn`] keeps the text the directory sent (for display and for writing back) and a parsed
//! list of [`Rdn`]s whose attribute types and values are unescaped. Equality, ordering and
//! hashing use the normalized form: types and values lowercased, escapes resolved, so
//! `CN=Alice,DC=Corp` and `cn=alice,dc=corp` are the same object name, as in AD.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// One relative distinguished name: one or more `type=value` pairs (joined by `+`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rdn {
    /// `(type, unescaped value)` pairs in the order written.
    pub pairs: Vec<(String, String)>,
}

impl Rdn {
    /// The first pair's value: `Alice Anders` for `CN=Alice Anders`.
    pub fn value(&self) -> &str {
        self.pairs.first().map(|(_, v)| v.as_str()).unwrap_or("")
    }
    /// The first pair's attribute type: `CN` for `CN=Alice Anders`.
    pub fn attr_type(&self) -> &str {
        self.pairs.first().map(|(t, _)| t.as_str()).unwrap_or("")
    }
}

/// A distinguished name.
#[derive(Clone)]
pub struct Dn {
    text: String,
    rdns: Vec<Rdn>,
    norm: String,
}

impl Dn {
    /// Parses a DN. The empty string is the root DSE's (empty) DN.
    pub fn parse(text: &str) -> Result<Self> {
        let rdns = parse_rdns(text)?;
        let norm = normalize(&rdns);
        Ok(Self { text: text.to_owned(), rdns, norm })
    }

    /// The text as the directory wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The normalized form used for comparison (lowercase, escapes canonical).
    pub fn normalized(&self) -> &str {
        &self.norm
    }

    /// RDNs from the leaf to the root.
    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    /// The leaf RDN, if any.
    pub fn rdn(&self) -> Option<&Rdn> {
        self.rdns.first()
    }

    /// The parent DN, or `None` for the empty DN.
    pub fn parent(&self) -> Option<Dn> {
        let rest = self.rdns.get(1..)?;
        let text = render(rest);
        Some(Dn { norm: normalize(rest), rdns: rest.to_vec(), text })
    }

    /// True when `self` equals `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &Dn) -> bool {
        let n = ancestor.rdns.len();
        if n > self.rdns.len() {
            return false;
        }
        let skip = self.rdns.len() - n;
        self.rdns.iter().skip(skip).zip(ancestor.rdns.iter()).all(|(a, b)| rdn_eq(a, b))
    }

    /// True when the DN is empty.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }
}

fn rdn_eq(a: &Rdn, b: &Rdn) -> bool {
    a.pairs.len() == b.pairs.len()
        && a.pairs
            .iter()
            .zip(&b.pairs)
            .all(|((ta, va), (tb, vb))| ta.eq_ignore_ascii_case(tb) && va.to_lowercase() == vb.to_lowercase())
}

impl PartialEq for Dn {
    fn eq(&self, other: &Self) -> bool {
        self.norm == other.norm
    }
}
impl Eq for Dn {}
impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.norm.hash(state)
    }
}
impl PartialOrd for Dn {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Dn {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.norm.cmp(&other.norm)
    }
}
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl fmt::Debug for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dn({:?})", self.text)
    }
}
impl std::str::FromStr for Dn {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}
impl Serialize for Dn {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
impl<'de> Deserialize<'de> for Dn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dn::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn escape_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn render(rdns: &[Rdn]) -> String {
    let mut out = String::new();
    for (i, rdn) in rdns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, (t, v)) in rdn.pairs.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            out.push_str(t);
            out.push('=');
            escape_value(v, &mut out);
        }
    }
    out
}

fn normalize(rdns: &[Rdn]) -> String {
    let lowered: Vec<Rdn> = rdns
        .iter()
        .map(|r| Rdn {
            pairs: r.pairs.iter().map(|(t, v)| (t.to_ascii_lowercase(), v.to_lowercase())).collect(),
        })
        .collect();
    render(&lowered)
}

fn parse_rdns(text: &str) -> Result<Vec<Rdn>> {
    let err = |reason: &'static str| CoreError::DnSyntax { input: text.to_owned(), reason };
    let bytes = text.as_bytes();
    let mut rdns = Vec::new();
    if text.trim().is_empty() {
        return Ok(rdns);
    }
    let mut pos = 0usize;
    let mut pairs: Vec<(String, String)> = Vec::new();
    loop {
        // attribute type
        while bytes.get(pos) == Some(&b' ') {
            pos += 1;
        }
        let start = pos;
        while let Some(&b) = bytes.get(pos) {
            if b == b'=' {
                break;
            }
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b' ') {
                return Err(err("invalid character in an attribute type"));
            }
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'=') {
            return Err(err("an RDN has no `=`"));
        }
        let attr_type = text.get(start..pos).ok_or_else(|| err("invalid UTF-8 boundary"))?.trim().to_owned();
        if attr_type.is_empty() {
            return Err(err("empty attribute type"));
        }
        pos += 1;
        // value
        let mut value: Vec<u8> = Vec::new();
        let mut trailing_unescaped_spaces = 0usize;
        let mut leading = true;
        let mut end_char = None;
        while let Some(&b) = bytes.get(pos) {
            match b {
                b',' | b';' | b'+' => {
                    end_char = Some(b);
                    pos += 1;
                    break;
                }
                b'\\' => {
                    let next = bytes.get(pos + 1).copied().ok_or_else(|| err("a trailing backslash"))?;
                    let is_hex = |c: u8| c.is_ascii_hexdigit();
                    if is_hex(next) && bytes.get(pos + 2).copied().is_some_and(is_hex) {
                        let pair = text.get(pos + 1..pos + 3).ok_or_else(|| err("bad hex escape"))?;
                        let byte = u8::from_str_radix(pair, 16).map_err(|_| err("bad hex escape"))?;
                        value.push(byte);
                        pos += 3;
                    } else if next.is_ascii() {
                        value.push(next);
                        pos += 2;
                    } else {
                        return Err(err("a backslash before a non-ASCII character"));
                    }
                    trailing_unescaped_spaces = 0;
                    leading = false;
                }
                b' ' if leading => pos += 1,
                b' ' => {
                    value.push(b);
                    trailing_unescaped_spaces += 1;
                    pos += 1;
                }
                _ => {
                    value.push(b);
                    trailing_unescaped_spaces = 0;
                    leading = false;
                    pos += 1;
                }
            }
        }
        value.truncate(value.len() - trailing_unescaped_spaces);
        let value = String::from_utf8(value).map_err(|_| err("a value is not valid UTF-8"))?;
        pairs.push((attr_type, value));
        match end_char {
            Some(b'+') => continue,
            Some(_) => {
                rdns.push(Rdn { pairs: std::mem::take(&mut pairs) });
                if pos >= bytes.len() {
                    return Err(err("a trailing separator"));
                }
            }
            None => {
                rdns.push(Rdn { pairs: std::mem::take(&mut pairs) });
                return Ok(rdns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ad_dns() {
        let dn = Dn::parse("CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com").unwrap();
        assert_eq!(dn.rdns().len(), 5);
        assert_eq!(dn.rdn().unwrap().value(), "Alice Anders");
        assert_eq!(dn.parent().unwrap().as_str(), "CN=Users,DC=corp,DC=example,DC=com");
        let base = Dn::parse("dc=CORP,dc=example,dc=com").unwrap();
        assert!(dn.is_within(&base));
        assert!(!base.is_within(&dn));
        assert!(base.is_within(&base));
    }

    #[test]
    fn escapes_are_resolved_and_compared() {
        let deleted = Dn::parse(r"CN=Dave Comma\0ADEL:0c90d60e-1,CN=Deleted Objects,DC=corp").unwrap();
        assert_eq!(deleted.rdn().unwrap().value(), "Dave Comma\nDEL:0c90d60e-1");
        let a = Dn::parse(r"CN=Smith\, John,OU=People,DC=x").unwrap();
        let b = Dn::parse(r"cn=smith\2c john, ou=people, dc=X").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rdn().unwrap().value(), "Smith, John");
        let u = Dn::parse(r"CN=Fr\C3\A4nk,DC=x").unwrap();
        assert_eq!(u.rdn().unwrap().value(), "Fränk");
        assert_eq!(u, Dn::parse("cn=fränk,dc=x").unwrap());
    }

    #[test]
    fn multi_valued_rdn() {
        let dn = Dn::parse("cn=a+uid=b,dc=x").unwrap();
        assert_eq!(dn.rdns()[0].pairs.len(), 2);
        assert_eq!(dn.parent().unwrap().as_str(), "dc=x");
    }

    #[test]
    fn malformed_dns_are_errors() {
        for bad in ["CN", "CN=a,", "=a", "CN=a\\", "C N!=a", r"CN=\FF\FE,DC=x"] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
        assert!(Dn::parse("").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Dn::parse(&s);
        }

        #[test]
        fn rendered_values_parse_back(vals in proptest::collection::vec("\\PC{1,12}", 1..5)) {
            let rdns: Vec<Rdn> = vals.iter().map(|v| Rdn { pairs: vec![("CN".into(), v.clone())] }).collect();
            let text = render(&rdns);
            let dn = Dn::parse(&text).unwrap();
            let got: Vec<&str> = dn.rdns().iter().map(Rdn::value).collect();
            let want: Vec<&str> = vals.iter().map(String::as_str).collect();
            prop_assert_eq!(got, want);
        }
    }
}
