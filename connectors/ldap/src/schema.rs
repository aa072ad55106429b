//! What the connector reads from each flavor: object types, default attributes, syntaxes. The
//! facts are data in `schema/attributes.toml`, embedded at build time.

use std::sync::OnceLock;

use serde::Deserialize;
use syncctl_core::AttrSyntax;

use crate::config::Flavor;

const CATALOG_TOML: &str = include_str!("../../../schema/attributes.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    syntax: Syntaxes,
    ldap: Flavors,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Syntaxes {
    binary: Vec<String>,
    integer: Vec<String>,
    boolean: Vec<String>,
    reference: Vec<String>,
    timestamp: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flavors {
    ad: FlavorCatalog,
    openldap: FlavorCatalog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorCatalog {
    object_types: Vec<String>,
    default_attributes: Vec<String>,
    required_attributes: Vec<String>,
    bookkeeping_attributes: Vec<String>,
}

struct Loaded {
    syntax: Vec<(String, AttrSyntax)>,
    ad: Lists,
    openldap: Lists,
}

struct Lists {
    object_types: Vec<&'static str>,
    default_attributes: Vec<&'static str>,
    required_attributes: Vec<&'static str>,
    bookkeeping_attributes: Vec<&'static str>,
}

fn leak(v: Vec<String>) -> Vec<&'static str> {
    // Loaded once per process; the catalog lives as long as the program.
    v.into_iter().map(|s| &*Box::leak(s.into_boxed_str())).collect()
}

fn lists(c: FlavorCatalog) -> Lists {
    Lists {
        object_types: leak(c.object_types),
        default_attributes: leak(c.default_attributes),
        required_attributes: leak(c.required_attributes),
        bookkeeping_attributes: leak(c.bookkeeping_attributes),
    }
}

fn loaded() -> &'static Loaded {
    static CATALOG: OnceLock<Loaded> = OnceLock::new();
    CATALOG.get_or_init(|| {
        // The catalog is part of the binary and a unit test parses it; an empty catalog is the
        // fallback only if that test was ignored.
        let c: Catalog = toml::from_str(CATALOG_TOML).unwrap_or_else(|_| Catalog {
            syntax: Syntaxes {
                binary: vec![],
                integer: vec![],
                boolean: vec![],
                reference: vec![],
                timestamp: vec![],
            },
            ldap: Flavors {
                ad: FlavorCatalog {
                    object_types: vec![],
                    default_attributes: vec![],
                    required_attributes: vec![],
                    bookkeeping_attributes: vec![],
                },
                openldap: FlavorCatalog {
                    object_types: vec![],
                    default_attributes: vec![],
                    required_attributes: vec![],
                    bookkeeping_attributes: vec![],
                },
            },
        });
        let mut syntax = Vec::new();
        for (list, s) in [
            (c.syntax.binary, AttrSyntax::Binary),
            (c.syntax.integer, AttrSyntax::Integer),
            (c.syntax.boolean, AttrSyntax::Boolean),
            (c.syntax.reference, AttrSyntax::Reference),
            (c.syntax.timestamp, AttrSyntax::Timestamp),
        ] {
            syntax.extend(list.into_iter().map(|n| (n.to_ascii_lowercase(), s)));
        }
        Loaded { syntax, ad: lists(c.ldap.ad), openldap: lists(c.ldap.openldap) }
    })
}

fn of(flavor: Flavor) -> &'static Lists {
    match flavor {
        Flavor::Ad => &loaded().ad,
        Flavor::Openldap => &loaded().openldap,
    }
}

/// The object types a flavor knows, in its own vocabulary.
pub fn object_types(flavor: Flavor) -> &'static [&'static str] {
    &of(flavor).object_types
}

/// The identity attributes read when the config has no inclusion list.
pub fn default_attributes(flavor: Flavor) -> &'static [&'static str] {
    &of(flavor).default_attributes
}

/// Attributes the connector always reads, whatever the inclusion list says.
pub fn required_attributes(flavor: Flavor) -> &'static [&'static str] {
    &of(flavor).required_attributes
}

/// Attributes read for the connector's bookkeeping and not stored (`memberOf` and other
/// back-links among them: they change without the object's own change stamp moving).
pub fn bookkeeping_attributes(flavor: Flavor) -> &'static [&'static str] {
    &of(flavor).bookkeeping_attributes
}

/// The syntax an attribute's values are read with.
pub fn syntax_of(name: &str) -> AttrSyntax {
    let lower = name.to_ascii_lowercase();
    loaded().syntax.iter().find(|(n, _)| *n == lower).map(|(_, s)| *s).unwrap_or(AttrSyntax::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_parses_and_says_what_the_connector_relies_on() {
        let c: Catalog = toml::from_str(CATALOG_TOML).unwrap();
        assert!(!c.ldap.ad.default_attributes.is_empty());
        assert_eq!(syntax_of("objectGUID"), AttrSyntax::Binary);
        assert_eq!(syntax_of("OBJECTGUID"), AttrSyntax::Binary);
        assert_eq!(syntax_of("member"), AttrSyntax::Reference);
        assert_eq!(syntax_of("uSNChanged"), AttrSyntax::Integer);
        assert_eq!(syntax_of("isDeleted"), AttrSyntax::Boolean);
        assert_eq!(syntax_of("userPrincipalName"), AttrSyntax::String);
        assert_eq!(object_types(Flavor::Ad), ["user", "group", "contact"]);
        assert_eq!(object_types(Flavor::Openldap), ["inetOrgPerson", "groupOfNames"]);
        for flavor in [Flavor::Ad, Flavor::Openldap] {
            for b in bookkeeping_attributes(flavor) {
                assert!(
                    !default_attributes(flavor).iter().any(|d| d.eq_ignore_ascii_case(b)),
                    "{b} is both kept and bookkeeping"
                );
            }
        }
    }
}
