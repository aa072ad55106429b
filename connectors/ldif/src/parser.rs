//! A streaming RFC 2849 reader of LDIF content records.
//!
//! [`LdifReader`] reads one record at a time from any [`BufRead`], so a file of any number of
//! entries is never held in memory (only the record being read is). It reads what `ldapsearch`
//! (with or without `-L`/`-LLL`, wrapped or not) and `ldifde -f` write:
//!
//! - an optional UTF-8 byte-order mark and `version: 1` first line; `#` comment lines (and their folded continuations)
//!   anywhere; lines ending in LF or CRLF; folded lines (a line starting with one space
//!   continues the previous one); any number of blank lines between records; no final newline;
//! - `attr: value`, `attr:: base64` (with or without padding), `attr:< file:///path`, and the
//!   empty value `attr:`; `dn:` or `dn:: base64`;
//! - `changetype: add` (as `ldifde` writes on every record): dropped, the record is content;
//! - `ldapsearch`'s result trailer (`search: 2` / `result: 0 Success`, one per page with paged
//!   results) and search-reference records (`ref: ldap://...`): skipped. A non-zero `result:`
//!   is an error, since the export stopped early.
//!
//! Everything else is refused with an [`LdifError`] naming the line (and the record's DN when
//! it is known): change records (`changetype: modify`, `delete`, `modrdn`, `moddn`), `control:`
//! lines, a record that does not start with `dn:`, a line without a colon, a bad attribute
//! description, invalid base64, a continuation line that continues nothing, a URL that is not a
//! readable local `file://` one. After an error the reader yields nothing more.
//!
//! Values are kept as bytes: whether they must be UTF-8 is the decoder's business (it names the
//! object and the attribute).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, Read};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The longest logical line (and the largest `file://` value) read, in bytes: 64 MiB.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// Base64 as LDIF writers produce it: the standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One content record: a DN and its attribute values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdifRecord {
    /// The line of the record's `dn:` line (1-based).
    pub line: u64,
    /// The DN's bytes (base64 decoded; not checked to be UTF-8).
    pub dn: Vec<u8>,
    /// Values grouped by attribute description, descriptions in first-appearance order and
    /// spelled as first written (options included: `member;range=0-1499`,
    /// `userCertificate;binary`); descriptions that differ only in case are one group.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl LdifRecord {
    /// The DN as text, lossy (for messages only).
    pub fn dn_lossy(&self) -> String {
        String::from_utf8_lossy(&self.dn).into_owned()
    }
}

/// What kind of problem an [`LdifError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LdifErrorKind {
    /// The input could not be read.
    Read,
    /// The text is not LDIF (no colon, bad attribute description, misplaced line, line too
    /// long, unknown version).
    Syntax,
    /// A `::` value is not valid base64.
    Base64,
    /// A change record (`changetype: modify|delete|modrdn|moddn`, `control:`): not a source.
    ChangeRecord,
    /// A `:<` URL that cannot be read.
    Url,
    /// `ldapsearch` reported a non-zero result: the export is incomplete.
    Incomplete,
}

/// A malformed or unusable LDIF input, with the line where it was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}{message}", DnPrefix(.dn.as_deref()))]
pub struct LdifError {
    /// The 1-based line (for a folded line, its first physical line).
    pub line: u64,
    /// The DN of the record the line belongs to, when it was read.
    pub dn: Option<String>,
    /// What kind of problem.
    pub kind: LdifErrorKind,
    /// A sentence saying what is wrong.
    pub message: String,
}

struct DnPrefix<'a>(Option<&'a str>);

impl fmt::Display for DnPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(dn) => write!(f, "{dn}: "),
            None => Ok(()),
        }
    }
}

/// A physical line, without its line end.
struct Physical {
    line: u64,
    bytes: Vec<u8>,
}

/// A logical line: physical lines joined by unfolding.
enum Logical {
    Blank,
    Line { line: u64, text: Vec<u8> },
}

/// How a value is written after the attribute description.
enum Spec<'a> {
    /// `attr: value` (leading spaces removed).
    Plain(&'a [u8]),
    /// `attr:: base64`.
    Base64(&'a [u8]),
    /// `attr:< url`.
    Url(&'a [u8]),
}

/// Reads LDIF content records one at a time; see the module documentation.
pub struct LdifReader<R> {
    input: R,
    /// The number of the last physical line read.
    line: u64,
    /// The physical line read ahead to see whether it continues the previous one.
    peeked: Option<Physical>,
    /// A line other than a comment was read (`version:` is only allowed before).
    started: bool,
    /// An error was returned: nothing more is read.
    failed: bool,
}

impl<R: BufRead> LdifReader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> Self {
        Self { input, line: 0, peeked: None, started: false, failed: false }
    }

    /// The number of physical lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// The underlying input.
    pub fn into_inner(self) -> R {
        self.input
    }

    fn read_physical(&mut self) -> Result<Option<Physical>, LdifError> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        let mut bytes = Vec::new();
        let limit = (MAX_LINE as u64).saturating_add(2);
        let n = (&mut self.input).take(limit).read_until(b'\n', &mut bytes).map_err(|e| LdifError {
            line: self.line + 1,
            dn: None,
            kind: LdifErrorKind::Read,
            message: format!("cannot read the input: {e}"),
        })?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let ended = bytes.last() == Some(&b'\n');
        if ended {
            bytes.pop();
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.len() > MAX_LINE || (!ended && n as u64 >= limit) {
            return Err(too_long(self.line));
        }
        if self.line == 1 {
            if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
                // A UTF-8 byte-order mark, as Windows tools write.
                bytes = rest.to_vec();
            } else if bytes.starts_with(b"\xff\xfe") || bytes.starts_with(b"\xfe\xff") {
                return Err(syntax(
                    1,
                    None,
                    "the file is UTF-16 (as `ldifde -u` writes it): convert it to UTF-8, or export without -u"
                        .into(),
                ));
            }
        }
        Ok(Some(Physical { line: self.line, bytes }))
    }

    fn read_logical(&mut self) -> Result<Option<Logical>, LdifError> {
        let Some(first) = self.read_physical()? else {
            return Ok(None);
        };
        if first.bytes.iter().all(|b| matches!(b, b' ' | b'\t')) {
            return Ok(Some(Logical::Blank));
        }
        if first.bytes.first() == Some(&b' ') {
            return Err(LdifError {
                line: first.line,
                dn: None,
                kind: LdifErrorKind::Syntax,
                message:
                    "this line starts with a space, so it continues the previous line, but there is none \
                          (a blank line or the start of the file comes before it)"
                        .into(),
            });
        }
        let line = first.line;
        let mut text = first.bytes;
        while let Some(next) = self.read_physical()? {
            match next.bytes.strip_prefix(b" ") {
                Some(rest) => {
                    if text.len() + rest.len() > MAX_LINE {
                        return Err(too_long(line));
                    }
                    text.extend_from_slice(rest);
                }
                None => {
                    self.peeked = Some(next);
                    break;
                }
            }
        }
        Ok(Some(Logical::Line { line, text }))
    }

    /// The next logical line that is not a comment, or `None` at a blank line or the end.
    fn record_line(&mut self) -> Result<Option<(u64, Vec<u8>)>, LdifError> {
        loop {
            match self.read_logical()? {
                None | Some(Logical::Blank) => return Ok(None),
                Some(Logical::Line { text, .. }) if text.first() == Some(&b'#') => {}
                Some(Logical::Line { line, text }) => return Ok(Some((line, text))),
            }
        }
    }

    fn read_record(&mut self) -> Result<Option<LdifRecord>, LdifError> {
        loop {
            let (line, text) = match self.read_logical()? {
                None => return Ok(None),
                Some(Logical::Blank) => continue,
                Some(Logical::Line { text, .. }) if text.first() == Some(&b'#') => continue,
                Some(Logical::Line { line, text }) => (line, text),
            };
            let (desc, spec) = split_line(line, &text, None)?;
            let started = std::mem::replace(&mut self.started, true);
            if desc.eq_ignore_ascii_case("version") {
                let value = resolve(line, desc, spec, None)?;
                if started {
                    return Err(syntax(
                        line,
                        None,
                        "`version:` may only be the first line of the file".into(),
                    ));
                }
                if value.trim_ascii() != b"1" {
                    return Err(syntax(
                        line,
                        None,
                        format!("LDIF version `{}` is not supported (only version 1 exists)", lossy(&value)),
                    ));
                }
                continue;
            }
            if desc.eq_ignore_ascii_case("dn") {
                if matches!(spec, Spec::Url(_)) {
                    return Err(syntax(line, None, "a DN cannot be given as a URL (`dn:<`)".into()));
                }
                let dn = resolve(line, desc, spec, None)?;
                return self.read_entry(line, dn).map(Some);
            }
            if desc.eq_ignore_ascii_case("search") {
                self.skip_trailer()?;
                continue;
            }
            if desc.eq_ignore_ascii_case("ref") {
                // A search reference as ldapsearch prints it: the connector ignores referrals,
                // as the LDAP connector does.
                while self.record_line()?.is_some() {}
                continue;
            }
            return Err(syntax(
                line,
                None,
                format!("a record must start with `dn:`, not `{desc}:` (a blank line separates records)"),
            ));
        }
    }

    fn read_entry(&mut self, line: u64, dn: Vec<u8>) -> Result<LdifRecord, LdifError> {
        let dn_text = lossy(&dn);
        let mut attrs: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        while let Some((at, text)) = self.record_line()? {
            let dn = Some(dn_text.as_str());
            let (desc, spec) = split_line(at, &text, dn)?;
            if desc.eq_ignore_ascii_case("changetype") {
                let value = resolve(at, desc, spec, dn)?;
                let kind = lossy(&value).trim().to_ascii_lowercase();
                match kind.as_str() {
                    "add" => continue,
                    "modify" | "delete" | "modrdn" | "moddn" => {
                        return Err(LdifError {
                            line: at,
                            dn: Some(dn_text),
                            kind: LdifErrorKind::ChangeRecord,
                            message: format!(
                                "change records (`changetype: {kind}`) cannot be read as a source: export the \
                                 directory's content with ldapsearch or `ldifde -f FILE` instead"
                            ),
                        });
                    }
                    _ => {
                        return Err(syntax(
                            at,
                            dn,
                            format!(
                                "`changetype: {kind}` is not a change type (add, modify, delete, modrdn, moddn)"
                            ),
                        ));
                    }
                }
            }
            if desc.eq_ignore_ascii_case("control") {
                return Err(LdifError {
                    line: at,
                    dn: Some(dn_text),
                    kind: LdifErrorKind::ChangeRecord,
                    message: "`control:` lines belong to change records, which cannot be read as a source: \
                              export the directory's content with ldapsearch or `ldifde -f FILE` instead"
                        .into(),
                });
            }
            if desc.eq_ignore_ascii_case("dn") {
                return Err(syntax(
                    at,
                    dn,
                    "a `dn:` line inside a record: records must be separated by a blank line".into(),
                ));
            }
            let value = resolve(at, desc, spec, dn)?;
            match attrs.iter_mut().find(|(d, _)| d.eq_ignore_ascii_case(desc)) {
                Some((_, values)) => values.push(value),
                None => attrs.push((desc.to_owned(), vec![value])),
            }
        }
        Ok(LdifRecord { line, dn, attrs })
    }

    /// Skips ldapsearch's result trailer (`search: N`, `result: CODE TEXT`, `text:`,
    /// `matchedDN:`, ...); a non-zero result is an error.
    fn skip_trailer(&mut self) -> Result<(), LdifError> {
        let mut result: Option<(u64, String)> = None;
        let mut text = None;
        while let Some((at, bytes)) = self.record_line()? {
            let (desc, spec) = split_line(at, &bytes, None)?;
            if desc.eq_ignore_ascii_case("result") {
                result = Some((at, lossy(&resolve(at, desc, spec, None)?).trim().to_owned()));
            } else if desc.eq_ignore_ascii_case("text") {
                text = Some(lossy(&resolve(at, desc, spec, None)?).trim().to_owned());
            }
        }
        let Some((at, result)) = result else {
            return Ok(());
        };
        let code = result.split_whitespace().next().and_then(|c| c.parse::<i64>().ok());
        match code {
            Some(0) => Ok(()),
            Some(_) => Err(LdifError {
                line: at,
                dn: None,
                kind: LdifErrorKind::Incomplete,
                message: format!(
                    "ldapsearch reported `result: {result}`{}: the export is incomplete; export again \
                     (with paged results for large directories: ldapsearch -E pr=1000/noprompt)",
                    text.map(|t| format!(" ({t})")).unwrap_or_default()
                ),
            }),
            None => Err(syntax(
                at,
                None,
                format!("`result: {result}` in ldapsearch's trailer is not a result code"),
            )),
        }
    }
}

impl<R: BufRead> Iterator for LdifReader<R> {
    type Item = Result<LdifRecord, LdifError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl<R> fmt::Debug for LdifReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdifReader").field("line", &self.line).field("failed", &self.failed).finish()
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn syntax(line: u64, dn: Option<&str>, message: String) -> LdifError {
    LdifError { line, dn: dn.map(str::to_owned), kind: LdifErrorKind::Syntax, message }
}

fn too_long(line: u64) -> LdifError {
    syntax(line, None, format!("the line is longer than {} MiB", MAX_LINE / (1024 * 1024)))
}

/// Splits `attr: value` into the description and the value spec.
fn split_line<'a>(line: u64, text: &'a [u8], dn: Option<&str>) -> Result<(&'a str, Spec<'a>), LdifError> {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        let shown: String = lossy(text).chars().take(60).collect();
        return Err(syntax(
            line,
            dn,
            format!("`{shown}` has no colon: every line must be `attribute: value`"),
        ));
    };
    let (desc, rest) = text.split_at(colon);
    let rest = rest.get(1..).unwrap_or_default();
    let desc = match std::str::from_utf8(desc) {
        Ok(d) if valid_description(d) => d,
        _ => {
            let shown: String = lossy(desc).chars().take(60).collect();
            return Err(syntax(line, dn, format!("`{shown}` is not a valid attribute description")));
        }
    };
    let spec = match rest.split_first() {
        Some((b':', b64)) => Spec::Base64(b64.trim_ascii()),
        Some((b'<', url)) => Spec::Url(url.trim_ascii()),
        _ => Spec::Plain(trim_fill(rest)),
    };
    Ok((desc, spec))
}

/// Removes the FILL (spaces) before a value.
fn trim_fill(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|&&b| b == b' ').count();
    bytes.get(n..).unwrap_or_default()
}

/// RFC 4512 attribute description: a name (`ALPHA *(ALPHA / DIGIT / "-")`) or a numeric OID,
/// then `;option`s (AD's range options `range=0-1499` and `range=1500-*` included).
fn valid_description(desc: &str) -> bool {
    let mut parts = desc.split(';');
    let ty = parts.next().unwrap_or_default();
    let type_ok = match ty.as_bytes().first() {
        Some(c) if c.is_ascii_alphabetic() => ty.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'),
        Some(c) if c.is_ascii_digit() => {
            ty.split('.').all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        }
        _ => false,
    };
    type_ok
        && parts.all(|o| {
            !o.is_empty() && o.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'=' | b'*'))
        })
}

/// The value a spec stands for.
fn resolve(line: u64, desc: &str, spec: Spec<'_>, dn: Option<&str>) -> Result<Vec<u8>, LdifError> {
    match spec {
        Spec::Plain(v) => Ok(v.to_vec()),
        Spec::Base64(b64) => BASE64.decode(b64).map_err(|e| LdifError {
            line,
            dn: dn.map(str::to_owned),
            kind: LdifErrorKind::Base64,
            message: format!("the value of `{desc}` is not valid base64 ({e})"),
        }),
        Spec::Url(url) => read_url(url).map_err(|message| LdifError {
            line,
            dn: dn.map(str::to_owned),
            kind: LdifErrorKind::Url,
            message: format!("the value of `{desc}`: {message}"),
        }),
    }
}

/// Reads the value of a `file://` URL (a regular local file, at most [`MAX_LINE`] bytes).
fn read_url(url: &[u8]) -> Result<Vec<u8>, String> {
    let text = lossy(url);
    let lower = text.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("file://").map(|_| text.get(7..).unwrap_or_default()) else {
        return Err(format!("`{text}`: only file:// URLs can be read"));
    };
    let path = if rest.starts_with('/') {
        rest
    } else if rest.to_ascii_lowercase().starts_with("localhost/") {
        rest.get("localhost".len()..).unwrap_or_default()
    } else {
        return Err(format!("`{text}`: only local file:// URLs (file:///path) can be read"));
    };
    let path = percent_decode(path).ok_or_else(|| format!("`{text}` has a bad %-escape"))?;
    let path = std::path::PathBuf::from(
        String::from_utf8(path).map_err(|_| format!("`{text}`: the path is not UTF-8"))?,
    );
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let file = File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut value = Vec::new();
    file.take(MAX_LINE as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if value.len() > MAX_LINE {
        return Err(format!("{} is larger than {} MiB", path.display(), MAX_LINE / (1024 * 1024)));
    }
    Ok(value)
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
