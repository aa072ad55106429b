//! How sync rules see objects: a connector-space object or a metaverse object behind
//! [`ObjectView`], and the value helpers sync needs (join keys, comparison, references).

use syncctl_core::rules::ObjectView;
use syncctl_core::{AttrValues, Attributes};
use syncctl_store::{MvObject, SyncCsObject};

/// A CS object as rules see it.
pub(crate) struct CsView<'a> {
    pub object: &'a SyncCsObject,
    pub member_of: Vec<String>,
}

impl ObjectView for CsView<'_> {
    fn object_type(&self) -> &str {
        &self.object.object_class
    }
    fn dn(&self) -> Option<&str> {
        Some(&self.object.dn)
    }
    fn attribute(&self, name: &str) -> Option<&AttrValues> {
        self.object.attributes.get(name)
    }
    fn immutable_id(&self) -> Option<String> {
        self.object.immutable_id.clone()
    }
    fn member_of(&self) -> &[String] {
        &self.member_of
    }
}

/// An MV object as rules see it.
pub(crate) struct MvView<'a> {
    pub object: &'a MvObject,
}

impl ObjectView for MvView<'_> {
    fn object_type(&self) -> &str {
        &self.object.object_type
    }
    fn dn(&self) -> Option<&str> {
        None
    }
    fn attribute(&self, name: &str) -> Option<&AttrValues> {
        self.object.attributes.get(name)
    }
}

/// The text form of each value, as join keys compare them: text as written, binary as base64,
/// integers in decimal, booleans as TRUE/FALSE; lower-cased for a case-insensitive join.
pub(crate) fn key_texts(values: &AttrValues, case_insensitive: bool) -> Vec<String> {
    let mut out = values.display_values();
    if case_insensitive {
        for v in &mut out {
            *v = v.to_lowercase();
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The join-key attribute name for a case-insensitive lookup.
pub(crate) fn key_attribute(attribute: &str, case_insensitive: bool) -> String {
    let lower = attribute.to_ascii_lowercase();
    if case_insensitive { format!("{lower}/ci") } else { lower }
}

/// Join keys of an object for these `(attribute, case_insensitive)` pairs.
pub(crate) fn join_keys(attributes: &Attributes, wanted: &[(String, bool)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (attribute, ci) in wanted {
        if let Some(values) = attributes.get(attribute) {
            let key = key_attribute(attribute, *ci);
            for v in key_texts(values, *ci) {
                out.push((key.clone(), v));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Values compared as sets, type and all (order and duplicates do not count).
pub(crate) fn same_values(a: Option<&AttrValues>, b: Option<&AttrValues>) -> bool {
    let norm = |v: Option<&AttrValues>| -> Option<AttrValues> {
        let v = v?;
        if v.is_empty() {
            return None;
        }
        let mut attrs = Attributes::new();
        attrs.insert("x", v.clone());
        attrs.normalize();
        attrs.remove("x")
    };
    norm(a) == norm(b)
}

/// The MV reference value for an MV id.
pub(crate) fn mv_ref(id: i64) -> String {
    format!("mv:{id}")
}

/// The MV id of an MV reference value.
pub(crate) fn parse_mv_ref(value: &str) -> Option<i64> {
    value.strip_prefix("mv:").and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_texts_lowercased_when_case_insensitive() {
        let mut a = Attributes::new();
        a.insert("userPrincipalName", AttrValues::String(vec!["Alice@Corp.example.com".into()]));
        a.insert("objectGUID", AttrValues::Binary(vec![vec![1, 2, 3]]));
        let keys = join_keys(&a, &[("userPrincipalName".into(), true), ("objectGUID".into(), false)]);
        assert_eq!(
            keys,
            [
                ("objectguid".to_owned(), "AQID".to_owned()),
                ("userprincipalname/ci".to_owned(), "alice@corp.example.com".to_owned())
            ]
        );
    }

    #[test]
    fn values_compare_as_sets() {
        let a = AttrValues::String(vec!["b".into(), "a".into()]);
        let b = AttrValues::String(vec!["a".into(), "b".into(), "a".into()]);
        assert!(same_values(Some(&a), Some(&b)));
        assert!(!same_values(Some(&a), None));
        assert!(same_values(Some(&AttrValues::String(vec![])), None));
        assert!(!same_values(
            Some(&AttrValues::String(vec!["A".into()])),
            Some(&AttrValues::String(vec!["a".into()]))
        ));
        assert_eq!(parse_mv_ref(&mv_ref(42)), Some(42));
        assert_eq!(parse_mv_ref("CN=x"), None);
    }
}
