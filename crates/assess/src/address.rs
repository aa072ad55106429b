//! Addresses and domains: splitting `name@domain`, domain syntax, routability from the public
//! suffix list and the suffixes used only on-premises, and transliteration to ASCII.

/// Top-level (or final) labels that are used on-premises and never routable for a tenant unless
/// the tenant verified the domain: the AD FS guide names `.local` and `.int`; the rest are the
/// usual private-use and reserved names (RFC 2606, RFC 6761, RFC 6762, ICANN's `.internal`).
pub const ON_PREMISES_SUFFIXES: &[&str] = &[
    "local",
    "int",
    "lan",
    "corp",
    "internal",
    "home",
    "localdomain",
    "test",
    "example",
    "invalid",
    "localhost",
    "arpa",
    "intranet",
    "private",
];

/// Why a domain can or cannot be used as a UPN suffix or mail domain in the cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainClass {
    /// Routable; its registrable domain per the public suffix list.
    Routable {
        /// `example.com` for `corp.example.com`.
        registrable: String,
    },
    /// Syntactically a domain, but not routable on the internet.
    NonRoutable {
        /// Why (`.local is used on-premises only`, `unknown top-level domain .con`...).
        reason: String,
    },
    /// Not a domain name at all.
    Malformed {
        /// Why.
        reason: String,
    },
}

impl DomainClass {
    /// True for [`DomainClass::Routable`].
    pub fn is_routable(&self) -> bool {
        matches!(self, Self::Routable { .. })
    }
}

/// True when `s` looks like an IPv4 address or an address literal (`[1.2.3.4]`, `[IPv6:...]`).
pub fn is_ip_literal(s: &str) -> bool {
    if s.starts_with('[') && s.ends_with(']') {
        return true;
    }
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() == 4
        && labels.iter().all(|l| !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a domain's syntax: labels of ASCII letters, digits and inner hyphens, 1 to 63
/// characters each, 253 in all. Returns what is wrong.
pub fn domain_syntax_problem(domain: &str) -> Option<String> {
    if domain.is_empty() {
        return Some("the domain is empty".into());
    }
    if domain.len() > 253 {
        return Some("the domain is longer than 253 characters".into());
    }
    if is_ip_literal(domain) {
        return None; // classified (as non-routable) by `classify_domain`
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Some(format!(
                "`{domain}` has an empty label (two periods in a row, or a leading or trailing period)"
            ));
        }
        if label.len() > 63 {
            return Some(format!("the label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Some(format!("the label `{label}` contains `{c}`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label `{label}` starts or ends with a hyphen"));
        }
    }
    None
}

/// Classifies a domain (case-insensitive).
pub fn classify_domain(domain: &str) -> DomainClass {
    let lower = domain.to_ascii_lowercase();
    if is_ip_literal(&lower) {
        return DomainClass::NonRoutable { reason: "an IP address, not a domain".into() };
    }
    if let Some(reason) = domain_syntax_problem(&lower) {
        return DomainClass::Malformed { reason };
    }
    let tld = lower.rsplit('.').next().unwrap_or(&lower);
    if !lower.contains('.') {
        return DomainClass::NonRoutable { reason: "a single-label domain".into() };
    }
    if let Some(s) = ON_PREMISES_SUFFIXES.iter().find(|s| **s == tld) {
        return DomainClass::NonRoutable { reason: format!(".{s} is used on-premises only") };
    }
    let known_tld = psl::suffix(tld.as_bytes()).is_some_and(|s| s.is_known());
    if !known_tld {
        return DomainClass::NonRoutable { reason: format!("unknown top-level domain .{tld}") };
    }
    match psl::domain(lower.as_bytes()) {
        Some(d) => DomainClass::Routable { registrable: String::from_utf8_lossy(d.as_bytes()).into_owned() },
        None => DomainClass::NonRoutable {
            reason: format!("{lower} is a public suffix, not a registrable domain"),
        },
    }
}

/// True when the (lowercase) domain's last label is a top-level domain the public suffix list
/// knows.
pub fn has_known_tld(domain: &str) -> bool {
    let lower = domain.to_ascii_lowercase();
    let tld = lower.rsplit('.').next().unwrap_or(&lower);
    lower.contains('.') && psl::suffix(tld.as_bytes()).is_some_and(|s| s.is_known())
}

/// Splits `local@domain` at its only `@`. Says what is wrong when there is not exactly one `@`
/// with text on both sides.
pub fn split_address(value: &str) -> Result<(&str, &str), String> {
    let mut parts = value.splitn(2, '@');
    let (Some(local), Some(domain)) = (parts.next(), parts.next()) else {
        return Err("there is no @".into());
    };
    if domain.contains('@') {
        return Err("there is more than one @".into());
    }
    if local.is_empty() {
        return Err("nothing before the @".into());
    }
    if domain.is_empty() {
        return Err("nothing after the @".into());
    }
    Ok((local, domain))
}

/// RFC 5322 `atext`: the characters of a dot-atom other than the period.
pub fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// What is wrong with a local part as an RFC 5322 dot-atom (leading, trailing or doubled
/// periods; characters outside `atext`).
pub fn dot_atom_problem(local: &str) -> Option<String> {
    if local.starts_with('.') {
        return Some("the part before the @ starts with a period".into());
    }
    if local.ends_with('.') {
        return Some("the part before the @ ends with a period".into());
    }
    if local.contains("..") {
        return Some("the part before the @ has two periods in a row".into());
    }
    local
        .chars()
        .find(|c| *c != '.' && !is_atext(*c))
        .map(|c| format!("the part before the @ contains `{}`", c.escape_default()))
}

/// The value with every non-ASCII character transliterated (`fränk` -> `frank`,
/// `Straße` -> `Strasse`).
pub fn to_ascii(value: &str) -> String {
    if value.is_ascii() { value.to_owned() } else { deunicode::deunicode(value) }
}

/// The non-ASCII characters of a value, each once, in order.
pub fn non_ascii_chars(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().filter(|c| !c.is_ascii()) {
        if !out.contains(c) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routable_domains_come_from_the_public_suffix_list() {
        for (domain, registrable) in [
            ("corp.example.com", "example.com"),
            ("contoso.cloud", "contoso.cloud"),
            ("bank.swiss", "bank.swiss"),
            ("shop.africa", "shop.africa"),
            ("uni.edu.au", "uni.edu.au"),
            ("mail.uni.edu.au", "uni.edu.au"),
            ("Contoso.COM", "contoso.com"),
        ] {
            assert_eq!(
                classify_domain(domain),
                DomainClass::Routable { registrable: registrable.into() },
                "{domain}"
            );
        }
    }

    #[test]
    fn on_premises_single_label_ip_and_unknown_domains_are_not_routable() {
        for (domain, reason) in [
            ("corp.local", ".local is used on-premises only"),
            ("corp.int", ".int is used on-premises only"),
            ("ad.lan", ".lan"),
            ("x.corp", ".corp"),
            ("x.internal", ".internal"),
            ("home.arpa", ".arpa"),
            ("corp", "single-label"),
            ("10.0.0.1", "IP address"),
            ("[10.0.0.1]", "IP address"),
            ("contoso.con", "unknown top-level domain .con"),
            ("edu.au", "public suffix"),
        ] {
            match classify_domain(domain) {
                DomainClass::NonRoutable { reason: r } => assert!(r.contains(reason), "{domain}: {r}"),
                other => panic!("{domain}: {other:?}"),
            }
        }
        assert!(matches!(classify_domain("a..com"), DomainClass::Malformed { .. }));
        assert!(matches!(classify_domain("a_b.com"), DomainClass::Malformed { .. }));
        assert!(matches!(classify_domain("-a.com"), DomainClass::Malformed { .. }));
    }

    #[test]
    fn addresses_split_at_exactly_one_at_sign() {
        assert_eq!(split_address("a@b.com"), Ok(("a", "b.com")));
        assert!(split_address("ab.com").is_err());
        assert!(split_address("@b.com").is_err());
        assert!(split_address("a@").is_err());
        assert!(split_address("a@b@c.com").is_err());
    }

    #[test]
    fn dot_atoms_and_transliteration() {
        assert_eq!(dot_atom_problem("o'brien.x"), None);
        assert!(dot_atom_problem(".a").is_some());
        assert!(dot_atom_problem("a.").is_some());
        assert!(dot_atom_problem("a..b").is_some());
        assert!(dot_atom_problem("a b").is_some());
        assert_eq!(to_ascii("fränk"), "frank");
        assert_eq!(to_ascii("Straße"), "Strasse");
        assert_eq!(to_ascii("ÿvonne-ñ"), "yvonne-n");
        assert_eq!(non_ascii_chars("fräänk-é"), "äé");
    }
}
