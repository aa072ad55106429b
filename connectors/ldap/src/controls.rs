//! The LDAP controls the connector sends and reads: paged results, DirSync, show-deleted and
//! RFC 4533 content synchronization. Response values are decoded here without panics (the
//! decoders in `ldap3` panic on malformed values).

use ldap3::asn1::{
    ASNTag, Boolean, Integer, OctetString, PL, Sequence, StructureTag, Tag, TagClass, parse_tag, write,
};
use ldap3::controls::{Control, RawControl};

/// Paged results (RFC 2696).
pub const PAGED_OID: &str = "1.2.840.113556.1.4.319";
/// AD DirSync.
pub const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";
/// AD show deleted objects.
pub const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";
/// RFC 4533 sync request.
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// RFC 4533 sync state (on entries).
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// RFC 4533 sync done (on the search result).
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";

/// DirSync flag: linked-value changes come as increments (`member;range=1-1` / `;range=0-0`).
pub const DIRSYNC_INCREMENTAL_VALUES: i64 = 0x8000_0000;

fn encode(tag: Tag) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    // Encoding into a growable buffer cannot fail.
    let _ = write::encode_into(&mut buf, tag.into_structure());
    buf.to_vec()
}

fn int(v: i64) -> Tag {
    Tag::Integer(Integer { inner: v, ..Default::default() })
}
fn octets(v: &[u8]) -> Tag {
    Tag::OctetString(OctetString { inner: v.to_vec(), ..Default::default() })
}

/// A paged-results request.
pub fn paged(size: i32, cookie: &[u8]) -> RawControl {
    RawControl {
        ctype: PAGED_OID.into(),
        crit: false,
        val: Some(encode(Tag::Sequence(Sequence {
            inner: vec![int(i64::from(size)), octets(cookie)],
            ..Default::default()
        }))),
    }
}

/// A DirSync request (always critical, as AD requires).
pub fn dirsync(flags: i64, max_bytes: i64, cookie: &[u8]) -> RawControl {
    // The flags are a 32-bit field; 0x80000000 goes on the wire as the signed value.
    let flags = i64::from(flags as u32 as i32);
    RawControl {
        ctype: DIRSYNC_OID.into(),
        crit: true,
        val: Some(encode(Tag::Sequence(Sequence {
            inner: vec![int(flags), int(max_bytes), octets(cookie)],
            ..Default::default()
        }))),
    }
}

/// The show-deleted control (no value).
pub fn show_deleted() -> RawControl {
    RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None }
}

/// An RFC 4533 refreshOnly sync request.
pub fn sync_refresh_only(cookie: Option<&[u8]>) -> RawControl {
    let mut inner = vec![Tag::Enumerated(ldap3::asn1::Enumerated { inner: 1, ..Default::default() })];
    if let Some(c) = cookie {
        inner.push(octets(c));
    }
    inner.push(Tag::Boolean(Boolean { inner: false, ..Default::default() }));
    RawControl {
        ctype: SYNC_REQUEST_OID.into(),
        crit: true,
        val: Some(encode(Tag::Sequence(Sequence { inner, ..Default::default() }))),
    }
}

fn parse(val: &[u8]) -> Option<StructureTag> {
    parse_tag(val).ok().map(|(_, t)| t)
}

fn children(t: &StructureTag) -> Option<&[StructureTag]> {
    match &t.payload {
        PL::C(c) => Some(c),
        PL::P(_) => None,
    }
}

fn prim(t: &StructureTag) -> Option<&[u8]> {
    match &t.payload {
        PL::P(p) => Some(p),
        PL::C(_) => None,
    }
}

fn int_value(bytes: &[u8]) -> i64 {
    // Two's complement, big-endian.
    let mut v: i64 = if bytes.first().is_some_and(|b| b & 0x80 != 0) { -1 } else { 0 };
    for b in bytes.iter().take(8) {
        v = (v << 8) | i64::from(*b);
    }
    v
}

fn find<'a>(ctrls: &'a [Control], oid: &str) -> Option<&'a [u8]> {
    ctrls.iter().find(|c| c.1.ctype == oid).and_then(|c| c.1.val.as_deref())
}

/// The cookie of a paged-results response (empty when the search is complete).
pub fn paged_cookie(ctrls: &[Control]) -> Option<Vec<u8>> {
    let t = parse(find(ctrls, PAGED_OID)?)?;
    let c = children(&t)?;
    c.get(1).and_then(prim).map(<[u8]>::to_vec)
}

/// A DirSync response: (more results pending, cookie).
pub fn dirsync_response(ctrls: &[Control]) -> Option<(bool, Vec<u8>)> {
    let t = parse(find(ctrls, DIRSYNC_OID)?)?;
    let c = children(&t)?;
    let more = c.first().and_then(prim).map(int_value)? != 0;
    let cookie = c.get(2).and_then(prim)?.to_vec();
    Some((more, cookie))
}

/// RFC 4533 entry states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Unchanged since the cookie (present phase).
    Present,
    /// Added.
    Add,
    /// Modified.
    Modify,
    /// Deleted.
    Delete,
}

/// The sync state control on an entry: (state, entryUUID bytes).
pub fn sync_state(ctrls: &[Control]) -> Option<(SyncState, Vec<u8>)> {
    let t = parse(find(ctrls, SYNC_STATE_OID)?)?;
    let c = children(&t)?;
    let state = match c.first().and_then(prim).map(int_value)? {
        0 => SyncState::Present,
        1 => SyncState::Add,
        2 => SyncState::Modify,
        3 => SyncState::Delete,
        _ => return None,
    };
    Some((state, c.get(1).and_then(prim)?.to_vec()))
}

/// The sync done control: (cookie, refreshDeletes).
pub fn sync_done(ctrls: &[Control]) -> Option<(Option<Vec<u8>>, bool)> {
    let val = find(ctrls, SYNC_DONE_OID);
    let Some(val) = val else {
        // RFC 4533 lets a valueless control mean refreshDeletes FALSE (everything not listed is
        // gone); read that conservatively as TRUE, so that an odd server cannot empty the
        // connector space.
        return ctrls.iter().any(|c| c.1.ctype == SYNC_DONE_OID).then_some((None, true));
    };
    let t = parse(val)?;
    let mut cookie = None;
    let mut deletes = false;
    for item in children(&t).unwrap_or(&[]) {
        match (item.class, item.id) {
            (TagClass::Universal, 4) => cookie = prim(item).map(<[u8]>::to_vec),
            (TagClass::Universal, 1) => {
                deletes = prim(item).is_some_and(|b| b.first().is_some_and(|x| *x != 0))
            }
            _ => {}
        }
    }
    Some((cookie, deletes))
}

/// An RFC 4533 Sync Info intermediate message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncInfo {
    /// A new cookie.
    NewCookie(Vec<u8>),
    /// End of a refresh phase.
    RefreshDone { cookie: Option<Vec<u8>> },
    /// A set of entryUUIDs: deleted ones when `refresh_deletes`, else present ones.
    IdSet { cookie: Option<Vec<u8>>, refresh_deletes: bool, uuids: Vec<Vec<u8>> },
}

/// Decodes an IntermediateResponse carrying Sync Info; `None` for anything else.
pub fn sync_info(tag: &StructureTag) -> Option<SyncInfo> {
    let parts = children(tag)?;
    let value = parts.iter().find(|p| p.class == TagClass::Context && p.id == 1).and_then(prim)?;
    let info = parse(value)?;
    let optional_cookie = |items: &[StructureTag]| {
        items.iter().find(|i| i.class == TagClass::Universal && i.id == 4).and_then(prim).map(<[u8]>::to_vec)
    };
    match (info.class, info.id) {
        (TagClass::Context, 0) => prim(&info).map(|c| SyncInfo::NewCookie(c.to_vec())),
        (TagClass::Context, 1) | (TagClass::Context, 2) => {
            Some(SyncInfo::RefreshDone { cookie: children(&info).and_then(&optional_cookie) })
        }
        (TagClass::Context, 3) => {
            let items = children(&info)?;
            let refresh_deletes = items
                .iter()
                .find(|i| i.class == TagClass::Universal && i.id == 1)
                .and_then(prim)
                .is_some_and(|b| b.first().is_some_and(|x| *x != 0));
            let uuids = items
                .iter()
                .find(|i| i.class == TagClass::Universal && i.id == 17)
                .and_then(children)
                .map(|set| set.iter().filter_map(prim).map(<[u8]>::to_vec).collect())
                .unwrap_or_default();
            Some(SyncInfo::IdSet { cookie: optional_cookie(items), refresh_deletes, uuids })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrl(oid: &str, val: Vec<u8>) -> Control {
        Control(None, RawControl { ctype: oid.into(), crit: false, val: Some(val) })
    }

    #[test]
    fn dirsync_request_puts_the_high_flag_on_the_wire_as_a_negative_int32() {
        let c = dirsync(DIRSYNC_INCREMENTAL_VALUES, 0, b"ck");
        let t = parse(c.val.as_deref().unwrap()).unwrap();
        let kids = children(&t).unwrap();
        assert_eq!(int_value(prim(&kids[0]).unwrap()), -2147483648);
        assert_eq!(prim(&kids[2]).unwrap(), b"ck");
        assert!(c.crit);
    }

    #[test]
    fn responses_round_trip_and_garbage_is_none() {
        let pr = paged(2, b"abc");
        assert_eq!(paged_cookie(&[ctrl(PAGED_OID, pr.val.unwrap())]), Some(b"abc".to_vec()));
        let ds = dirsync(1, 0, b"cookie");
        let (more, cookie) = dirsync_response(&[ctrl(DIRSYNC_OID, ds.val.unwrap())]).unwrap();
        assert!(more);
        assert_eq!(cookie, b"cookie");
        assert_eq!(dirsync_response(&[ctrl(DIRSYNC_OID, vec![0x30, 0x05, 0x02])]), None);
        assert_eq!(paged_cookie(&[ctrl(PAGED_OID, vec![0xff])]), None);
        assert_eq!(sync_state(&[ctrl(SYNC_STATE_OID, vec![])]), None);
    }

    #[test]
    fn int_values_are_twos_complement() {
        assert_eq!(int_value(&[0x01, 0x00]), 256);
        assert_eq!(int_value(&[0xff]), -1);
        assert_eq!(int_value(&[0x80, 0, 0, 0]), -2147483648);
        assert_eq!(int_value(&[]), 0);
    }
}
