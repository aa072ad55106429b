//! One SMTP session with the relay, step by step (connect, EHLO, STARTTLS, AUTH, then MAIL,
//! RCPT, DATA per message), each step written to the attempt's [`Transcript`]. The AUTH
//! exchange is written as `AUTH <mechanism> [credentials hidden]` and its reply: no
//! credential ever reaches the transcript, the log or an error.

use std::path::Path;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;

use super::{Security, SmtpRelay, Transcript};
use crate::error::{SmtpError, SmtpErrorKind};

/// Builds the TLS parameters once per delivery run: the relay's host name is what the
/// certificate must name; the CA file, when given, is the only trust anchor, else the system's
/// roots are.
pub(crate) fn tls_parameters(relay: &SmtpRelay) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(relay.host.clone());
    if let Some(ca) = &relay.ca_file {
        let pem = read_ca(ca)?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("the CA file {} holds no usable certificate: {e}", ca.display()))?;
        builder = builder.certificate_store(CertificateStore::None).add_root_certificate(cert);
    }
    builder.build().map_err(|e| format!("cannot set up TLS for {}: {e}", relay.host))
}

fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))
}

/// A reply as one line: `250 2.0.0 OK stored`.
fn reply_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" / ")).trim_end().to_owned()
}

/// A lettre error as a reply (`550 5.7.1 ...`) or as the connection's error.
fn error_text(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    match (e.status(), e.source()) {
        (Some(code), Some(src)) => format!("{code} {src}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// An open session.
pub(crate) struct Session {
    conn: AsyncSmtpConnection,
    relay: String,
}

impl Session {
    /// Connects, greets, upgrades to TLS as configured and authenticates.
    pub(crate) async fn open(
        relay: &SmtpRelay,
        tls: Option<&TlsParameters>,
        t: &mut Transcript,
    ) -> Result<Session, SmtpError> {
        let name = format!("{}:{}", relay.host, relay.port);
        let err = |kind, detail: String| SmtpError { kind, relay: name.clone(), detail };
        let hello = ClientId::default();
        let implicit = match (relay.security, tls) {
            (Security::Tls, Some(p)) => Some(p.clone()),
            _ => None,
        };
        t.note(format!(
            "connecting to {name} ({})",
            match relay.security {
                Security::StartTls => "STARTTLS required",
                Security::Tls => "TLS from the first byte",
                Security::Plain => "plain, no TLS",
            }
        ));
        let conn = AsyncSmtpConnection::connect_tokio1(
            (relay.host.as_str(), relay.port),
            Some(relay.timeout),
            &hello,
            implicit,
            None,
        )
        .await;
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                let kind = if e.is_tls() { SmtpErrorKind::Tls } else { SmtpErrorKind::Connect };
                let detail = error_text(&e);
                t.note(format!("failed: {detail}"));
                return Err(err(kind, detail));
            }
        };
        if relay.security == Security::Tls {
            t.note("TLS established, certificate verified".into());
        }
        t.sent(format!("EHLO {hello}"));
        t.received(format!("250 {}", features(&conn)));
        if relay.security == Security::StartTls {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                let detail = "the server's EHLO reply does not offer STARTTLS".to_owned();
                t.note(detail.clone());
                conn.abort().await;
                return Err(err(SmtpErrorKind::NoStartTls, detail));
            }
            let Some(params) = tls else {
                return Err(err(SmtpErrorKind::Tls, "no TLS parameters".into()));
            };
            t.sent("STARTTLS".into());
            if let Err(e) = conn.starttls(params.clone(), &hello).await {
                let detail = error_text(&e);
                t.note(format!("failed: {detail}"));
                // A failed upgrade leaves lettre's stream in a state that must not be written
                // to (not even QUIT): the connection is dropped as it is.
                drop(conn);
                let kind = if e.status().is_some() { SmtpErrorKind::Transient } else { SmtpErrorKind::Tls };
                return Err(err(kind, detail));
            }
            t.received("220 ready: TLS established, certificate verified".into());
            t.sent(format!("EHLO {hello}"));
            t.received(format!("250 {}", features(&conn)));
        }
        if let (Some(user), Some(password)) = (&relay.username, &relay.password) {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            let Some(mechanism) = conn.server_info().get_auth_mechanism(&mechanisms) else {
                let detail = "the server offers no AUTH PLAIN or LOGIN".to_owned();
                t.note(detail.clone());
                conn.abort().await;
                return Err(err(SmtpErrorKind::NoAuth, detail));
            };
            t.sent(format!("AUTH {mechanism} [credentials of {user} hidden]"));
            match conn.auth(&[mechanism], &Credentials::new(user.clone(), password.expose().to_owned())).await
            {
                Ok(r) => t.received(reply_text(&r)),
                Err(e) => {
                    let detail = error_text(&e);
                    t.received(detail.clone());
                    conn.abort().await;
                    return Err(err(SmtpErrorKind::AuthFailed, detail));
                }
            }
        }
        Ok(Session { conn, relay: name })
    }

    /// Sends one message; `Ok` with the server's final reply once it accepted it.
    pub(crate) async fn send(
        &mut self,
        from: &Address,
        to: &Address,
        message: &[u8],
        t: &mut Transcript,
    ) -> Result<String, SmtpError> {
        self.step(format!("MAIL FROM:<{from}>"), Mail::new(Some(from.clone()), vec![]), t).await?;
        self.step(format!("RCPT TO:<{to}>"), Rcpt::new(to.clone(), vec![]), t).await?;
        self.step("DATA".to_owned(), Data, t).await?;
        t.sent(format!("[message, {} bytes]", message.len()));
        t.sent(".".into());
        match self.conn.message(message).await {
            Ok(r) => {
                let reply = reply_text(&r);
                t.received(reply.clone());
                Ok(reply)
            }
            Err(e) => Err(self.failed(&e, t).await),
        }
    }

    async fn step<C: std::fmt::Display>(
        &mut self,
        line: String,
        command: C,
        t: &mut Transcript,
    ) -> Result<(), SmtpError> {
        t.sent(line);
        match self.conn.command(command).await {
            Ok(r) => {
                t.received(reply_text(&r));
                Ok(())
            }
            Err(e) => Err(self.failed(&e, t).await),
        }
    }

    async fn failed(&mut self, e: &lettre::transport::smtp::Error, t: &mut Transcript) -> SmtpError {
        let detail = error_text(e);
        t.received(detail.clone());
        let kind = if e.is_permanent() {
            SmtpErrorKind::Permanent
        } else if e.is_transient() {
            SmtpErrorKind::Transient
        } else {
            SmtpErrorKind::Connect
        };
        self.conn.abort().await;
        SmtpError { kind, relay: self.relay.clone(), detail }
    }

    /// Says goodbye (a failure here changes nothing: the messages are accepted already).
    pub(crate) async fn quit(mut self, t: &mut Transcript) {
        t.sent("QUIT".into());
        match self.conn.quit().await {
            Ok(r) => t.received(reply_text(&r)),
            Err(e) => t.note(format!("QUIT failed: {}", error_text(&e))),
        }
    }

    /// True when the connection can carry another message.
    pub(crate) fn usable(&self) -> bool {
        !self.conn.has_broken()
    }
}

/// What the server offers, in a stable order.
fn features(conn: &AsyncSmtpConnection) -> String {
    let info = conn.server_info();
    let mut out = vec![info.name().to_owned()];
    for (ext, name) in [
        (Extension::StartTls, "STARTTLS"),
        (Extension::EightBitMime, "8BITMIME"),
        (Extension::SmtpUtfEight, "SMTPUTF8"),
    ] {
        if info.supports_feature(ext) {
            out.push(name.to_owned());
        }
    }
    let auth: Vec<&str> =
        [(Mechanism::Plain, "PLAIN"), (Mechanism::Login, "LOGIN"), (Mechanism::Xoauth2, "XOAUTH2")]
            .into_iter()
            .filter(|(m, _)| info.supports_auth_mechanism(*m))
            .map(|(_, n)| n)
            .collect();
    if !auth.is_empty() {
        out.push(format!("AUTH {}", auth.join(" ")));
    }
    out.join(" ")
}
