//! Writing LDIF (RFC 2849) lines: `attr: value` or `attr:: base64`, folded.
//!
//! These helpers append to a `String`; they do no I/O. Whatever writes LDIF for people or for
//! `ldapmodify` (remediation and undo files, fixtures) goes through them, so that every value
//! that is not an RFC 2849 SAFE-STRING is base64-encoded and no line is longer than the fold
//! width. The LDIF connector's parser reads back exactly what they write.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The fold width: no written line is longer than this many characters (before the line end).
pub const LINE_WIDTH: usize = 76;

/// True when `value` must be written base64-encoded (`attr:: ...`): it is not an RFC 2849
/// SAFE-STRING (it starts with a space, `:` or `<`, or holds NUL, CR, LF or a byte above 127),
/// or it ends with a space (which RFC 2849 says should be encoded, so that no tool trims it).
/// The empty value is safe (`attr:`).
pub fn needs_base64(value: &[u8]) -> bool {
    let unsafe_init = matches!(value.first(), Some(b' ' | b':' | b'<'));
    let unsafe_char = value.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r') || b > 0x7f);
    unsafe_init || unsafe_char || value.last() == Some(&b' ')
}

/// Appends `attr: value` (or `attr:: base64` when [`needs_base64`]) and a line feed, folded at
/// [`LINE_WIDTH`] columns (continuation lines start with one space). An empty value is written
/// `attr:`.
pub fn push_attr_value(out: &mut String, attr: &str, value: &[u8]) {
    push_attr_value_wrapped(out, attr, value, LINE_WIDTH);
}

/// [`push_attr_value`] with another fold width; `0` writes one line whatever its length (as
/// `ldapsearch -o ldif-wrap=no` does). Widths below 2 fold at 2.
pub fn push_attr_value_wrapped(out: &mut String, attr: &str, value: &[u8], width: usize) {
    let mut line = String::with_capacity(attr.len() + 3 + value.len() * 4 / 3);
    line.push_str(attr);
    push_value(&mut line, value);
    push_folded(out, &line, width);
}

/// Appends `dn: DN` (or `dn:: base64` when [`needs_base64`]) and a line feed, folded at
/// [`LINE_WIDTH`] columns. The empty DN is written `dn:`.
pub fn push_dn(out: &mut String, dn: &str) {
    push_dn_wrapped(out, dn, LINE_WIDTH);
}

/// [`push_dn`] with another fold width (see [`push_attr_value_wrapped`]).
pub fn push_dn_wrapped(out: &mut String, dn: &str, width: usize) {
    push_attr_value_wrapped(out, "dn", dn.as_bytes(), width);
}

fn push_value(line: &mut String, value: &[u8]) {
    if value.is_empty() {
        line.push(':');
    } else if needs_base64(value) {
        line.push_str(":: ");
        STANDARD.encode_string(value, line);
    } else {
        line.push_str(": ");
        // Safe values are ASCII (every byte above 127 is encoded), so this never replaces
        // anything.
        line.push_str(&String::from_utf8_lossy(value));
    }
}

/// Appends `line` and a line feed, folded so that no physical line holds more than `width`
/// characters. Folds fall between characters, never inside one.
fn push_folded(out: &mut String, line: &str, width: usize) {
    if width == 0 || line.len() <= width {
        out.push_str(line);
        out.push('\n');
        return;
    }
    let width = width.max(2);
    // The first physical line holds `width` bytes; each continuation a space and `width - 1`.
    let mut room = width;
    let mut used = 0;
    for ch in line.chars() {
        let n = ch.len_utf8();
        if used + n > room && used > 0 {
            out.push_str("\n ");
            room = width - 1;
            used = 0;
        }
        out.push(ch);
        used += n;
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(attr: &str, value: &[u8]) -> String {
        let mut out = String::new();
        push_attr_value(&mut out, attr, value);
        out
    }

    #[test]
    fn safe_strings_are_written_as_they_are() {
        assert_eq!(attr("cn", b"Alice Anders"), "cn: Alice Anders\n");
        assert_eq!(attr("userPrincipalName", b"dave,x@corp"), "userPrincipalName: dave,x@corp\n");
        // A colon or `<` inside the value, a space inside it, `#` at its start are all safe.
        assert_eq!(attr("description", b"a:b <c> #d"), "description: a:b <c> #d\n");
        assert_eq!(attr("description", b"#1"), "description: #1\n");
        assert_eq!(attr("member;range=0-1499", b"CN=x"), "member;range=0-1499: CN=x\n");
        assert_eq!(attr("description", b"\x7f\x01\t"), "description: \x7f\x01\t\n");
    }

    #[test]
    fn the_empty_value_is_an_empty_line_value() {
        assert_eq!(attr("description", b""), "description:\n");
        let mut out = String::new();
        push_dn(&mut out, "");
        assert_eq!(out, "dn:\n");
    }

    #[test]
    fn unsafe_values_are_base64() {
        for (value, encoded) in [
            (&b" leading"[..], "IGxlYWRpbmc="),
            (b":colon", "OmNvbG9u"),
            (b"<angle", "PGFuZ2xl"),
            (b"trailing ", "dHJhaWxpbmcg"),
            (b"a\nb", "YQpi"),
            (b"a\rb", "YQ1i"),
            (b"a\0b", "YQBi"),
            ("fränk@corp.example.com".as_bytes(), "ZnLDpG5rQGNvcnAuZXhhbXBsZS5jb20="),
            (b"\xff\xfe", "//4="),
            (b" ", "IA=="),
        ] {
            assert!(needs_base64(value), "{value:?}");
            assert_eq!(attr("x", value), format!("x:: {encoded}\n"), "{value:?}");
        }
        assert!(!needs_base64(b""));
        assert!(!needs_base64(b"a b"));
    }

    #[test]
    fn dns_follow_the_same_rule() {
        let mut out = String::new();
        push_dn(&mut out, "CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com");
        push_dn(&mut out, "CN=Fränk,DC=corp");
        push_dn(&mut out, " CN=lead");
        assert_eq!(
            out,
            "dn: CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com\ndn:: Q049RnLDpG5rLERDPWNvcnA=\ndn:: IENOPWxlYWQ=\n"
        );
    }

    #[test]
    fn long_lines_fold_at_76_columns_with_one_leading_space() {
        let value = "x".repeat(200);
        let out = attr("description", value.as_bytes());
        let lines: Vec<&str> = out.trim_end_matches('\n').split('\n').collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], format!("description: {}", "x".repeat(63)));
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines[1], format!(" {}", "x".repeat(75)));
        assert_eq!(lines[2], format!(" {}", "x".repeat(200 - 63 - 75)));
        // Unfolding (drop each line end and the space after it) gives the line back.
        assert_eq!(out.replace("\n ", ""), format!("description: {value}\n"));

        // Exactly 76 characters: no fold.
        let out = attr("description", "y".repeat(63).as_bytes());
        assert_eq!(out.len(), 77);
        assert!(!out.trim_end().contains('\n'));

        // Base64 folds the same way.
        let out = attr("jpegPhoto", &[0xffu8; 120]);
        assert!(out.starts_with("jpegPhoto:: ////"));
        assert!(out.split('\n').all(|l| l.len() <= 76), "{out}");
        assert!(out.split('\n').skip(1).filter(|l| !l.is_empty()).all(|l| l.starts_with(' ')));
    }

    #[test]
    fn other_widths_and_no_folding() {
        let mut out = String::new();
        push_attr_value_wrapped(&mut out, "cn", b"abcdefgh", 4);
        assert_eq!(out, "cn: \n abc\n def\n gh\n");
        let mut out = String::new();
        push_attr_value_wrapped(&mut out, "cn", "x".repeat(500).as_bytes(), 0);
        assert_eq!(out, format!("cn: {}\n", "x".repeat(500)));
        // Width 1 behaves as 2: every continuation carries one character.
        let mut out = String::new();
        push_attr_value_wrapped(&mut out, "cn", b"ab", 1);
        assert_eq!(out, "cn\n :\n  \n a\n b\n");
    }

    #[test]
    fn folds_never_split_a_character() {
        // Attribute descriptions are ASCII in practice; even when they are not, a fold falls
        // between characters.
        let mut out = String::new();
        push_attr_value_wrapped(&mut out, "ééééé", b"v", 3);
        assert_eq!(out.replace("\n ", ""), "ééééé: v\n");
    }

    #[test]
    fn an_ldapmodify_change_record_has_the_expected_shape() {
        // What a remediation file for ldapmodify looks like when built with these helpers.
        let mut out = String::new();
        push_dn(&mut out, "CN=Carol Space,CN=Users,DC=corp,DC=example,DC=com");
        out.push_str("changetype: modify\nreplace: userPrincipalName\n");
        push_attr_value(&mut out, "userPrincipalName", b"carol.smith@corp.example.com");
        out.push_str("-\nreplace: displayName\n");
        push_attr_value(&mut out, "displayName", "Çarol ".as_bytes());
        out.push_str("-\n\n");
        assert_eq!(
            out,
            "dn: CN=Carol Space,CN=Users,DC=corp,DC=example,DC=com\n\
             changetype: modify\n\
             replace: userPrincipalName\n\
             userPrincipalName: carol.smith@corp.example.com\n\
             -\n\
             replace: displayName\n\
             displayName:: w4dhcm9sIA==\n\
             -\n\n"
        );
    }
}
