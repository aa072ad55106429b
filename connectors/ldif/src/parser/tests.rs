use proptest::prelude::*;
use syncctl_core::ldif::{push_attr_value_wrapped, push_dn_wrapped};

use super::*;

fn read(text: &[u8]) -> Vec<Result<LdifRecord, LdifError>> {
    LdifReader::new(text).collect()
}

fn records(text: &str) -> Vec<LdifRecord> {
    read(text.as_bytes()).into_iter().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> LdifError {
    let all = read(text.as_bytes());
    match all.into_iter().find_map(Result::err) {
        Some(e) => e,
        None => panic!("no error in:\n{text}"),
    }
}

fn attr<'a>(r: &'a LdifRecord, name: &str) -> Vec<&'a [u8]> {
    r.attrs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.iter().map(Vec::as_slice).collect())
        .unwrap_or_default()
}

#[test]
fn content_records_with_base64_folds_and_comments() {
    let text = "version: 1\n\
                # a comment\n\
                dn: CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com\n\
                objectClass: top\n\
                objectClass: user\n\
                cn: Alice Anders\n\
                objectGUID:: cntT7rWeSkeChkMTCRM/2Q==\n\
                description: a long value that\n  is folded over\n  three lines\n\
                # a comment inside a record\n\
                \x20 that is folded too\n\
                userPrincipalName::ZnLDpG5rQGNvcnAuZXhhbXBsZS5jb20=\n\
                mail:    alice@corp.example.com\n\
                \n\
                \n\
                \n\
                dn:: Q049RnLDpG5rLERDPWNvcnA=\n\
                cn: Fränk\n";
    let got = records(text);
    assert_eq!(got.len(), 2);
    let alice = &got[0];
    assert_eq!(alice.line, 3);
    assert_eq!(alice.dn, b"CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com");
    let names: Vec<&str> = alice.attrs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["objectClass", "cn", "objectGUID", "description", "userPrincipalName", "mail"]);
    assert_eq!(attr(alice, "objectClass"), [&b"top"[..], b"user"]);
    assert_eq!(
        attr(alice, "objectGUID"),
        [
            &[0x72, 0x7b, 0x53, 0xee, 0xb5, 0x9e, 0x4a, 0x47, 0x82, 0x86, 0x43, 0x13, 0x09, 0x13, 0x3f, 0xd9]
                [..]
        ]
    );
    assert_eq!(attr(alice, "description"), [&b"a long value that is folded over three lines"[..]]);
    assert_eq!(attr(alice, "userPrincipalName"), ["fränk@corp.example.com".as_bytes()]);
    assert_eq!(attr(alice, "mail"), [&b"alice@corp.example.com"[..]], "the FILL before a value is dropped");
    assert_eq!(got[1].line, 18);
    assert_eq!(got[1].dn, "CN=Fränk,DC=corp".as_bytes());
    assert_eq!(got[1].dn_lossy(), "CN=Fränk,DC=corp");
}

#[test]
fn crlf_lines_and_a_missing_final_newline() {
    let text = "dn: CN=A,DC=x\r\ncn: A\r\ndescription: folded\r\n  value\r\n\r\ndn: CN=B,DC=x\r\ncn: B";
    let got = records(text);
    assert_eq!(got.len(), 2);
    assert_eq!(attr(&got[0], "description"), [&b"folded value"[..]]);
    assert_eq!(attr(&got[1], "cn"), [&b"B"[..]]);
    let got = records("dn: CN=A,DC=x\ncn: A");
    assert_eq!(attr(&got[0], "cn"), [&b"A"[..]]);
    // A line of blanks between records is a separator.
    let got = records("dn: CN=A,DC=x\n\n\t \ndn: CN=B,DC=x\n");
    assert_eq!(got.len(), 2);
}

#[test]
fn values_group_by_description_in_first_appearance_order() {
    let text = "dn: CN=G,DC=x\n\
                member;range=0-1: CN=a\n\
                cn: G\n\
                member;range=0-1: CN=b\n\
                userCertificate;binary:: AAEC\n\
                CN: second\n\
                description:\n\
                description:: \n";
    let got = records(text);
    let r = &got[0];
    let names: Vec<&str> = r.attrs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["member;range=0-1", "cn", "userCertificate;binary", "description"]);
    assert_eq!(attr(r, "member;range=0-1"), [&b"CN=a"[..], b"CN=b"]);
    assert_eq!(attr(r, "cn"), [&b"G"[..], b"second"], "descriptions differing in case are one group");
    assert_eq!(attr(r, "userCertificate;binary"), [&[0u8, 1, 2][..]]);
    assert_eq!(attr(r, "description"), [&b""[..], b""], "`attr:` and `attr::` are empty values");
}

#[test]
fn values_that_are_not_utf8_are_kept_as_bytes() {
    let got = read(b"dn: CN=A,DC=x\ndisplayName: \xc3\x28\ndescription:: w48=\n");
    let r = got[0].as_ref().unwrap();
    assert_eq!(attr(r, "displayName"), [&b"\xc3\x28"[..]]);
    let got = read(b"dn:: Q049/w==\ncn: x\n");
    assert_eq!(got[0].as_ref().unwrap().dn, b"CN=\xff");
}

#[test]
fn a_utf8_byte_order_mark_is_skipped_and_utf16_is_refused() {
    let got = read(b"\xef\xbb\xbfdn: CN=A,DC=x\r\ncn: A\r\n");
    assert_eq!(got[0].as_ref().unwrap().dn, b"CN=A,DC=x");
    let e = read(b"\xff\xfed\0n\0:\0").remove(0).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.to_string().contains("UTF-16"), "{e}");
}

#[test]
fn ldifde_exports_carry_changetype_add() {
    let text = "dn: CN=Alice,CN=Users,DC=corp,DC=com\r\n\
                changetype: add\r\n\
                objectClass: top\r\n\
                objectClass: user\r\n\
                cn: Alice\r\n\
                \r\n\
                dn: CN=Bob,CN=Users,DC=corp,DC=com\r\n\
                changetype: Add\r\n\
                cn: Bob\r\n\r\n";
    let got = records(text);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| attr(r, "changetype").is_empty()), "{got:?}");
    assert_eq!(got[0].attrs.len(), 2);
}

#[test]
fn ldapsearch_comments_references_and_trailer_are_skipped() {
    let text = "# extended LDIF\n\
                #\n\
                # LDAPv3\n\
                # base <DC=corp,DC=example,DC=com> with scope subtree\n\
                # filter: (objectClass=user)\n\
                # requesting: ALL\n\
                #\n\
                \n\
                # Alice Anders, Users, corp.example.com\n\
                dn: CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com\n\
                cn: Alice Anders\n\
                memberOf: CN=Denied RODC Password Replication Group,CN=Users,DC=corp,DC=exampl\n e,DC=com\n\
                \n\
                # search reference\n\
                ref: ldap://corp.example.com/CN=Configuration,DC=corp,DC=example,DC=com\n\
                \n\
                # search result\n\
                search: 2\n\
                result: 0 Success\n\
                control: 1.2.840.113556.1.4.319 false MIQAAAAFAgEABAA=\n\
                # pagedresults: cookie=\n\
                \n\
                # Bob Brown, Users, corp.example.com\n\
                dn: CN=Bob Brown,CN=Users,DC=corp,DC=example,DC=com\n\
                cn: Bob Brown\n\
                \n\
                # search result\n\
                search: 3\n\
                result: 0 Success\n\
                \n\
                # numResponses: 3\n\
                # numEntries: 2\n";
    let got = records(text);
    let dns: Vec<String> = got.iter().map(LdifRecord::dn_lossy).collect();
    assert_eq!(
        dns,
        [
            "CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com",
            "CN=Bob Brown,CN=Users,DC=corp,DC=example,DC=com"
        ]
    );
    assert_eq!(
        attr(&got[0], "memberOf"),
        [&b"CN=Denied RODC Password Replication Group,CN=Users,DC=corp,DC=example,DC=com"[..]]
    );
}

#[test]
fn a_non_zero_result_means_an_incomplete_export() {
    let text =
        "dn: CN=A,DC=x\ncn: A\n\n# search result\nsearch: 2\nresult: 4 Size limit exceeded\ntext: too many\n";
    let e = error(text);
    assert_eq!((e.line, e.kind), (6, LdifErrorKind::Incomplete));
    assert_eq!(
        e.to_string(),
        "line 6: ldapsearch reported `result: 4 Size limit exceeded` (too many): the export is incomplete; \
         export again (with paged results for large directories: ldapsearch -E pr=1000/noprompt)"
    );
    // The records before it were read.
    assert!(read(text.as_bytes())[0].is_ok());
    assert_eq!(error("search: 2\nresult: Success\n").kind, LdifErrorKind::Syntax);
}

#[test]
fn change_records_are_refused_with_the_line_and_the_dn() {
    for kind in ["modify", "delete", "modrdn", "moddn", "MODIFY"] {
        let text =
            format!("dn: CN=A,DC=x\ncn: A\n\ndn: CN=B,DC=x\nchangetype: {kind}\nreplace: cn\ncn: B\n-\n");
        let e = error(&text);
        assert_eq!((e.line, e.kind, e.dn.as_deref()), (5, LdifErrorKind::ChangeRecord, Some("CN=B,DC=x")));
        let shown = e.to_string();
        assert!(shown.starts_with("line 5: CN=B,DC=x: change records (`changetype: "), "{shown}");
        assert!(shown.contains("ldapsearch or `ldifde -f FILE`"), "{shown}");
    }
    let e = error("dn: CN=B,DC=x\ncontrol: 1.2.840.113556.1.4.805 true\nchangetype: delete\n");
    assert_eq!((e.line, e.kind), (2, LdifErrorKind::ChangeRecord));
    assert!(e.to_string().contains("`control:`"));
    let e = error("dn: CN=B,DC=x\nchangetype: frobnicate\n");
    assert_eq!((e.line, e.kind), (2, LdifErrorKind::Syntax));
}

#[test]
fn malformed_lines_are_refused_with_their_line() {
    let cases: &[(&str, u64, LdifErrorKind, &str)] = &[
        ("cn: A\n", 1, LdifErrorKind::Syntax, "must start with `dn:`, not `cn:`"),
        ("# c\n\nobjectClass: x\n", 3, LdifErrorKind::Syntax, "must start with `dn:`"),
        ("dn: CN=A,DC=x\ncn A\n", 2, LdifErrorKind::Syntax, "`cn A` has no colon"),
        ("dn: CN=A,DC=x\nc_n: A\n", 2, LdifErrorKind::Syntax, "`c_n` is not a valid attribute description"),
        ("dn: CN=A,DC=x\n-cn: A\n", 2, LdifErrorKind::Syntax, "not a valid attribute description"),
        ("dn: CN=A,DC=x\ncn;: A\n", 2, LdifErrorKind::Syntax, "not a valid attribute description"),
        ("dn: CN=A,DC=x\n1..2: A\n", 2, LdifErrorKind::Syntax, "not a valid attribute description"),
        ("dn: CN=A,DC=x\n: A\n", 2, LdifErrorKind::Syntax, "not a valid attribute description"),
        (" dn: CN=A,DC=x\n", 1, LdifErrorKind::Syntax, "continues the previous line, but there is none"),
        ("dn: CN=A,DC=x\n\n continued\n", 3, LdifErrorKind::Syntax, "continues the previous line"),
        ("dn: CN=A,DC=x\ncn: A\ndn: CN=B,DC=x\n", 3, LdifErrorKind::Syntax, "separated by a blank line"),
        ("dn: CN=A,DC=x\nobjectGUID:: ab$c\n", 2, LdifErrorKind::Base64, "`objectGUID` is not valid base64"),
        ("dn:: ###\n", 1, LdifErrorKind::Base64, "`dn` is not valid base64"),
        ("dn:< file:///etc/hostname\n", 1, LdifErrorKind::Syntax, "a DN cannot be given as a URL"),
        ("version: 2\ndn: CN=A,DC=x\n", 1, LdifErrorKind::Syntax, "version `2` is not supported"),
        ("dn: CN=A,DC=x\n\nversion: 1\n", 3, LdifErrorKind::Syntax, "may only be the first line"),
        ("dn: CN=A,DC=x\njpegPhoto:< http://example.com/a.jpg\n", 2, LdifErrorKind::Url, "only file:// URLs"),
        ("dn: CN=A,DC=x\njpegPhoto:< file://host/a.jpg\n", 2, LdifErrorKind::Url, "only local file:// URLs"),
        ("dn: CN=A,DC=x\njpegPhoto:< file:///nonexistent/x.jpg\n", 2, LdifErrorKind::Url, "cannot read"),
        ("dn: CN=A,DC=x\njpegPhoto:< file:///dev/null\n", 2, LdifErrorKind::Url, "not a regular file"),
        ("dn: CN=A,DC=x\njpegPhoto:< file:///a%zz\n", 2, LdifErrorKind::Url, "bad %-escape"),
    ];
    for (text, line, kind, needle) in cases {
        let e = error(text);
        assert_eq!((e.line, e.kind), (*line, *kind), "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: `{needle}` not in `{e}`");
        assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
    }
    // Errors inside a record name its DN.
    let e = error("dn: CN=A,DC=x\n\ndn: CN=B,DC=x\nobjectGUID:: !!\n");
    assert_eq!(
        e.to_string(),
        "line 4: CN=B,DC=x: the value of `objectGUID` is not valid base64 (Invalid symbol 33, offset 0.)"
    );
}

#[test]
fn the_reader_stops_after_an_error() {
    let mut reader = LdifReader::new(&b"dn: CN=A,DC=x\n\ncn A\n\ndn: CN=B,DC=x\n"[..]);
    assert!(reader.next().unwrap().is_ok());
    assert_eq!(reader.next().unwrap().unwrap_err().line, 3);
    assert!(reader.next().is_none());
    assert!(reader.next().is_none());
}

#[test]
fn folded_line_errors_give_the_first_line_of_the_fold() {
    let e = error("dn: CN=A,DC=x\ncn: A\nobjectGUID:: cntT7rWeSkeC\n hk$MTCRM/2Q=\n =\n");
    assert_eq!((e.line, e.kind), (3, LdifErrorKind::Base64));
    let got = records("dn: CN=A,DC=x\nobjectGUID:: cntT7rWeSkeC\n hkMTCRM/2Q=\n =\n");
    assert_eq!(attr(&got[0], "objectGUID").len(), 1);
    assert_eq!(attr(&got[0], "objectGUID")[0].len(), 16);
}

#[test]
fn base64_without_padding_and_with_spaces_around_it() {
    let got = records("dn: CN=A,DC=x\ncn::   QWxpY2U  \ndescription::QQ\n");
    assert_eq!(attr(&got[0], "cn"), [&b"Alice"[..]]);
    assert_eq!(attr(&got[0], "description"), [&b"A"[..]]);
}

#[test]
fn file_urls_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("photo one.jpg");
    std::fs::write(&file, [0xffu8, 0xd8, 0xff, 0x00]).unwrap();
    let url = format!("file://{}", file.display().to_string().replace(' ', "%20"));
    let got = records(&format!(
        "dn: CN=A,DC=x\njpegPhoto:< {url}\nthumbnailPhoto:<file://localhost{}\n",
        file.display()
    ));
    assert_eq!(attr(&got[0], "jpegPhoto"), [&[0xffu8, 0xd8, 0xff, 0x00][..]]);
    assert_eq!(attr(&got[0], "thumbnailPhoto"), [&[0xffu8, 0xd8, 0xff, 0x00][..]]);
}

#[test]
fn oids_and_options_are_valid_descriptions() {
    let got = records(
        "dn: CN=A,DC=x\n1.2.840.113556.1.4.221: sam\nmember;range=1500-*: CN=b\ncn;lang-de: A\nmS-DS-ConsistencyGuid:: AA==\n",
    );
    assert_eq!(got[0].attrs.len(), 4);
}

#[test]
fn the_root_dse_and_an_empty_file() {
    assert!(records("").is_empty());
    assert!(records("\n\n# only comments\n\n").is_empty());
    assert!(records("version: 1\n").is_empty());
    let got = records("dn:\nnamingContexts: DC=x\n");
    assert_eq!(got[0].dn, b"");
}

#[test]
fn a_huge_line_is_refused_without_reading_it_all() {
    // A stream that never ends a line: the reader stops at the limit.
    let endless = std::io::repeat(b'a');
    let mut reader = LdifReader::new(std::io::BufReader::new(endless));
    let e = reader.next().unwrap().unwrap_err();
    assert_eq!((e.line, e.kind), (1, LdifErrorKind::Syntax));
    assert!(e.to_string().contains("longer than 64 MiB"), "{e}");
}

/// The number of physical lines of `data`.
fn line_count(data: &[u8]) -> u64 {
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    if data.last().is_some_and(|&b| b != b'\n') { newlines + 1 } else { newlines }
}

fn description() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z][a-zA-Z0-9-]{0,20}",
        proptest::option::of(prop_oneof![
            Just(";binary".to_owned()),
            "[a-z]{1,4}-[a-z]{1,3}".prop_map(|o| format!(";{o}")),
            (0u32..3000).prop_map(|l| format!(";range={l}-*")),
        ]),
    )
        .prop_map(|(t, o)| format!("{t}{}", o.unwrap_or_default()))
        .prop_filter("not a keyword of the format", |d| {
            !["dn", "changetype", "control", "version"].iter().any(|k| d.eq_ignore_ascii_case(k))
        })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,100}".prop_map(String::into_bytes),
        "\\PC{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..60),
    ]
}

fn record() -> impl Strategy<Value = LdifRecord> {
    (
        prop_oneof![
            "CN=[ -~]{1,60},DC=corp".prop_map(String::into_bytes),
            "\\PC{0,50}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..30),
        ],
        proptest::collection::vec((description(), proptest::collection::vec(value(), 1..4)), 0..8),
    )
        .prop_map(|(dn, attrs)| {
            // One group per description, compared case-insensitively, as the reader groups them.
            let mut grouped: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
            for (d, v) in attrs {
                match grouped.iter_mut().find(|(g, _)| g.eq_ignore_ascii_case(&d)) {
                    Some((_, values)) => values.extend(v),
                    None => grouped.push((d, v)),
                }
            }
            LdifRecord { line: 0, dn, attrs: grouped }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_name_a_line_of_the_input(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            proptest::collection::vec(
                prop_oneof![
                    Just(&b"dn: CN=A,DC=x\n"[..]), Just(&b"\n"[..]), Just(&b" "[..]), Just(&b":"[..]),
                    Just(&b"::"[..]), Just(&b"cn"[..]), Just(&b"#"[..]), Just(&b"\r\n"[..]),
                    Just(&b"changetype: add\n"[..]), Just(&b"search: 1\nresult: 0 ok\n"[..]),
                    Just(&b"version: 1\n"[..]), Just(&b"QUJD"[..]), Just(&b"<"[..]), Just(&b"\xff"[..]),
                ],
                0..60,
            ).prop_map(|parts| parts.concat()),
        ],
    ) {
        let lines = line_count(&data);
        for item in LdifReader::new(&data[..]) {
            match item {
                Ok(r) => prop_assert!(r.line >= 1 && r.line <= lines),
                Err(e) => {
                    prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {e}", e.line);
                    let prefix = format!("line {}: ", e.line);
                    prop_assert!(e.to_string().starts_with(&prefix));
                }
            }
        }
    }

    #[test]
    fn what_the_core_writer_writes_reads_back(
        recs in proptest::collection::vec(record(), 0..6),
        width in prop_oneof![Just(0usize), Just(76usize), 1usize..100],
        crlf in any::<bool>(),
        version in any::<bool>(),
        comments in any::<bool>(),
    ) {
        let mut text = String::new();
        if version {
            text.push_str("version: 1\n\n");
        }
        let mut want = Vec::new();
        for r in &recs {
            if comments {
                text.push_str("# an entry\n");
            }
            // Only UTF-8 DNs can go through the writer (it takes `&str`).
            let Ok(dn) = std::str::from_utf8(&r.dn) else { continue };
            let line = text.matches('\n').count() as u64 + 1;
            push_dn_wrapped(&mut text, dn, width);
            for (d, values) in &r.attrs {
                for v in values {
                    push_attr_value_wrapped(&mut text, d, v, width);
                }
            }
            text.push('\n');
            want.push(LdifRecord { line, ..r.clone() });
        }
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let got: Vec<LdifRecord> = LdifReader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(got, want, "{}", text);
    }
}
