//! The rule catalogue: every check `syncctl assess` makes, with a stable id.
//!
//! Ids never change meaning once released: scripts filter on them. Severities follow one rule:
//! **error** = the object will not synchronize, or will synchronize wrong in a way that breaks
//! sign-in or mail, until the value is fixed; **warning** = the cloud will change or drop the
//! value (the UPN rewritten to the initial domain, a duplicate set aside); **info** = worth
//! knowing before going live. The `idfix` column is IdFix's error kind for the same finding,
//! used in the CSV's ERROR column so that IdFix users read familiar words.

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks a correct sync of the object.
    Error,
    /// The cloud will change or drop the value.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One rule of the catalogue.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    /// Stable id (`upn-invalid-character`).
    pub id: &'static str,
    /// Its default severity.
    pub severity: Severity,
    /// The attribute it checks (`-` for forest-wide checks).
    pub attribute: &'static str,
    /// IdFix's error kind for the same finding (`character`, `duplicate`...), or the kind this
    /// report adds (`tenant`, `federation`, `anchor`, `notification`).
    pub idfix: &'static str,
    /// One line: what is wrong.
    pub summary: &'static str,
    /// How the fix is suggested.
    pub fix: &'static str,
}

macro_rules! rules {
    ($($name:ident = ($id:literal, $sev:ident, $attr:literal, $idfix:literal, $summary:literal, $fix:literal);)*) => {
        $(
            #[doc = $summary]
            pub const $name: Rule = Rule {
                id: $id,
                severity: Severity::$sev,
                attribute: $attr,
                idfix: $idfix,
                summary: $summary,
                fix: $fix,
            };
        )*
        /// Every rule, in catalogue order.
        pub const ALL: &[Rule] = &[$($name),*];
    };
}

rules! {
    UPN_MISSING = ("upn-missing", Error, "userPrincipalName", "blank",
        "A user has no userPrincipalName: the cloud sign-in name would be made up from sAMAccountName and federated sign-in fails.",
        "Set sAMAccountName@<the forest's main routable (or verified) UPN suffix>.");
    UPN_TOO_LONG = ("upn-too-long", Error, "userPrincipalName", "length",
        "The userPrincipalName is longer than 113 characters.",
        "None suggested: choose a shorter name.");
    UPN_LOCAL_PART_TOO_LONG = ("upn-local-part-too-long", Error, "userPrincipalName", "length",
        "The part before the @ is longer than 64 characters.",
        "Truncate the part before the @ to 64 characters (kept unique).");
    UPN_DOMAIN_TOO_LONG = ("upn-domain-too-long", Error, "userPrincipalName", "length",
        "The part after the @ is longer than 48 characters.",
        "None suggested: use a shorter UPN suffix.");
    UPN_INVALID_CHARACTER = ("upn-invalid-character", Error, "userPrincipalName", "character",
        "The userPrincipalName contains whitespace or a character the cloud refuses: \\ % & * + / = ? { } | < > ( ) ; : , [ ] \".",
        "Remove the characters.");
    UPN_DIACRITIC = ("upn-diacritic", Error, "userPrincipalName", "character",
        "The userPrincipalName contains a non-ASCII character (letters with diacritics such as ä, é, ñ, ø, ß).",
        "Transliterate to ASCII (fränk -> frank, ß -> ss).");
    UPN_FORMAT = ("upn-format", Error, "userPrincipalName", "format",
        "The userPrincipalName is not of the form name@domain (no @, several @, or an empty part).",
        "None suggested unless the value is only missing its suffix.");
    UPN_LOCAL_PART = ("upn-local-part", Error, "userPrincipalName", "localpart",
        "The part before the @ starts or ends with a period, has two periods in a row, or ends with &.",
        "Remove the leading, trailing and doubled periods.");
    UPN_DOMAIN_PART = ("upn-domain-part", Error, "userPrincipalName", "domainpart",
        "The part after the @ is not a domain name (labels of letters, digits and inner hyphens).",
        "None suggested: use a routable UPN suffix.");
    UPN_SUFFIX_NON_ROUTABLE = ("upn-suffix-non-routable", Warning, "userPrincipalName", "topleveldomain",
        "The UPN suffix is not routable on the internet (.local, .corp, .int, an unknown top-level domain, a single label, an IP address): the cloud replaces it with the tenant's onmicrosoft.com domain and the user cannot sign in with this UPN.",
        "Replace the suffix with the forest's main routable suffix (a verified domain when tenant data is given); add that suffix to the forest's UPN suffixes first.");
    UPN_SUFFIX_UNVERIFIED = ("upn-suffix-unverified", Warning, "userPrincipalName", "tenant",
        "The UPN suffix is routable but not a verified domain of the tenant: the cloud rewrites the UPN to the tenant's onmicrosoft.com domain.",
        "Add and verify the domain in the tenant, or change the suffix to a verified one.");
    UPN_FEDERATION_CHARACTER = ("upn-federation-character", Info, "userPrincipalName", "character",
        "The UPN is valid in the cloud but holds a character the AD FS guide does not allow for federated identities (only letters, digits, . - _); a warning when its domain is federated.",
        "Remove the characters before federating the domain.");
    UPN_DUPLICATE = ("upn-duplicate", Warning, "userPrincipalName", "duplicate",
        "Another object (in any source or in the tenant) has the same userPrincipalName, compared case-insensitively: the cloud sets one aside with a made-up onmicrosoft.com UPN.",
        "None suggested: decide which object keeps the name.");
    ADDRESS_CONFLICT = ("address-conflict", Warning, "userPrincipalName, mail, proxyAddresses", "duplicate",
        "An address of this object (its UPN, mail or an smtp proxy address) is held by another object in another attribute: the cloud treats UPNs and SMTP addresses as one namespace of unique values and sets one aside.",
        "None suggested: decide which object keeps the address.");
    MAIL_TOO_LONG = ("mail-too-long", Error, "mail", "length",
        "The mail value is longer than 256 characters.",
        "None suggested.");
    MAIL_INVALID_CHARACTER = ("mail-invalid-character", Error, "mail", "character",
        "The mail value contains whitespace or one of < > ( ) ; , [ ] \\ \".",
        "Remove the characters.");
    MAIL_DIACRITIC = ("mail-diacritic", Error, "mail", "character",
        "The mail value contains a non-ASCII character.",
        "Transliterate to ASCII.");
    MAIL_FORMAT = ("mail-format", Error, "mail", "format",
        "The mail value is not an SMTP address (name@domain: a dot-atom before the @, a domain name after it).",
        "None suggested.");
    MAIL_DUPLICATE = ("mail-duplicate", Warning, "mail", "duplicate",
        "Another object has the same mail value (case-insensitive): the cloud keeps one.",
        "None suggested: decide which object keeps the address.");
    MAILNICKNAME_TOO_LONG = ("mailnickname-too-long", Error, "mailNickname", "length",
        "The mailNickname is longer than 64 characters.",
        "Truncate to 64 characters.");
    MAILNICKNAME_LEADING_PERIOD = ("mailnickname-leading-period", Error, "mailNickname", "character",
        "The mailNickname starts with a period.",
        "Remove the leading periods.");
    MAILNICKNAME_DUPLICATE = ("mailnickname-duplicate", Warning, "mailNickname", "duplicate",
        "Another object has the same mailNickname (case-insensitive).",
        "None suggested.");
    PROXY_TOO_LONG = ("proxy-too-long", Error, "proxyAddresses", "length",
        "A proxyAddresses value is longer than 256 characters.",
        "None suggested.");
    PROXY_INVALID_CHARACTER = ("proxy-invalid-character", Error, "proxyAddresses", "character",
        "A proxyAddresses value contains a character its address type forbids: for smtp whitespace and < > ( ) ; , [ ] \"; for x400/x500 control characters and [ ] \"; for other types whitespace and < > ( ) , [ ] \". Spaces, parentheses and apostrophes are valid in X.500 names (IdFix flags the apostrophe; it is not an error).",
        "Remove the characters.");
    PROXY_DIACRITIC = ("proxy-diacritic", Error, "proxyAddresses", "character",
        "A proxyAddresses value contains a non-ASCII character (Microsoft's table: no letters with diacritics, whatever the address type).",
        "Transliterate to ASCII.");
    PROXY_FORMAT = ("proxy-format", Error, "proxyAddresses", "format",
        "A proxyAddresses value is not type:address (no prefix, an empty address, a colon right after the prefix) or its smtp address is not an SMTP address (a dot-atom before the @, a domain name after it).",
        "None suggested.");
    PROXY_MULTIPLE_PRIMARY = ("proxy-multiple-primary", Error, "proxyAddresses", "format",
        "The object has more than one primary SMTP address (SMTP: in upper case).",
        "None suggested: keep one SMTP: and make the others smtp:.");
    PROXY_DUPLICATE = ("proxy-duplicate", Warning, "proxyAddresses", "duplicate",
        "Another object has the same proxy address (case-insensitive): the cloud drops it from one of them.",
        "Remove it from every holder but one: the keeper is the holder for which it is primary, else its only address (no other SMTP address, mail or UPN), else its mail, else the oldest; never removed where it is primary or the only address.");
    ADDRESS_DOMAIN_NON_ROUTABLE = ("address-domain-non-routable", Warning, "mail, proxyAddresses", "topleveldomain",
        "An SMTP address (mail or an smtp proxy address) is in a domain that does not route on the internet (.local, .int, an unknown top-level domain, an IP address): Exchange Online drops it. Contacts and mail users are exempt (their addresses are another organization's).",
        "None suggested: use an address in a routable, verified domain, or remove it.");
    ADDRESS_DOMAIN_UNVERIFIED = ("address-domain-unverified", Warning, "mail, proxyAddresses", "tenant",
        "An SMTP address (mail or an smtp proxy address) is in a domain that is not verified in the tenant: Exchange Online drops it. Contacts and mail users are exempt.",
        "Verify the domain, or remove the address.");
    DISPLAYNAME_BLANK = ("displayname-blank", Error, "displayName", "blank",
        "The displayName is present but blank.",
        "Set it to the common name (cn).");
    DISPLAYNAME_TOO_LONG = ("displayname-too-long", Error, "displayName", "length",
        "The displayName is longer than 256 characters.",
        "Truncate to 256 characters.");
    GIVENNAME_TOO_LONG = ("givenname-too-long", Error, "givenName", "length",
        "The givenName is longer than 64 characters.",
        "Truncate to 64 characters.");
    SAMACCOUNTNAME_TOO_LONG = ("samaccountname-too-long", Error, "sAMAccountName", "length",
        "A user's sAMAccountName is longer than 20 characters (256 for other objects).",
        "None suggested: renaming the logon name is a decision.");
    SAMACCOUNTNAME_INVALID_CHARACTER = ("samaccountname-invalid-character", Error, "sAMAccountName", "character",
        "The sAMAccountName contains one of [ ] \\ \" | , / : < > + = ; ? * '.",
        "Remove the characters.");
    SAMACCOUNTNAME_DUPLICATE = ("samaccountname-duplicate", Warning, "sAMAccountName", "duplicate",
        "Two objects without a userPrincipalName share a sAMAccountName (case-insensitive): their made-up cloud names collide.",
        "None suggested: give the objects a userPrincipalName.");
    TARGETADDRESS_TOO_LONG = ("targetaddress-too-long", Error, "targetAddress", "length",
        "The targetAddress is longer than 256 characters.",
        "None suggested.");
    TARGETADDRESS_INVALID_CHARACTER = ("targetaddress-invalid-character", Error, "targetAddress", "character",
        "The targetAddress contains one of \\ < > ( ) ; , [ ] \".",
        "Remove the characters.");
    NON_ASCII = ("non-ascii", Warning, "mailNickname, sAMAccountName, targetAddress", "character",
        "A non-ASCII character in an identifier attribute: it does not synchronize as written.",
        "Transliterate to ASCII.");
    ANCHOR_MISSING = ("anchor-missing", Error, "objectGUID", "anchor",
        "The object has no usable anchor (objectGUID missing or not 16 bytes): it cannot be given an ImmutableID and will not synchronize.",
        "None suggested: export the object with its objectGUID.");
    OBJECT_UNREADABLE = ("object-unreadable", Error, "-", "format",
        "The object cannot be read as the source holds it (a DN or value that is not valid UTF-8, an integer that is not one, an incomplete ranged value): it will not synchronize.",
        "None suggested: fix the value the message names.");
    ANCHOR_DUPLICATE = ("anchor-duplicate", Error, "objectGUID", "anchor",
        "Two objects in the sources have the same ImmutableID: only one can be joined to a cloud object.",
        "None suggested: the same object is read twice, or a copy kept its objectGUID.");
    MATCH_SOFT = ("match-soft", Info, "userPrincipalName, proxyAddresses", "tenant",
        "The object will soft-match an existing cloud object (same UPN or primary SMTP address) and take it over: check that it is the same person.",
        "None: review the pair.");
    MATCH_INVALID_SOFT_MATCH = ("match-invalid-soft-match", Error, "userPrincipalName, proxyAddresses", "tenant",
        "The object would soft-match a cloud object that already has another ImmutableID (InvalidSoftMatch): its export fails.",
        "None suggested: clear the cloud object's onPremisesImmutableId, or fix the duplicate value.");
    MATCH_ADMIN_ROLE = ("match-admin-role", Error, "userPrincipalName, proxyAddresses", "tenant",
        "The object's UPN or primary SMTP equals a cloud user who holds an admin role: such users are never soft-matched, so a second account would be created and collide.",
        "None suggested: remove the role during the first sync, or hard-match by setting onPremisesImmutableId.");
    MATCH_OBJECT_TYPE_MISMATCH = ("match-object-type-mismatch", Error, "objectClass", "tenant",
        "The object would match a cloud object of another type (ObjectTypeMismatch): its export fails.",
        "None suggested.");
    MATCH_AMBIGUOUS = ("match-ambiguous", Error, "userPrincipalName, mail, proxyAddresses", "tenant",
        "The object's UPN and primary SMTP address point at two different cloud objects, or several on-premises objects would soft-match the same cloud object.",
        "None suggested: decide which cloud object belongs to which on-premises object.");
    FEDERATION_MULTIPLE_DOMAINS = ("federation-multiple-domains", Info, "userPrincipalName", "federation",
        "Users are spread over several top-level (registrable) UPN domains: federating them with one AD FS needs multi-domain support (-SupportMultipleDomain).",
        "Plan multi-domain federation.");
    FEDERATION_SUBDOMAIN = ("federation-subdomain", Info, "userPrincipalName", "federation",
        "A UPN suffix is a sub-domain of another domain in use: it is covered by its registered parent only when the parent is federated first.",
        "Federate the parent domain first.");
    FEDERATION_SUBDOMAINS_AND_MULTIPLE_DOMAINS = ("federation-subdomains-and-multiple-domains", Info, "userPrincipalName", "federation",
        "Sub-domains and several top-level domains together: the multi-domain switch cannot be used for the sub-domains (the issuer claim rule must be changed); a warning when the tenant has a federated domain.",
        "Adjust the AD FS issuer claim rule before federating the sub-domains.");
    FEDERATION_MULTIPLE_FORESTS = ("federation-multiple-forests", Info, "-", "federation",
        "The sources hold several AD domain trees (several forests, or trees of one forest): federated identities from several forests are not supported by one federation setup; a warning when the tenant has a federated domain.",
        "Use managed authentication, or one federation per forest.");
    MAIL_SENDER_INVALID = ("mail-sender-invalid", Error, "mail.sender", "notification",
        "The notification sender is not an SMTP address.",
        "Set [mail] sender to name@verified-domain.");
    MAIL_SENDER_UNVERIFIED = ("mail-sender-unverified", Error, "mail.sender", "notification",
        "The notification sender's domain is not a verified domain of the tenant: Exchange Online refuses to relay it.",
        "Use a sender in a verified domain.");
    MAIL_SENDER_RELAY_MISMATCH = ("mail-sender-relay-mismatch", Error, "mail.sender", "notification",
        "The notification sender's domain differs from the relay account's UPN domain: Office 365 answers 'Client does not have permissions to send as this sender'.",
        "Use a sender in the relay account's UPN domain.");
    MAIL_RELAY_INSECURE = ("mail-relay-insecure", Warning, "mail.smtp", "notification",
        "The SMTP relay is not configured as Office 365 expects: port 587 with STARTTLS and an authenticated account.",
        "Use port 587, security = \"starttls\" and a username.");
}

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ids_are_unique_kebab_case_and_every_rule_says_what_and_how() {
        let mut seen = BTreeSet::new();
        for r in ALL {
            assert!(seen.insert(r.id), "duplicate id {}", r.id);
            assert!(r.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{}", r.id);
            assert!(r.summary.ends_with('.') && r.fix.ends_with('.'), "{}", r.id);
            assert!(!r.attribute.is_empty() && !r.idfix.is_empty(), "{}", r.id);
        }
        assert_eq!(rule("upn-duplicate").map(|r| r.severity), Some(Severity::Warning));
        assert!(rule("no-such-rule").is_none());
    }
}
