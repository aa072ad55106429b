//! Set membership: whether a metaverse object meets a set's criteria at a given time.
//!
//! The criteria are CEL over the object's metaverse attributes (bound as for sync-rule
//! expressions on metaverse objects), plus two names for time-based sets: `now` (milliseconds
//! since the Unix epoch) and `nowFileTime` (100-nanosecond intervals since 1601-01-01, the unit
//! of Active Directory's `accountExpires` and `pwdLastSet`). The time is a parameter, never
//! read here.

use syncctl_core::AttrValues;
use syncctl_core::expr::ExprError;
use syncctl_core::rules::ObjectView;
use syncctl_store::MvObject;

use crate::config::Set;

/// The binding of the evaluation time in milliseconds since the Unix epoch.
pub const NOW: &str = "now";
/// The binding of the evaluation time in Windows FILETIME units.
pub const NOW_FILETIME: &str = "nowFileTime";

/// Milliseconds between 1601-01-01 and 1970-01-01.
const FILETIME_EPOCH_OFFSET_MS: i64 = 11_644_473_600_000;

/// A metaverse object with the time bindings, as set criteria see it.
struct SetView<'a> {
    object: &'a MvObject,
    now: AttrValues,
    now_filetime: AttrValues,
}

impl ObjectView for SetView<'_> {
    fn object_type(&self) -> &str {
        &self.object.object_type
    }
    fn dn(&self) -> Option<&str> {
        None
    }
    fn attribute(&self, name: &str) -> Option<&AttrValues> {
        if name.eq_ignore_ascii_case(NOW) {
            Some(&self.now)
        } else if name.eq_ignore_ascii_case(NOW_FILETIME) {
            Some(&self.now_filetime)
        } else {
            self.object.attributes.get(name)
        }
    }
}

/// `now_ms` in FILETIME units (saturating).
pub fn filetime(now_ms: i64) -> i64 {
    now_ms.saturating_add(FILETIME_EPOCH_OFFSET_MS).saturating_mul(10_000)
}

/// Whether `object` is a member of `set` at `now_ms`. An object of another type is not.
pub fn is_member(set: &Set, object: &MvObject, now_ms: i64) -> Result<bool, ExprError> {
    if let Some(t) = &set.object_type
        && !t.eq_ignore_ascii_case(&object.object_type)
    {
        return Ok(false);
    }
    let view = SetView {
        object,
        now: AttrValues::Integer(vec![now_ms]),
        now_filetime: AttrValues::Integer(vec![filetime(now_ms)]),
    };
    set.criteria.evaluate_bool(&view)
}

#[cfg(test)]
mod tests {
    use syncctl_core::Attributes;
    use syncctl_core::expr::Expr;

    use super::*;

    fn set(criteria: &str, object_type: Option<&str>) -> Set {
        Set {
            name: "s".into(),
            description: String::new(),
            object_type: object_type.map(Into::into),
            criteria: Expr::compile(criteria).unwrap(),
            time_based: false,
        }
    }

    fn person(attrs: &[(&str, AttrValues)]) -> MvObject {
        let mut attributes = Attributes::new();
        for (k, v) in attrs {
            attributes.insert(*k, v.clone());
        }
        MvObject {
            id: 1,
            object_type: "person".into(),
            attributes,
            provenance: Default::default(),
            created_at: 0,
            changed_at: 0,
        }
    }

    fn text(v: &str) -> AttrValues {
        AttrValues::String(vec![v.into()])
    }

    #[test]
    fn criteria_over_attributes_and_object_type() {
        let sales = set(r#"department == "Sales""#, Some("person"));
        let alice = person(&[("department", text("Sales"))]);
        let bob = person(&[("Department", text("Engineering"))]);
        assert!(is_member(&sales, &alice, 0).unwrap());
        assert!(!is_member(&sales, &bob, 0).unwrap());
        assert!(
            !is_member(&sales, &person(&[]), 0).unwrap(),
            "absent is null, and null == \"Sales\" is false"
        );
        let mut group = alice.clone();
        group.object_type = "group".into();
        assert!(!is_member(&sales, &group, 0).unwrap());
        // Case-insensitive attribute names, as everywhere in CEL bindings.
        assert!(is_member(&set(r#"DEPARTMENT == "Engineering""#, None), &bob, 0).unwrap());
        // A criterion that does not give a bool is an error, not a guess.
        assert!(is_member(&set("department", None), &alice, 0).is_err());
    }

    #[test]
    fn time_based_criteria_see_the_time_given() {
        // 2026-01-01T00:00:00Z in ms, and an account expiring 10 days later in FILETIME.
        let now = 1_767_225_600_000_i64;
        let day_ft = 864_000_000_000_i64;
        // 2026-01-01 in FILETIME, computed independently: (days from 1601 to 1970 = 134774) ...
        let expected_ft = (134_774_i64 * 86_400 + 1_767_225_600) * 10_000_000;
        assert_eq!(filetime(now), expected_ft);
        let expiring = set(
            "isPresent(accountExpires) && accountExpires > nowFileTime && accountExpires - nowFileTime < 14 * 864000000000",
            None,
        );
        let soon = person(&[("accountExpires", AttrValues::Integer(vec![expected_ft + 10 * day_ft]))]);
        let never = person(&[("accountExpires", AttrValues::Integer(vec![i64::MAX]))]);
        let past = person(&[("accountExpires", AttrValues::Integer(vec![expected_ft - day_ft]))]);
        assert!(is_member(&expiring, &soon, now).unwrap());
        assert!(!is_member(&expiring, &never, now).unwrap());
        assert!(!is_member(&expiring, &past, now).unwrap());
        // Five days earlier the same account is 15 days away: not yet in the set.
        assert!(!is_member(&expiring, &soon, now - 5 * 86_400_000).unwrap());
        // `now` in milliseconds.
        assert!(is_member(&set("now == 1767225600000", None), &soon, now).unwrap());
    }
}
