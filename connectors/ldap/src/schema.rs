//! What the connector reads from each flavor: object types, default attributes, syntaxes.

use syncctl_core::AttrSyntax;

use crate::config::Flavor;

/// The object types a flavor knows, in its own vocabulary.
pub fn object_types(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Ad => &["user", "group", "contact"],
        Flavor::Openldap => &["inetOrgPerson", "groupOfNames"],
    }
}

/// The identity attributes read when the config has no inclusion list (Entra Connect's
/// user, group and contact attributes that matter to a sync, plus what the connector needs).
pub fn default_attributes(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Ad => &[
            "objectClass", "objectGUID", "cn", "sAMAccountName", "userPrincipalName", "displayName", "givenName",
            "sn", "initials", "mail", "mailNickname", "proxyAddresses", "targetAddress", "department", "title",
            "company", "manager", "telephoneNumber", "mobile", "employeeID", "employeeNumber", "physicalDeliveryOfficeName",
            "streetAddress", "l", "st", "postalCode", "c", "co", "description", "userAccountControl", "accountExpires",
            "groupType", "member", "mS-DS-ConsistencyGuid", "objectSid", "isCriticalSystemObject",
            "whenCreated",
        ],
        Flavor::Openldap => &[
            "objectClass", "entryUUID", "cn", "uid", "displayName", "givenName", "sn", "initials", "mail", "title",
            "departmentNumber", "o", "ou", "manager", "telephoneNumber", "mobile", "employeeNumber", "employeeType",
            "description", "member", "createTimestamp",
        ],
    }
}

/// Attributes the connector always reads, whatever the inclusion list says.
pub fn required_attributes(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Ad => &["objectClass", "objectGUID", "isCriticalSystemObject", "isDeleted"],
        Flavor::Openldap => &["objectClass", "entryUUID"],
    }
}

/// Attributes that exist only for the connector's bookkeeping and are not stored. Back-links
/// such as `memberOf` are never imported: they change without the object's own change stamp
/// moving, so a delta could not follow them (the groups' `member` carries the same fact).
pub fn bookkeeping_attributes(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Ad => &["isDeleted", "uSNChanged", "whenChanged", "memberOf", "name"],
        Flavor::Openldap => &["modifyTimestamp", "entryCSN", "memberOf"],
    }
}

/// The syntax an attribute's values are read with.
pub fn syntax_of(name: &str) -> AttrSyntax {
    const BINARY: &[&str] =
        &["objectguid", "objectsid", "msds-consistencyguid", "jpegphoto", "thumbnailphoto", "usercertificate", "sidhistory"];
    const INTEGER: &[&str] =
        &["usnchanged", "usncreated", "useraccountcontrol", "grouptype", "accountexpires", "samaccounttype", "pwdlastset",
          "lastlogontimestamp", "badpwdcount", "primarygroupid", "admincount", "instancetype", "systemflags"];
    const BOOLEAN: &[&str] = &["iscriticalsystemobject", "isdeleted", "showinadvancedviewonly"];
    const REFERENCE: &[&str] = &["member", "memberof", "manager", "directreports", "managedby", "seealso", "owner"];
    const TIMESTAMP: &[&str] = &["whencreated", "whenchanged", "createtimestamp", "modifytimestamp"];
    let lower = name.to_ascii_lowercase();
    let l = lower.as_str();
    if BINARY.contains(&l) {
        AttrSyntax::Binary
    } else if INTEGER.contains(&l) {
        AttrSyntax::Integer
    } else if BOOLEAN.contains(&l) {
        AttrSyntax::Boolean
    } else if REFERENCE.contains(&l) {
        AttrSyntax::Reference
    } else if TIMESTAMP.contains(&l) {
        AttrSyntax::Timestamp
    } else {
        AttrSyntax::String
    }
}
