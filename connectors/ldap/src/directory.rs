//! Directory entries as the LDAP connector reads them, for the other connectors that read the
//! same directories from another medium (an LDIF export of an AD or OpenLDAP tree).
//!
//! Everything an entry goes through between the wire and the connector space lives here once:
//! the scope (base, OUs, object types, kept attributes, anchor), the object classification, the
//! anchor and ImmutableID, value typing from `schema/attributes.toml`, range options merged and
//! attribute names canonicalized. A connector that hands [`decode`] the same DN and values as a
//! live search gets the same connector-space object, hash for hash.

pub use crate::entry::{
    Decoded, Range, RawEntry, Scope, ScopeSettings, canonical_name, decode, split_description, typed_values,
};
