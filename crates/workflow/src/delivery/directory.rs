//! The directory sink: each message written as `<dir>/new/<id>.<message-id>.eml` (written in
//! `<dir>/tmp` first, then renamed, as maildir readers expect). The name depends only on the
//! message, so a message written again (an attempt cut short) replaces itself.

use std::path::Path;

use syncctl_store::OutboxMessage;

use super::Transcript;
use crate::error::{SmtpError, SmtpErrorKind};

pub(super) fn store(
    dir: &Path,
    m: &OutboxMessage,
    bytes: &[u8],
    t: &mut Transcript,
) -> Result<String, SmtpError> {
    let fail = |e: std::io::Error| SmtpError {
        kind: SmtpErrorKind::Directory,
        relay: dir.display().to_string(),
        detail: e.to_string(),
    };
    let safe: String = m
        .message_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    let name = format!("{:010}.{safe}.eml", m.id);
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    std::fs::create_dir_all(&tmp).map_err(fail)?;
    std::fs::create_dir_all(&new).map_err(fail)?;
    std::fs::write(tmp.join(&name), bytes).map_err(fail)?;
    let target = new.join(&name);
    std::fs::rename(tmp.join(&name), &target).map_err(fail)?;
    let reply = format!("stored as {}", target.display());
    t.note(reply.clone());
    Ok(reply)
}
