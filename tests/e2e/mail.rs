//! Notification workflows against a real SMTP server on loopback (aiosmtpd, started by
//! `tests/peers/smtp.sh`: STARTTLS required, then AUTH): set transitions mail the user and the
//! manager, the outbox survives the relay going away and syncctl being killed, permanent
//! refusals go to the dead-letter list and `mail retry` sends them, configuration mistakes give
//! clear errors, and the SMTP password appears in no output, log or database row.
//!
//! The directory is an LDIF export read by the LDIF connector (the same AD objects and default
//! rules as a live AD read): changing the file and running a cycle moves users between sets.
//! One test does the same against the Samba AD DC.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use syncctl_store::Store;
use syncctl_tests::*;

/// One person of the export (managed by the boss): name (also the mail's local part) and
/// department.
struct Person<'a> {
    name: &'a str,
    department: &'a str,
}

/// An AD export of `people` and their boss, every address tagged with `token`.
fn export(token: &str, people: &[Person<'_>]) -> String {
    let guid = |n: usize| {
        let mut b = [0u8; 16];
        b[0] = u8::try_from(n).unwrap();
        b[15] = 0x5a;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let boss_dn = "CN=Boss,OU=Staff,DC=corp,DC=example,DC=com";
    let mut s = format!(
        "dn: {boss_dn}\nobjectClass: user\nobjectGUID:: {}\nsAMAccountName: boss\ndisplayName: The Boss\n\
         givenName: Boss\nmail: boss.{token}@corp.example.com\ndepartment: Management\n\n",
        guid(0)
    );
    for (i, p) in people.iter().enumerate() {
        s.push_str(&format!(
            "dn: CN={name},OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: user\nobjectGUID:: {g}\n\
             sAMAccountName: {name}\ndisplayName: {name} Person\ngivenName: {name}\n\
             mail: {name}.{token}@corp.example.com\ndepartment: {dept}\nmanager: {boss_dn}\n\n",
            name = p.name,
            g = guid(i + 1),
            dept = p.department
        ));
    }
    s
}

pub(crate) const MODEL: &str = r#"
[[sets]]
name = "sales"
object_type = "person"
criteria = 'department == "Sales"'

[[policies]]
name = "joined-sales"
set = "sales"
transition = "in"
workflow = "welcome"

[[policies]]
name = "left-sales"
set = "sales"
transition = "out"
workflow = "goodbye"

[[workflows]]
name = "welcome"
[[workflows.activities]]
name = "tell the user and the manager"
recipients = ["target", "manager"]
subject = "Welcome to Sales, {{ target.displayName }}"
text = """Dear {{ recipient.role }},
{{ target.givenName }} ({{ target.mail }}) joins the Sales team; manager: {{ manager.displayName }}."""
html = "<p>{{ target.displayName }} joins <b>Sales</b></p>"

[[workflows]]
name = "goodbye"
[[workflows.activities]]
recipients = ["target"]
subject = "You left Sales, {{ target.givenName }}"
text = "Goodbye from Sales."
"#;

/// A test directory with a config: the LDIF connector, the model above, and `mail` as the
/// `[mail]` section.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(mail: &str) -> Self {
        Self::with_connector("name = \"corp\"\ntype = \"ldif\"\npath = \"corp.ldif\"\n", mail)
    }

    /// The same with another `[[connectors]]` table.
    fn with_connector(connector: &str, mail: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("syncctl.toml");
        std::fs::write(
            &config,
            format!("[store]\npath = \"syncctl.db\"\n\n[[connectors]]\n{connector}\n{mail}\n{MODEL}"),
        )
        .unwrap();
        Self { dir, config }
    }

    fn directory(&self, ldif: &str) {
        std::fs::write(self.dir.path().join("corp.ldif"), ldif).unwrap();
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("syncctl.db")
    }

    /// Runs syncctl with these arguments (and -vv: debug logs, SMTP transcripts included).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(syncctl_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("-vv")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// Runs syncctl and requires exit 0.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "syncctl {args:?} exited {:?}:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }
}

/// `[mail]` for an SMTP server: STARTTLS on its submission port, AUTH, its CA.
pub(crate) fn mail_section(smtp: &Smtp, extra: &str) -> String {
    format!(
        "[mail]\nsender = \"syncctl@corp.example.com\"\n{extra}\n[mail.smtp]\nhost = \"{}\"\nport = {}\nsecurity = \"starttls\"\n\
         username = \"{}\"\npassword_file = \"{}\"\nca_file = \"{}\"\ntimeout_seconds = 10\n",
        smtp.host,
        smtp.port,
        smtp.user,
        smtp.password_file.display(),
        smtp.ca.display()
    )
}

/// The `Message-ID`s stored for recipients containing `token`, sorted.
fn ids_to(smtp: &Smtp, token: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        smtp.messages_to(token).iter().map(|m| m.header("Message-ID").unwrap()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_user_moved_into_a_department_set_mails_the_user_and_the_manager_once_and_moving_out_fires_the_out_policy()
 {
    let smtp = smtp();
    let t = unique("m");
    let s = Setup::new(&mail_section(&smtp, ""));
    let alice = format!("alice.{t}@corp.example.com");
    let boss = format!("boss.{t}@corp.example.com");
    s.directory(&export(&t, &[Person { name: "alice", department: "Engineering" }]));
    s.ok(&["cycle"]);
    assert!(smtp.messages_to(&t).is_empty(), "nobody entered a set");

    s.directory(&export(&t, &[Person { name: "alice", department: "Sales" }]));
    let out = s.ok(&["cycle"]);
    assert!(out.contains("1 requests made by set transitions"), "{out}");
    let to_alice = smtp.messages_to(&alice);
    let to_boss = smtp.messages_to(&boss);
    assert_eq!((to_alice.len(), to_boss.len()), (1, 1), "exactly one mail each");
    for (m, role) in [(&to_alice[0], "target"), (&to_boss[0], "manager")] {
        assert_eq!(m.header("Subject").as_deref(), Some("Welcome to Sales, alice Person"));
        assert_eq!(m.header("From").as_deref(), Some("syncctl@corp.example.com"));
        assert_eq!(m.mail_from, "syncctl@corp.example.com");
        assert!(m.tls, "sent over STARTTLS");
        assert_eq!(m.auth_user.as_deref(), Some(smtp.user.as_str()));
        let body = m.raw.replace("=\r\n", "");
        assert!(
            body.contains(&format!(
                "Dear {role},\r\nalice ({alice}) joins the Sales team; manager: The Boss."
            )),
            "{}",
            m.raw
        );
        assert!(body.contains("<p>alice Person joins <b>Sales</b></p>"), "{}", m.raw);
    }
    // Another cycle with nothing changed sends nothing again.
    s.ok(&["cycle"]);
    assert_eq!(smtp.messages_to(&t).len(), 2);

    let requests = s.json(&["requests", "--object", "alice"]);
    let list = requests.as_array().unwrap();
    assert_eq!(list.len(), 1, "{requests}");
    assert_eq!((list[0]["status"].as_str(), list[0]["delivered"].as_i64()), (Some("delivered"), Some(2)));

    s.directory(&export(&t, &[Person { name: "alice", department: "Marketing" }]));
    s.ok(&["cycle"]);
    let to_alice = smtp.messages_to(&alice);
    assert_eq!(to_alice.len(), 2);
    assert!(
        to_alice.iter().any(|m| m.header("Subject").as_deref() == Some("You left Sales, alice")),
        "{to_alice:?}"
    );
    assert_eq!(smtp.messages_to(&boss).len(), 1, "the goodbye goes to the user only");
    let requests = s.json(&["requests"]);
    let policies: Vec<&str> =
        requests.as_array().unwrap().iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["left-sales", "joined-sales"]);
}

/// The acceptance test above against Active Directory itself: the Samba AD DC read over LDAPS
/// by an `ldap` connector scoped to the test's own OU, the user's department changed in AD.
#[tokio::test]
async fn in_active_directory_a_user_moved_into_a_department_set_mails_the_user_and_the_manager() {
    let peer = samba();
    let smtp = smtp();
    let mut ldap = admin(&peer).await;
    let t = unique("ad");
    let ou = make_ou(&mut ldap, &peer.base, &t).await;
    // sAMAccountName: at most 20 characters, unique in the domain.
    let tail: String = t.chars().rev().filter(char::is_ascii_alphanumeric).take(15).collect();
    let boss_dn = format!("CN=Boss,{ou}");
    let alice_dn = format!("CN=Alice,{ou}");
    let (boss_mail, alice_mail) =
        (format!("boss.{t}@corp.example.com"), format!("alice.{t}@corp.example.com"));
    add(
        &mut ldap,
        &boss_dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[&format!("b{tail}")]),
            ("displayName", &["The Boss"]),
            ("mail", &[&boss_mail]),
        ],
    )
    .await;
    add(
        &mut ldap,
        &alice_dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[&format!("a{tail}")]),
            ("givenName", &["alice"]),
            ("displayName", &["alice Person"]),
            ("mail", &[&alice_mail]),
            ("department", &["Engineering"]),
            ("manager", &[&boss_dn]),
        ],
    )
    .await;
    let connector = format!(
        "name = \"corp\"\ntype = \"ldap\"\nflavor = \"ad\"\nurl = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\n\
         password_file = \"{}\"\nbase_dn = \"{ou}\"\nobject_types = [\"user\"]\n",
        peer.ldaps_url,
        peer.ca.display(),
        peer.bind_dn,
        peer.password_file.display()
    );
    let s = Setup::with_connector(&connector, &mail_section(&smtp, ""));
    s.ok(&["cycle"]);
    assert!(smtp.messages_to(&t).is_empty(), "nobody entered a set");

    replace(&mut ldap, &alice_dn, "department", &["Sales"]).await;
    s.ok(&["cycle"]);
    let (to_alice, to_boss) = (smtp.messages_to(&alice_mail), smtp.messages_to(&boss_mail));
    assert_eq!((to_alice.len(), to_boss.len()), (1, 1), "exactly one mail each");
    for m in [&to_alice[0], &to_boss[0]] {
        assert_eq!(m.header("Subject").as_deref(), Some("Welcome to Sales, alice Person"));
        assert!(m.raw.replace("=\r\n", "").contains("joins the Sales team; manager: The Boss."), "{}", m.raw);
    }

    replace(&mut ldap, &alice_dn, "department", &["Marketing"]).await;
    s.ok(&["cycle"]);
    let to_alice = smtp.messages_to(&alice_mail);
    assert_eq!(to_alice.len(), 2);
    assert!(to_alice.iter().any(|m| m.header("Subject").as_deref() == Some("You left Sales, alice")));
    assert_eq!(smtp.messages_to(&boss_mail).len(), 1);
    let policies: Vec<String> = s
        .json(&["requests"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["policy"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(policies, ["left-sales", "joined-sales"]);
}

#[tokio::test]
async fn the_server_stopped_during_delivery_loses_nothing_and_sends_nothing_twice() {
    // Each message waits 400 ms in the server before it is stored and answered.
    let mut server = PrivateSmtp::start("starttls", 400);
    let t = unique("d");
    let s = Setup::new(&mail_section(&server.smtp, "retry_initial_seconds = 1\nretry_max_seconds = 1\n"));
    let names = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let people = |dept| names.iter().map(|n| Person { name: n, department: dept }).collect::<Vec<_>>();
    s.directory(&export(&t, &people("Engineering")));
    s.ok(&["cycle"]);
    s.directory(&export(&t, &people("Sales")));
    // sync makes the requests and queues the mail, without delivering it.
    s.ok(&["import", "--connector", "corp", "--full"]);
    s.ok(&["sync"]);
    let queued = s.json(&["mail", "list", "--status", "queued"]);
    assert_eq!(queued.as_array().unwrap().len(), 12, "6 users and their manager");

    let mut child = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&s.config)
        .args(["mail", "send"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded: a loaded machine is slow to start) until two messages are stored, then
    // stop the server under it.
    for _ in 0..3000 {
        if server.smtp.messages().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    let status = child.wait().unwrap();
    let stored = server.smtp.messages().len();
    assert!((2..12).contains(&stored), "the server stopped half-way ({stored} stored)");
    assert_eq!(status.code(), Some(1), "some messages could not be delivered");
    let store = Store::open(&s.db()).await.unwrap();
    let delivered = store.mail_list(Some(syncctl_store::MailStatus::Delivered), 100).await.unwrap();
    let waiting = store.mail_list(Some(syncctl_store::MailStatus::Queued), 100).await.unwrap();
    assert_eq!(
        (delivered.len(), waiting.len()),
        (stored, 12 - stored),
        "delivered is exactly what was stored"
    );
    assert!(waiting.iter().all(|m| m.attempts == 1 && m.last_reply.is_some()), "{waiting:?}");
    store.close().await;

    // Back, without the delay: the queued messages go once the backoff is over.
    server.restart("starttls", 0);
    for _ in 0..30 {
        let left = s.json(&["mail", "list", "--status", "queued"]);
        if left.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let _ = s.run(&["mail", "send"]);
    }
    let ids = ids_to(&server.smtp, &t);
    let mut unique_ids = ids.clone();
    unique_ids.dedup();
    assert_eq!(ids.len(), 12, "none lost: {ids:?}");
    assert_eq!(unique_ids.len(), 12, "none twice: {ids:?}");
    let requests = s.json(&["requests", "--status", "delivered"]);
    assert_eq!(requests.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn a_permanent_refusal_goes_to_the_dead_letter_list_after_the_configured_attempts_and_mail_retry_sends_it()
 {
    let mut server = PrivateSmtp::start("reject", 0);
    let t = unique("r");
    let s = Setup::new(&mail_section(&server.smtp, "max_attempts = 2\nretry_initial_seconds = 0\n"));
    s.directory(&export(&t, &[Person { name: "gil", department: "Engineering" }]));
    s.ok(&["cycle"]);
    s.directory(&export(&t, &[Person { name: "gil", department: "Sales" }]));
    let out = s.run(&["cycle"]);
    assert_eq!(out.status.code(), Some(1), "the cycle completed, its mail did not");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 to retry") && stdout.contains("550 5.7.1"), "{stdout}");
    // The second attempt is the last.
    let out = s.run(&["mail", "send"]);
    assert_eq!(out.status.code(), Some(1));
    let dead = s.json(&["mail", "list", "--status", "dead-letter"]);
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 2);
    for m in dead {
        assert_eq!(m["attempts"].as_i64(), Some(2));
        let reply = m["last_reply"].as_str().unwrap();
        assert!(reply.contains("550 5.7.1 Recipient rejected by policy"), "{reply}");
    }
    let shown = s.ok(&["mail", "show", &dead[0]["id"].to_string()]);
    assert!(shown.contains("permanent") && shown.contains("<< 550 5.7.1"), "{shown}");
    assert_eq!(s.json(&["requests", "--status", "dead-letter"]).as_array().unwrap().len(), 1);
    // Nothing is retried on its own.
    assert!(s.ok(&["mail", "send"]).contains("no message is due"));
    assert!(server.smtp.messages_to(&t).is_empty());

    // The relay accepts again; `mail retry` sends both, once.
    server.restart("starttls", 0);
    let out = s.ok(&["mail", "retry", "--all"]);
    assert!(out.contains("2 delivered"), "{out}");
    assert_eq!(ids_to(&server.smtp, &t).len(), 2);
    assert_eq!(s.json(&["requests", "--status", "delivered"]).as_array().unwrap().len(), 1);
    let out = s.run(&["mail", "retry", "--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no message is due"));
    assert_eq!(ids_to(&server.smtp, &t).len(), 2);
}

/// `mail test` through a relay configured by `mail`; (exit code, stdout + stderr).
fn mail_test(mail: &str, to: &str) -> (Option<i32>, String) {
    let s = Setup::new(mail);
    let out = s.run(&["mail", "test", "--to", to]);
    (
        out.status.code(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn wrong_password_unverifiable_certificate_and_missing_starttls_give_clear_errors_and_tls_and_plain_work()
 {
    let smtp = smtp();
    let t = unique("e");
    let to = format!("test.{t}@corp.example.com");
    let good = mail_section(&smtp, "");

    let (code, out) = mail_test(&good, &to);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("test message delivered") && out.contains(">> STARTTLS"), "{out}");
    assert_eq!(smtp.messages_to(&to).len(), 1);

    // Wrong password.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let (code, out) = mail_test(
        &good.replace(&smtp.password_file.display().to_string(), &wrong.display().to_string()),
        &to,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("authentication refused by 127.0.0.1") && out.contains("535"), "{out}");
    assert!(out.contains("hint: the relay refused the account"), "{out}");
    assert!(!out.contains("not-the-password") && !out.contains(&smtp.password()), "{out}");

    // A certificate that does not verify: the system roots do not know the test CA, and
    // another CA does not sign it.
    let (code, out) = mail_test(&good.replace(&format!("ca_file = \"{}\"\n", smtp.ca.display()), ""), &to);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("TLS handshake failed with 127.0.0.1") && out.contains("UnknownIssuer"), "{out}");
    assert!(out.contains("set [mail.smtp] ca_file"), "{out}");
    let other = PrivateSmtp::start("notls", 0);
    let (code, out) =
        mail_test(&good.replace(&smtp.ca.display().to_string(), &other.smtp.ca.display().to_string()), &to);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("TLS handshake failed") && out.contains("certificate"), "{out}");

    // A server that offers no STARTTLS when it is required.
    let (code, out) = mail_test(&mail_section(&other.smtp, ""), &to);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("STARTTLS is not offered by") && out.contains("does not offer STARTTLS"), "{out}");
    assert!(other.smtp.messages().is_empty());
    // The same server with security = "plain" written out: AUTH in the clear, delivered.
    let (code, out) = mail_test(
        &mail_section(&other.smtp, "").replace("security = \"starttls\"", "security = \"plain\""),
        &to,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("security plain (Office 365 expects starttls)"), "the relay-rule warning: {out}");
    assert_eq!(other.smtp.messages_to(&to).len(), 1);
    assert!(!other.smtp.messages_to(&to)[0].tls);

    // Implicit TLS on the second port.
    let tls = good
        .replace(&format!("port = {}", smtp.port), &format!("port = {}", smtp.tls_port))
        .replace("security = \"starttls\"", "security = \"tls\"");
    let (code, out) = mail_test(&tls, &to);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TLS from the first byte"), "{out}");
    let got = smtp.messages_to(&to);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.tls));
}

/// Every table of the database, every row, every column, as text (blobs lossily).
async fn database_text(db: &Path) -> String {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(&pool)
            .await
            .unwrap();
        for row in rows {
            use sqlx::{Row as _, ValueRef as _};
            for (i, _) in row.columns().iter().enumerate() {
                let raw = row.try_get_raw(i).unwrap();
                if raw.is_null() {
                    continue;
                }
                if let Ok(t) = row.try_get::<String, _>(i) {
                    out.push_str(&t);
                } else if let Ok(b) = row.try_get::<Vec<u8>, _>(i) {
                    out.push_str(&String::from_utf8_lossy(&b));
                } else if let Ok(n) = row.try_get::<i64, _>(i) {
                    out.push_str(&n.to_string());
                }
                out.push('\n');
            }
        }
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn the_smtp_password_is_in_no_output_log_or_database_row() {
    let smtp = smtp();
    let t = unique("p");
    let s = Setup::new(&mail_section(&smtp, "operators = [\"ops@corp.example.com\"]\n"));
    let mut seen = String::new();
    let mut record = |out: Output| {
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    };
    s.directory(&export(&t, &[Person { name: "hal", department: "Engineering" }]));
    record(s.run(&["cycle"]));
    s.directory(&export(&t, &[Person { name: "hal", department: "Sales" }]));
    record(s.run(&["-vvv", "cycle"]));
    record(s.run(&[
        "-vvv",
        "--log-format",
        "json",
        "mail",
        "test",
        "--to",
        &format!("t.{t}@corp.example.com"),
    ]));
    record(s.run(&["--json", "mail", "list"]));
    record(s.run(&["mail", "show", "1"]));
    record(s.run(&["--json", "mail", "show", "2"]));
    record(s.run(&["--json", "requests"]));
    record(s.run(&["assess", "--ldif", &s.dir.path().join("corp.ldif").display().to_string()]));
    assert_eq!(smtp.messages_to(&t).len(), 3, "the welcome to hal and the boss, and the test: {seen}");
    // The transcripts were logged (debug) and shown: AUTH is there, its credentials are not.
    assert!(seen.contains("AUTH PLAIN [credentials of"), "{seen}");

    let password = smtp.password();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forms = [
        password.clone(),
        b64(&password),
        b64(&format!("\0{}\0{password}", smtp.user)),
        b64(&format!("{}\0{}\0{password}", smtp.user, smtp.user)),
    ];
    let db = database_text(&s.db()).await;
    assert!(db.contains("AUTH PLAIN [credentials of"), "the database holds the transcripts");
    let mut files = String::new();
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    for form in &forms {
        assert!(!seen.contains(form.as_str()), "a password form is in the output");
        assert!(!db.contains(form.as_str()), "a password form is in a database row");
        assert!(!files.contains(form.as_str()), "a password form is in a file of the data directory");
    }
}

#[tokio::test]
async fn syncctl_killed_between_a_transition_and_its_delivery_delivers_each_message_exactly_once() {
    let smtp = smtp();
    let t = unique("k");
    let s = Setup::new(&mail_section(&smtp, ""));
    let names: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    let people = |dept| names.iter().map(|n| Person { name: n, department: dept }).collect::<Vec<_>>();
    s.directory(&export(&t, &people("Engineering")));
    s.ok(&["cycle"]);
    s.directory(&export(&t, &people("Sales")));
    s.ok(&["import", "--connector", "corp", "--full"]);

    // A sync with the workflows, two objects a batch, killed with SIGKILL after some batches
    // (their transitions and mail committed) and before the rest.
    let mut worker = Command::new(env!("CARGO_BIN_EXE_workflow-worker"))
        .arg(s.db())
        .arg(&s.config)
        .arg("500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut made = 0i64;
    for _ in 0..3000 {
        if let Ok(pool) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", s.db().display())).await {
            made = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM workflow_requests")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            pool.close().await;
            if made >= 4 {
                break;
            }
        }
        if worker.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.kill().unwrap();
    assert!(
        !worker.wait().unwrap().success(),
        "the worker was killed before it finished ({made} requests made)"
    );
    assert!((1..12).contains(&made), "killed half-way: {made} of 12 requests made");
    assert!(smtp.messages_to(&t).is_empty(), "nothing was delivered before the kill");

    // The next cycle finishes the sync and delivers everything, each message once.
    s.ok(&["cycle"]);
    let requests = s.json(&["requests"]);
    assert_eq!(requests.as_array().unwrap().len(), 12, "one request per transition, none lost or doubled");
    for n in &names {
        assert_eq!(smtp.messages_to(&format!("{n}.{t}@")).len(), 1, "{n}");
    }
    assert_eq!(smtp.messages_to(&format!("boss.{t}@")).len(), 12);
    let ids = ids_to(&smtp, &t);
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!((ids.len(), distinct.len()), (24, 24));
}
