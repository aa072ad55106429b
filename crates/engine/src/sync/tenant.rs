//! What Microsoft's directory-sync service does to values on their way into a tenant, and what
//! an engine that exports through Graph must therefore do itself (Graph refuses instead):
//!
//! - a UPN whose domain is not a verified domain of the tenant (`alice@corp.local`) is
//!   rewritten to the tenant's initial domain (`alice@contoso.onmicrosoft.com`);
//! - duplicate attribute resiliency: a UPN that another object holds is replaced by a
//!   placeholder `<prefix><4 digits>@<initial domain>`, and a proxy address that another object
//!   holds is left out, until the conflict is resolved.
//!
//! The tenant's domains come from the cloud connector's space (objects of class `domain`).
//! This module holds the pure part; the sync run decides who holds what.

use std::collections::BTreeSet;

use syncctl_core::AttrValues;
use syncctl_store::SyncCsObject;

/// The domains of one cloud tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tenant {
    /// The initial domain (`contoso.onmicrosoft.com`), lower case.
    pub initial: String,
    /// Verified domains, lower case (the initial domain included).
    verified: BTreeSet<String>,
}

/// A boolean attribute of a domain object (`true` also accepted as text).
fn flag(o: &SyncCsObject, name: &str) -> bool {
    match o.attributes.get(name) {
        Some(AttrValues::Boolean(v)) => v.first().copied().unwrap_or(false),
        Some(AttrValues::String(v)) => v.first().is_some_and(|s| s.eq_ignore_ascii_case("true")),
        _ => false,
    }
}

impl Tenant {
    /// The tenant described by a connector's domain objects; `None` without an initial domain
    /// (a target that is not a cloud tenant, or one never imported).
    pub fn from_domains(domains: &[SyncCsObject]) -> Option<Self> {
        let name = |o: &SyncCsObject| {
            o.attributes
                .get("id")
                .and_then(|v| v.texts().and_then(|t| t.first().cloned()))
                .unwrap_or_else(|| o.anchor.clone())
                .to_lowercase()
        };
        let initial = domains.iter().filter(|o| o.present && flag(o, "isInitial")).map(name).min()?;
        let mut verified: BTreeSet<String> =
            domains.iter().filter(|o| o.present && flag(o, "isVerified")).map(name).collect();
        verified.insert(initial.clone());
        Some(Self { initial, verified })
    }

    /// A text that changes when the verified domains change (part of the sync mark: a domain
    /// verified or removed makes the next sync a full one).
    pub fn fingerprint(&self) -> String {
        let list: Vec<&str> = self.verified.iter().map(String::as_str).collect();
        format!("{}|{}", self.initial, list.join(","))
    }

    /// Verified in the tenant (case-insensitive).
    pub fn is_verified(&self, domain: &str) -> bool {
        self.verified.contains(&domain.to_lowercase())
    }

    /// The rewritten UPN when its domain is not verified: the same prefix at the initial domain.
    pub fn rewrite_upn(&self, upn: &str) -> Option<String> {
        let (prefix, domain) = split_upn(upn);
        if domain.is_some_and(|d| self.is_verified(d)) {
            return None;
        }
        Some(format!("{prefix}@{}", self.initial))
    }

    /// The duplicate-attribute placeholder number `n` (0..10000) for a UPN.
    pub fn placeholder(&self, upn: &str, n: u32) -> String {
        let (prefix, _) = split_upn(upn);
        format!("{prefix}{:04}@{}", n % 10_000, self.initial)
    }

    /// True when `candidate` is a placeholder of `upn` (`<prefix><4 digits>@<initial>`).
    pub fn is_placeholder_of(&self, candidate: &str, upn: &str) -> bool {
        let (prefix, _) = split_upn(upn);
        let (cand_prefix, cand_domain) = split_upn(candidate);
        if !cand_domain.is_some_and(|d| d.eq_ignore_ascii_case(&self.initial)) {
            return false;
        }
        let Some(digits) = cand_prefix.get(prefix.len()..) else { return false };
        cand_prefix.len() == prefix.len() + 4
            && cand_prefix.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

/// `prefix@domain` split at the last `@`; a value without `@` is all prefix.
fn split_upn(upn: &str) -> (&str, Option<&str>) {
    match upn.rsplit_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (upn, None),
    }
}

/// The first placeholder number tried for an object: stable for its anchor (FNV-1a), so that
/// every run proposes the same placeholder.
pub(crate) fn placeholder_seed(anchor: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in anchor.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % 10_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncctl_core::Attributes;

    fn domain(name: &str, verified: bool, initial: bool) -> SyncCsObject {
        let mut attributes = Attributes::new();
        attributes.insert("id", AttrValues::String(vec![name.to_owned()]));
        attributes.insert("isVerified", AttrValues::Boolean(vec![verified]));
        attributes.insert("isInitial", AttrValues::Boolean(vec![initial]));
        SyncCsObject {
            id: 1,
            connector_id: 1,
            anchor: name.to_lowercase(),
            immutable_id: None,
            dn: format!("CN={name},CN=domains"),
            dn_norm: format!("cn={},cn=domains", name.to_lowercase()),
            object_class: "domain".into(),
            attributes,
            present: true,
            change_seq: 1,
        }
    }

    fn contoso() -> Tenant {
        Tenant::from_domains(&[
            domain("Contoso.onmicrosoft.com", true, true),
            domain("corp.example.com", true, false),
            domain("pending.example.com", false, false),
        ])
        .unwrap()
    }

    #[test]
    fn no_initial_domain_no_tenant() {
        assert_eq!(Tenant::from_domains(&[domain("corp.example.com", true, false)]), None);
        assert_eq!(Tenant::from_domains(&[]), None);
    }

    #[test]
    fn unverified_suffixes_are_rewritten_to_the_initial_domain() {
        let t = contoso();
        assert_eq!(t.initial, "contoso.onmicrosoft.com");
        assert_eq!(t.rewrite_upn("alice@corp.example.com"), None);
        assert_eq!(t.rewrite_upn("Alice@CORP.Example.com"), None);
        assert_eq!(t.rewrite_upn("bob@contoso.onmicrosoft.com"), None);
        assert_eq!(t.rewrite_upn("carol@corp.local").as_deref(), Some("carol@contoso.onmicrosoft.com"));
        // Added but not verified: Graph refuses it too.
        assert_eq!(
            t.rewrite_upn("dave@pending.example.com").as_deref(),
            Some("dave@contoso.onmicrosoft.com")
        );
        // A subdomain of a verified domain is its own domain.
        assert_eq!(
            t.rewrite_upn("erin@eu.corp.example.com").as_deref(),
            Some("erin@contoso.onmicrosoft.com")
        );
        assert_eq!(t.rewrite_upn("frank").as_deref(), Some("frank@contoso.onmicrosoft.com"));
        // The last @ separates the domain.
        assert_eq!(t.rewrite_upn("a@b@corp.local").as_deref(), Some("a@b@contoso.onmicrosoft.com"));
    }

    #[test]
    fn placeholders() {
        let t = contoso();
        assert_eq!(t.placeholder("alice@corp.example.com", 42), "alice0042@contoso.onmicrosoft.com");
        assert_eq!(t.placeholder("alice@corp.example.com", 12_345), "alice2345@contoso.onmicrosoft.com");
        assert!(t.is_placeholder_of("alice0042@contoso.onmicrosoft.com", "alice@corp.example.com"));
        assert!(t.is_placeholder_of("ALICE9999@Contoso.onmicrosoft.com", "alice@corp.local"));
        assert!(!t.is_placeholder_of("alice@contoso.onmicrosoft.com", "alice@corp.example.com"));
        assert!(!t.is_placeholder_of("alice00421@contoso.onmicrosoft.com", "alice@corp.example.com"));
        assert!(!t.is_placeholder_of("alice004x@contoso.onmicrosoft.com", "alice@corp.example.com"));
        assert!(!t.is_placeholder_of("alice0042@corp.example.com", "alice@corp.example.com"));
        assert!(!t.is_placeholder_of("bob00042@contoso.onmicrosoft.com", "alice@corp.example.com"));
        // Multi-byte prefixes do not panic.
        assert!(!t.is_placeholder_of("é@contoso.onmicrosoft.com", "ab@corp.local"));
        assert!(t.is_placeholder_of("jörg0001@contoso.onmicrosoft.com", "jörg@corp.local"));
    }

    #[test]
    fn the_seed_is_stable_and_spread() {
        assert_eq!(
            placeholder_seed("AAECAwQFBgcICQoLDA0ODw=="),
            placeholder_seed("AAECAwQFBgcICQoLDA0ODw==")
        );
        let seeds: BTreeSet<u32> = (0..100).map(|i| placeholder_seed(&format!("anchor-{i}"))).collect();
        assert!(seeds.len() > 90, "FNV-1a spreads 100 anchors over 10,000 numbers: {}", seeds.len());
        assert!(seeds.iter().all(|s| *s < 10_000));
    }

    #[test]
    fn fingerprint_follows_the_verified_set() {
        let a = contoso();
        let b = Tenant::from_domains(&[
            domain("contoso.onmicrosoft.com", true, true),
            domain("corp.example.com", true, false),
            domain("pending.example.com", true, false),
        ])
        .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), contoso().fingerprint());
    }
}
