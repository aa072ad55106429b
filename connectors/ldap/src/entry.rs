//! Decoding search entries into connector-space objects, without trusting the server.
//!
//! `ldap3`'s own entry decoder panics on malformed input and on a DN that is not UTF-8, so the
//! connector walks the BER structure itself and turns every surprise into an
//! [`ObjectError`] that names the object.

use std::collections::BTreeSet;

use ldap3::asn1::{PL, StructureTag};
use syncctl_core::{Anchor, AttrSyntax, AttrValues, Attributes, CsObject, Dn, ImmutableId, ObjectError};

use crate::config::{Flavor, LdapConfig};
use crate::schema;

/// A search entry as it came off the wire: the DN and each attribute's raw values.
#[derive(Clone, Debug, Default)]
pub struct RawEntry {
    /// The DN's bytes.
    pub dn: Vec<u8>,
    /// `(attribute description, values)` in wire order; the description may carry options
    /// such as `;range=0-1499`.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// The DN as text, lossy (for messages only).
    pub fn dn_lossy(&self) -> String {
        String::from_utf8_lossy(&self.dn).into_owned()
    }

    /// The values of an attribute (exact description, case-insensitive).
    pub fn values(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// True when the boolean attribute is `TRUE`.
    pub fn is_true(&self, name: &str) -> bool {
        self.values(name).and_then(|v| v.first()).is_some_and(|v| v.eq_ignore_ascii_case(b"TRUE"))
    }
}

/// Decodes a SearchResultEntry (`[APPLICATION 4] SEQUENCE { objectName, attributes }`),
/// taking the values out of the tag without copying them.
pub fn parse_entry(tag: StructureTag) -> Result<RawEntry, String> {
    let PL::C(parts) = tag.payload else {
        return Err("the entry is not a constructed value".into());
    };
    let mut parts = parts.into_iter();
    let dn = match parts.next().map(|t| t.payload) {
        Some(PL::P(bytes)) => bytes,
        _ => return Err("the entry has no DN".into()),
    };
    let mut attrs = Vec::new();
    match parts.next().map(|t| t.payload) {
        Some(PL::C(list)) => {
            attrs.reserve(list.len());
            for partial in list {
                let PL::C(pair) = partial.payload else {
                    return Err("an attribute is not a sequence".into());
                };
                let mut pair = pair.into_iter();
                let name = match pair.next().map(|t| t.payload) {
                    Some(PL::P(b)) => {
                        String::from_utf8(b).map_err(|_| "an attribute name is not UTF-8".to_owned())?
                    }
                    _ => return Err("an attribute has no name".into()),
                };
                let mut values = Vec::new();
                match pair.next().map(|t| t.payload) {
                    Some(PL::C(vals)) => {
                        values.reserve(vals.len());
                        for v in vals {
                            match v.payload {
                                PL::P(b) => values.push(b),
                                PL::C(_) => {
                                    return Err(format!("a value of `{name}` is not an octet string"));
                                }
                            }
                        }
                    }
                    None => {}
                    Some(PL::P(_)) => return Err(format!("the values of `{name}` are not a set")),
                }
                attrs.push((name, values));
            }
        }
        None => {}
        Some(PL::P(_)) => return Err("the attribute list is not a sequence".into()),
    }
    Ok(RawEntry { dn, attrs })
}

/// A `;range=LOW-HIGH` option on an attribute description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First value index.
    pub low: u64,
    /// Last value index, `None` for `*` (the last range).
    pub high: Option<u64>,
}

/// Splits `member;range=0-1499` into `("member", Some(range))`; other options are dropped.
pub fn split_description(desc: &str) -> (&str, Option<Range>) {
    let mut parts = desc.split(';');
    let base = parts.next().unwrap_or(desc);
    let mut range = None;
    for opt in parts {
        if let Some(spec) = opt.strip_prefix("range=").or_else(|| opt.strip_prefix("Range="))
            && let Some((lo, hi)) = spec.split_once('-')
            && let Ok(low) = lo.parse()
        {
            let high = if hi == "*" { None } else { hi.parse().ok() };
            if hi == "*" || high.is_some() {
                range = Some(Range { low, high });
            }
        }
    }
    (base, range)
}

/// The scope settings every directory connector shares (the LDAP connector's, and the LDIF
/// connector's for an export of the same directory): one place turns them into a [`Scope`], so
/// that both read the same objects and attributes.
#[derive(Clone, Copy, Debug)]
pub struct ScopeSettings<'a> {
    /// Which kind of directory.
    pub flavor: Flavor,
    /// The base DN; the empty DN takes in every object.
    pub base_dn: &'a str,
    /// Only objects under these DNs are in scope (empty: the whole base).
    pub include_ous: &'a [String],
    /// Objects under these DNs are out of scope.
    pub exclude_ous: &'a [String],
    /// Object types to read; `None`: all of the flavor's.
    pub object_types: Option<&'a [String]>,
    /// Attribute inclusion list; `None`: the flavor's default attributes.
    pub attributes: Option<&'a [String]>,
    /// The anchor attribute; `None`: the flavor's (objectGUID, entryUUID).
    pub anchor_attribute: Option<&'a str>,
}

impl ScopeSettings<'_> {
    /// Checks the DNs, object types and anchor attribute; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        for dn in
            self.include_ous.iter().map(String::as_str).chain(self.exclude_ous.iter().map(String::as_str))
        {
            Dn::parse(dn).map_err(|e| e.to_string())?;
        }
        Dn::parse(self.base_dn).map_err(|e| e.to_string())?;
        if let Some(types) = self.object_types {
            let known = schema::object_types(self.flavor);
            for t in types {
                if !known.iter().any(|k| k.eq_ignore_ascii_case(t)) {
                    return Err(format!("object type `{t}` is not one of {}", known.join(", ")));
                }
            }
        }
        if let Some(anchor) = self.anchor_attribute
            && self.flavor == Flavor::Ad
            && !anchor.eq_ignore_ascii_case("objectGUID")
        {
            return Err(format!(
                "anchor_attribute `{anchor}`: the AD flavor anchors on objectGUID (DirSync names objects by it; \
                 mS-DS-ConsistencyGuid anchors are not supported yet)"
            ));
        }
        Ok(())
    }
}

impl<'a> From<&'a LdapConfig> for ScopeSettings<'a> {
    fn from(config: &'a LdapConfig) -> Self {
        Self {
            flavor: config.flavor,
            base_dn: &config.base_dn,
            include_ous: &config.include_ous,
            exclude_ous: &config.exclude_ous,
            object_types: config.object_types.as_deref(),
            attributes: config.attributes.as_deref(),
            anchor_attribute: config.anchor_attribute.as_deref(),
        }
    }
}

/// What is in scope for one connector: base, OUs, object types, attributes.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Which kind of directory.
    pub flavor: Flavor,
    /// The base DN (the empty DN: everything).
    pub base: Dn,
    /// Included OUs (empty: the whole base).
    pub include: Vec<Dn>,
    /// Excluded OUs.
    pub exclude: Vec<Dn>,
    /// The object types read, in the flavor's spelling.
    pub object_types: Vec<String>,
    /// Lowercase names of the attributes kept in the connector space.
    pub kept: BTreeSet<String>,
    /// The attribute list sent to the server.
    pub requested: Vec<String>,
    /// The anchor attribute (lowercase).
    pub anchor_attribute: String,
}

impl Scope {
    /// The scope an LDAP connector's config describes.
    pub fn new(config: &LdapConfig) -> Result<Self, String> {
        Self::from_settings(&ScopeSettings::from(config))
    }

    /// The scope the shared settings describe.
    pub fn from_settings(settings: &ScopeSettings<'_>) -> Result<Self, String> {
        let dn = |s: &String| Dn::parse(s).map_err(|e| e.to_string());
        let flavor = settings.flavor;
        let object_types: Vec<String> = match settings.object_types {
            Some(t) => t
                .iter()
                .map(|t| {
                    schema::object_types(flavor)
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(t))
                        .map(|k| (*k).to_owned())
                        .unwrap_or_else(|| t.clone())
                })
                .collect(),
            None => schema::object_types(flavor).iter().map(|s| (*s).to_owned()).collect(),
        };
        let bookkeeping: Vec<String> =
            schema::bookkeeping_attributes(flavor).iter().map(|s| s.to_ascii_lowercase()).collect();
        let mut kept: BTreeSet<String> = match settings.attributes {
            Some(list) => list.iter().map(|a| a.to_ascii_lowercase()).collect(),
            None => schema::default_attributes(flavor).iter().map(|a| a.to_ascii_lowercase()).collect(),
        };
        for r in schema::required_attributes(flavor) {
            kept.insert(r.to_ascii_lowercase());
        }
        let anchor_attribute = settings
            .anchor_attribute
            .map(str::to_owned)
            .unwrap_or_else(|| match flavor {
                Flavor::Ad => "objectGUID".into(),
                Flavor::Openldap => "entryUUID".into(),
            })
            .to_ascii_lowercase();
        kept.insert(anchor_attribute.clone());
        let mut requested: Vec<String> = kept.iter().cloned().collect();
        for b in &bookkeeping {
            kept.remove(b);
        }
        // Samba / AD DirSync leaves out objects that carry none of the requested attributes;
        // every object has a `name`/`cn`, so ask for it.
        if flavor == Flavor::Ad && !requested.iter().any(|a| a == "cn") {
            requested.push("cn".into());
        }
        requested.sort();
        requested.dedup();
        Ok(Self {
            flavor,
            base: Dn::parse(settings.base_dn).map_err(|e| e.to_string())?,
            include: settings.include_ous.iter().map(dn).collect::<Result<_, _>>()?,
            exclude: settings.exclude_ous.iter().map(dn).collect::<Result<_, _>>()?,
            object_types,
            kept,
            requested,
            anchor_attribute,
        })
    }

    /// The LDAP filter that selects the object types in scope.
    pub fn filter(&self) -> String {
        let parts: Vec<String> = self
            .object_types
            .iter()
            .map(|t| match (self.flavor, t.to_ascii_lowercase().as_str()) {
                (Flavor::Ad, "user") => "(&(objectCategory=person)(objectClass=user))".to_owned(),
                (_, other) => format!("(objectClass={other})"),
            })
            .collect();
        let types = if parts.len() == 1 { parts.concat() } else { format!("(|{})", parts.concat()) };
        match self.flavor {
            Flavor::Ad => format!("(&{types}(!(isCriticalSystemObject=TRUE)))"),
            Flavor::Openldap => types,
        }
    }

    /// True when a DN is inside the base, inside an included OU (if any) and outside every
    /// excluded one.
    pub fn contains(&self, dn: &Dn) -> bool {
        dn.is_within(&self.base)
            && (self.include.is_empty() || self.include.iter().any(|i| dn.is_within(i)))
            && !self.exclude.iter().any(|x| dn.is_within(x))
    }

    /// The object type of an entry from its objectClass values, if it is one in scope.
    pub fn classify(&self, classes: &[Vec<u8>]) -> Option<String> {
        let has = |c: &str| classes.iter().any(|v| v.eq_ignore_ascii_case(c.as_bytes()));
        if self.flavor == Flavor::Ad && has("computer") {
            return None;
        }
        // Most specific first: in AD a contact is also a `person`, a user also `organizationalPerson`.
        let order: &[&str] = match self.flavor {
            Flavor::Ad => &["group", "contact", "user"],
            Flavor::Openldap => &["groupOfNames", "inetOrgPerson"],
        };
        order
            .iter()
            .find(|t| has(t) && self.object_types.iter().any(|o| o.eq_ignore_ascii_case(t)))
            .map(|t| (*t).to_owned())
    }
}

/// What an entry turned into.
#[derive(Debug)]
pub enum Decoded {
    /// An object in scope, with the attributes whose values continue in further ranges.
    Object {
        /// The object.
        object: CsObject,
        /// `(attribute, first missing index)` of each ranged attribute whose last range was
        /// not `*`: the values from that index on are still to be read.
        open_ranges: Vec<(String, u64)>,
    },
    /// An object outside the scope (OU, type, critical system object), with its anchor when it
    /// could be read, so that a delta can report it as gone.
    OutOfScope {
        /// Its anchor, when it could be read.
        anchor: Option<Anchor>,
        /// Its DN, when it could be read.
        dn: Option<Dn>,
    },
    /// A deleted object (AD tombstone).
    Deleted {
        /// Its anchor.
        anchor: Anchor,
        /// Its DN (in the deleted-objects container).
        dn: Option<Dn>,
    },
    /// Something the connector cannot represent.
    Invalid(ObjectError),
}

fn invalid(anchor: Option<Anchor>, dn: &str, kind: &str, message: String) -> Decoded {
    Decoded::Invalid(ObjectError { anchor, dn: dn.to_owned(), kind: kind.to_owned(), message })
}

/// Reads the anchor of an entry: a 16-byte GUID attribute (objectGUID, mS-DS-ConsistencyGuid)
/// becomes the ImmutableID; entryUUID is kept in its RFC 4122 text form.
pub fn anchor_of(raw: &RawEntry, scope: &Scope) -> Result<(Anchor, Option<ImmutableId>), ObjectError> {
    let dn = raw.dn_lossy();
    let attr = scope.anchor_attribute.as_str();
    let err = |kind: &str, message: String| ObjectError {
        anchor: None,
        dn: dn.clone(),
        kind: kind.into(),
        message,
    };
    if attr == "entryuuid" {
        let Some(text) = raw.values("entryUUID").and_then(|v| v.first()) else {
            return Err(err("missing-anchor", format!("{dn}: the entry has no entryUUID")));
        };
        let parsed = std::str::from_utf8(text).ok().and_then(|t| uuid::Uuid::parse_str(t).ok());
        let Some(u) = parsed else {
            return Err(err("invalid-anchor", format!("{dn}: entryUUID is not a UUID")));
        };
        return Anchor::new(u.hyphenated().to_string())
            .map(|a| (a, None))
            .map_err(|e| err("invalid-anchor", format!("{dn}: {e}")));
    }
    let Some(guid) = raw.values(attr).and_then(|v| v.first()) else {
        return Err(err("missing-anchor", format!("{dn}: the entry has no {attr}")));
    };
    let id = ImmutableId::from_object_guid(guid).map_err(|e| {
        let text = e.to_string();
        let text = if attr == "objectguid" { text } else { text.replacen("objectGUID", attr, 1) };
        err("invalid-anchor", format!("{dn}: {text}"))
    })?;
    Ok((Anchor::from(id), Some(id)))
}

/// Converts raw values to typed ones (text values are moved, not copied).
pub fn typed_values(name: &str, syntax: AttrSyntax, raw: Vec<Vec<u8>>) -> Result<AttrValues, String> {
    let text =
        |v: Vec<u8>| String::from_utf8(v).map_err(|_| format!("a value of `{name}` is not valid UTF-8"));
    Ok(match syntax {
        AttrSyntax::Binary => AttrValues::Binary(raw),
        AttrSyntax::String => AttrValues::String(raw.into_iter().map(text).collect::<Result<_, _>>()?),
        AttrSyntax::Reference => AttrValues::Reference(raw.into_iter().map(text).collect::<Result<_, _>>()?),
        AttrSyntax::Timestamp => AttrValues::Timestamp(raw.into_iter().map(text).collect::<Result<_, _>>()?),
        AttrSyntax::Integer => AttrValues::Integer(
            raw.iter()
                .map(|v| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| t.trim().parse::<i64>().ok())
                        .ok_or_else(|| format!("a value of `{name}` is not an integer"))
                })
                .collect::<Result<_, _>>()?,
        ),
        AttrSyntax::Boolean => AttrValues::Boolean(
            raw.iter()
                .map(|v| match v.to_ascii_uppercase().as_slice() {
                    b"TRUE" => Ok(true),
                    b"FALSE" => Ok(false),
                    _ => Err(format!("a value of `{name}` is not TRUE or FALSE")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Turns a raw entry into a CS object (or says why not). Range-continued attributes are
/// reported in `open_ranges` for the caller to complete.
pub fn decode(raw: RawEntry, scope: &Scope) -> Decoded {
    let anchor = anchor_of(&raw, scope);
    let known = anchor.as_ref().ok().map(|(a, _)| a.clone());
    let dn_text = match std::str::from_utf8(&raw.dn) {
        Ok(t) => t.to_owned(),
        Err(_) => {
            let lossy = raw.dn_lossy();
            return invalid(known, &lossy, "invalid-dn", format!("{lossy}: the DN is not valid UTF-8"));
        }
    };
    let dn = match Dn::parse(&dn_text) {
        Ok(d) => d,
        Err(e) => return invalid(known, &dn_text, "invalid-dn", format!("{dn_text}: {e}")),
    };
    if scope.flavor == Flavor::Ad && raw.is_true("isDeleted") {
        return match anchor {
            Ok((a, _)) => Decoded::Deleted { anchor: a, dn: Some(dn) },
            Err(e) => Decoded::Invalid(e),
        };
    }
    let classes = raw.values("objectClass").unwrap_or(&[]);
    let object_class = scope.classify(classes);
    let critical = scope.flavor == Flavor::Ad && raw.is_true("isCriticalSystemObject");
    if object_class.is_none() || critical || !scope.contains(&dn) {
        return Decoded::OutOfScope { anchor: anchor.ok().map(|(a, _)| a), dn: Some(dn) };
    }
    let (anchor, immutable_id) = match anchor {
        Ok(a) => a,
        Err(e) => return Decoded::Invalid(e),
    };
    let mut attributes = Attributes::new();
    let mut open_ranges = Vec::new();
    for (desc, values) in raw.attrs {
        let (name, range) = split_description(&desc);
        let key = name.to_ascii_lowercase();
        if !scope.kept.contains(&key) {
            continue;
        }
        let syntax = schema::syntax_of(name);
        let typed = match typed_values(name, syntax, values) {
            Ok(t) => t,
            Err(m) => return invalid(Some(anchor), &dn_text, "invalid-value", format!("{dn_text}: {m}")),
        };
        if let Some(Range { high: Some(high), .. }) = range
            && let Some(next) = high.checked_add(1)
        {
            open_ranges.push((name.to_owned(), next));
        }
        let name = canonical_name(name);
        match attributes.get_mut(&name.into()) {
            Some(existing) => {
                let empty = AttrValues::empty(syntax);
                existing.apply_delta(&typed, &empty);
            }
            None => attributes.insert(name, typed),
        }
    }
    let Some(object_class) = object_class else {
        return Decoded::OutOfScope { anchor: Some(anchor), dn: Some(dn) };
    };
    Decoded::Object { object: CsObject { anchor, immutable_id, dn, object_class, attributes }, open_ranges }
}

/// The schema's spelling of an attribute name, so that every server's case gives one key.
pub fn canonical_name(name: &str) -> &str {
    for list in [schema::default_attributes(Flavor::Ad), schema::default_attributes(Flavor::Openldap)] {
        if let Some(c) = list.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            return c;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad_scope(extra: &str) -> Scope {
        let config: LdapConfig = toml::from_str(&format!(
            "flavor = \"ad\"\nurl = \"ldaps://dc:636\"\nbind_dn = \"x\"\npassword_env = \"P\"\nbase_dn = \"DC=corp,DC=com\"\n{extra}"
        ))
        .unwrap();
        Scope::new(&config).unwrap()
    }

    fn entry(dn: &[u8], attrs: &[(&str, &[&[u8]])]) -> RawEntry {
        RawEntry {
            dn: dn.to_vec(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|x| x.to_vec()).collect()))
                .collect(),
        }
    }

    const GUID: &[u8] =
        &[0x72, 0x7b, 0x53, 0xee, 0xb5, 0x9e, 0x4a, 0x47, 0x82, 0x86, 0x43, 0x13, 0x09, 0x13, 0x3f, 0xd9];

    #[test]
    fn a_user_becomes_a_cs_object_anchored_on_its_immutable_id() {
        let scope = ad_scope("");
        let raw = entry(
            b"CN=Alice,OU=Staff,DC=corp,DC=com",
            &[
                ("objectClass", &[b"top", b"person", b"organizationalPerson", b"user"]),
                ("objectGUID", &[GUID]),
                ("userPrincipalName", &[b"alice@corp.com"]),
                ("userAccountControl", &[b"512"]),
                ("uSNChanged", &[b"99"]),
                ("memberOf", &[b"CN=G,DC=corp,DC=com"]),
            ],
        );
        let Decoded::Object { object, open_ranges } = decode(raw, &scope) else { panic!("not an object") };
        assert_eq!(object.anchor.as_str(), "cntT7rWeSkeChkMTCRM/2Q==");
        assert_eq!(object.object_class, "user");
        assert_eq!(object.attributes.get("userAccountControl"), Some(&AttrValues::Integer(vec![512])));
        assert!(object.attributes.get("uSNChanged").is_none(), "bookkeeping attributes are not stored");
        assert!(object.attributes.get("memberOf").is_none(), "back-links are not stored");
        assert!(open_ranges.is_empty());
    }

    #[test]
    fn bad_input_becomes_an_error_naming_the_object() {
        let scope = ad_scope("");
        let classes: &[&[u8]] = &[b"user"];
        let short = decode(
            entry(b"CN=Bad,DC=corp,DC=com", &[("objectClass", classes), ("objectGUID", &[&GUID[..15]])]),
            &scope,
        );
        let Decoded::Invalid(e) = short else { panic!("{short:?}") };
        assert_eq!((e.kind.as_str(), e.dn.as_str()), ("invalid-anchor", "CN=Bad,DC=corp,DC=com"));
        assert_eq!(e.message, "CN=Bad,DC=corp,DC=com: objectGUID must be exactly 16 bytes, got 15");

        let missing = decode(entry(b"CN=NoGuid,DC=corp,DC=com", &[("objectClass", classes)]), &scope);
        assert!(matches!(missing, Decoded::Invalid(ref e) if e.kind == "missing-anchor"), "{missing:?}");

        let bad_dn = decode(
            entry(b"CN=\xff\xfe,DC=corp,DC=com\xff", &[("objectClass", classes), ("objectGUID", &[GUID])]),
            &scope,
        );
        let bad_dn = match bad_dn {
            Decoded::Invalid(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad_dn.kind, "invalid-dn");

        let bad_text = decode(
            entry(
                b"CN=Text,DC=corp,DC=com",
                &[("objectClass", classes), ("objectGUID", &[GUID]), ("displayName", &[b"\xc3\x28"])],
            ),
            &scope,
        );
        let Decoded::Invalid(e) = bad_text else { panic!("{bad_text:?}") };
        assert_eq!(e.message, "CN=Text,DC=corp,DC=com: a value of `displayName` is not valid UTF-8");
    }

    #[test]
    fn scope_leaves_out_system_objects_computers_and_other_ous() {
        let scope = ad_scope(
            "include_ous = [\"OU=Staff,DC=corp,DC=com\"]\nexclude_ous = [\"OU=Old,OU=Staff,DC=corp,DC=com\"]\n",
        );
        let user: &[&[u8]] = &[b"user"];
        let computer: &[&[u8]] = &[b"user", b"computer"];
        type Case<'a> = (&'a [u8], &'a [&'a [u8]], bool, bool);
        let cases: Vec<Case> = vec![
            (b"CN=A,OU=Staff,DC=corp,DC=com", user, false, true),
            (b"CN=A,OU=Old,OU=Staff,DC=corp,DC=com", user, false, false),
            (b"CN=A,CN=Users,DC=corp,DC=com", user, false, false),
            (b"CN=krbtgt,OU=Staff,DC=corp,DC=com", user, true, false),
            (b"CN=PC1,OU=Staff,DC=corp,DC=com", computer, false, false),
        ];
        for (dn, classes, critical, in_scope) in cases {
            let mut attrs: Vec<(&str, &[&[u8]])> = vec![("objectClass", classes), ("objectGUID", &[GUID])];
            if critical {
                attrs.push(("isCriticalSystemObject", &[b"TRUE"]));
            }
            let d = decode(entry(dn, &attrs), &scope);
            assert_eq!(
                matches!(d, Decoded::Object { .. }),
                in_scope,
                "{}: {d:?}",
                String::from_utf8_lossy(dn)
            );
        }
        assert_eq!(
            scope.filter(),
            "(&(|(&(objectCategory=person)(objectClass=user))(objectClass=group)(objectClass=contact))(!(isCriticalSystemObject=TRUE)))"
        );
    }

    #[test]
    fn parse_entry_never_panics_on_garbage() {
        use ldap3::asn1::{StructureTag, TagClass};
        let t = StructureTag { class: TagClass::Application, id: 4, payload: PL::P(vec![1, 2, 3]) };
        assert!(parse_entry(t).is_err());
        let t = StructureTag { class: TagClass::Application, id: 4, payload: PL::C(vec![]) };
        assert!(parse_entry(t).is_err());
    }

    #[test]
    fn range_options_are_read() {
        assert_eq!(
            split_description("member;range=0-1499"),
            ("member", Some(Range { low: 0, high: Some(1499) }))
        );
        assert_eq!(
            split_description("member;range=1500-*"),
            ("member", Some(Range { low: 1500, high: None }))
        );
        assert_eq!(split_description("member"), ("member", None));
        assert_eq!(split_description("member;range=x-1"), ("member", None));
        assert_eq!(split_description("userCertificate;binary"), ("userCertificate", None));
    }

    #[test]
    fn typed_values_refuse_bad_input_with_the_attribute_name() {
        assert_eq!(
            typed_values("description", AttrSyntax::String, vec![vec![0xff, 0xfe]]).unwrap_err(),
            "a value of `description` is not valid UTF-8"
        );
        assert!(typed_values("uSNChanged", AttrSyntax::Integer, vec![b"12a".to_vec()]).is_err());
        assert_eq!(
            typed_values("x", AttrSyntax::Boolean, vec![b"TRUE".to_vec()]).unwrap(),
            AttrValues::Boolean(vec![true])
        );
    }
}
