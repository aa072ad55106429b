use syncctl_core::FixedClock;
use syncctl_store::{NewMessage, WorkflowWrites};

use super::*;

fn message(to: &str, id: &str, html: Option<&str>) -> NewMessage {
    NewMessage {
        activity: "notify".into(),
        recipient_role: "target".into(),
        sender: "syncctl@corp.example.com".into(),
        recipient: to.into(),
        subject: "Wélcome to Sales".into(),
        text_body: "Hello Alice".into(),
        html_body: html.map(Into::into),
        message_id: id.into(),
    }
}

async fn queued(store: &Store, messages: Vec<NewMessage>, now: i64) -> Vec<i64> {
    store.write_workflow(&WorkflowWrites { messages, ..Default::default() }, None, now).await.unwrap()
}

#[test]
fn backoff_doubles_up_to_the_cap_then_gives_up() {
    let p = RetryPolicy { max_attempts: 5, initial_delay_ms: 1000, max_delay_ms: 5000 };
    let waits: Vec<Option<i64>> = (1..=5).map(|n| p.retry_at(n, 100).map(|t| t - 100)).collect();
    assert_eq!(waits, [Some(1000), Some(2000), Some(4000), Some(5000), None]);
    let once = RetryPolicy { max_attempts: 1, ..p };
    assert_eq!(once.retry_at(1, 0), None, "one attempt: the first failure is final");
    let now = RetryPolicy { initial_delay_ms: 0, ..p };
    assert_eq!(now.retry_at(3, 7), Some(7), "no wait when configured so");
    // Huge counts do not overflow.
    assert_eq!(RetryPolicy { max_attempts: u32::MAX, ..p }.retry_at(1_000_000, 0), Some(5000));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let relay = SmtpRelay {
        host: "h".into(),
        port: 1,
        security: Security::StartTls,
        username: Some("u".into()),
        password: Some(Secret::new("hunter2-secret".into())),
        ca_file: None,
        timeout: Duration::from_secs(1),
    };
    let text = format!("{relay:?} {:?}", Transport::Smtp(relay.clone()));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("Secret([hidden])"), "{text}");
}

#[tokio::test]
async fn the_message_carries_its_stable_id_date_and_both_bodies() {
    let store = Store::open_in_memory().await.unwrap();
    // 2026-01-01T00:00:00Z
    let ids = queued(
        &store,
        vec![message("alice@corp.example.com", "abc.syncctl@corp.example.com", Some("<p>Hello</p>"))],
        1_767_225_600_000,
    )
    .await;
    let m = store.mail_by_ids(&ids).await.unwrap().remove(0);
    let (from, to, bytes) = build(&m).unwrap();
    assert_eq!(
        (from.to_string(), to.to_string()),
        ("syncctl@corp.example.com".into(), "alice@corp.example.com".into())
    );
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("Message-ID: <abc.syncctl@corp.example.com>\r\n"), "{text}");
    assert!(text.contains("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"), "{text}");
    assert!(text.contains("Auto-Submitted: auto-generated\r\n"), "{text}");
    assert!(text.contains("Subject: =?utf-8?"), "a non-ASCII subject is encoded: {text}");
    assert!(
        text.contains("multipart/alternative") && text.contains("text/html") && text.contains("text/plain"),
        "{text}"
    );
    // Built again (the next attempt): the same bytes but for the MIME boundary.
    let (_, _, again) = build(&m).unwrap();
    assert_eq!(bytes.len(), again.len());
    let mut bad = m.clone();
    bad.recipient = "not an address".into();
    assert_eq!(build(&bad).unwrap_err().kind, SmtpErrorKind::Message);
}

#[tokio::test]
async fn the_directory_sink_writes_each_message_once_under_a_stable_name() {
    let store = Store::open_in_memory().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids = queued(
        &store,
        vec![message("a@corp.example.com", "a@x", None), message("b@corp.example.com", "b@x", None)],
        10,
    )
    .await;
    let clock = FixedClock::new(20);
    let transport = Transport::Directory(dir.path().to_owned());
    let r = deliver_due(&store, &transport, &RetryPolicy::default(), &clock, 100).await.unwrap();
    assert_eq!((r.delivered(), r.retrying(), r.dead_lettered()), (2, 0, 0));
    let files = || {
        let mut f: Vec<String> = std::fs::read_dir(dir.path().join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    };
    assert_eq!(files(), [format!("{:010}.a_x.eml", ids[0]), format!("{:010}.b_x.eml", ids[1])]);
    let content = std::fs::read_to_string(dir.path().join("new").join(&files()[0])).unwrap();
    assert!(content.contains("To: a@corp.example.com") && content.contains("Hello Alice"), "{content}");
    // Nothing is due any more, and a delivered message is not queued again.
    assert!(
        deliver_due(&store, &transport, &RetryPolicy::default(), &clock, 100)
            .await
            .unwrap()
            .results
            .is_empty()
    );
    assert!(store.mail_requeue(&ids, 30).await.unwrap().is_empty());
    // A third message written to the directory by a process that died before recording it
    // (its attempt left in progress): the next run writes it again under the same name.
    let c = queued(&store, vec![message("c@corp.example.com", "c@x", None)], 40).await;
    let m = store.mail_by_ids(&c).await.unwrap().remove(0);
    let (_, _, bytes) = build(&m).unwrap();
    directory::store(dir.path(), &m, &bytes, &mut Transcript::default()).unwrap();
    store.mail_begin_attempt(c[0], 41).await.unwrap();
    assert_eq!(files().len(), 3);
    clock.advance(30);
    let r = deliver_due(&store, &transport, &RetryPolicy::default(), &clock, 100).await.unwrap();
    assert_eq!((r.delivered(), r.results[0].id), (1, c[0]));
    assert_eq!(files().len(), 3, "written again under its own name, not twice");
    let attempts = store.mail_attempts(c[0]).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Interrupted, AttemptOutcome::Delivered]
    );
    assert!(
        attempts[1].transcript.contains("the previous attempt ended with the process"),
        "{}",
        attempts[1].transcript
    );
}

#[tokio::test]
async fn a_relay_that_refuses_connections_leaves_every_message_queued_then_dead_lettered() {
    let store = Store::open_in_memory().await.unwrap();
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ids = queued(
        &store,
        vec![message("a@corp.example.com", "a@x", None), message("b@corp.example.com", "b@x", None)],
        0,
    )
    .await;
    let transport = Transport::Smtp(SmtpRelay {
        host: "127.0.0.1".into(),
        port,
        security: Security::StartTls,
        username: Some("relay@corp.example.com".into()),
        password: Some(Secret::new("pw-never-shown".into())),
        ca_file: None,
        timeout: Duration::from_secs(5),
    });
    let policy = RetryPolicy { max_attempts: 2, initial_delay_ms: 1000, max_delay_ms: 1000 };
    let clock = FixedClock::new(100);
    let r = deliver_due(&store, &transport, &policy, &clock, 10).await.unwrap();
    assert_eq!((r.delivered(), r.retrying(), r.dead_lettered()), (0, 2, 0));
    let e = r.first_error().unwrap();
    assert_eq!(e.kind, SmtpErrorKind::Connect);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(r.results.iter().all(|x| x.retry_at == Some(1100)));
    let second = store.mail_attempts(ids[1]).await.unwrap();
    assert!(second[0].transcript.contains("could not connect"), "{}", second[0].transcript);
    // Not due before the backoff; then the second failure is the last.
    assert!(deliver_due(&store, &transport, &policy, &clock, 10).await.unwrap().results.is_empty());
    clock.advance(1000);
    let r = deliver_due(&store, &transport, &policy, &clock, 10).await.unwrap();
    assert_eq!(r.dead_lettered(), 2);
    let m = store.mail_by_ids(&ids).await.unwrap();
    assert!(m.iter().all(|m| m.status == MailStatus::DeadLetter && m.attempts == 2));
    assert!(m[0].last_reply.as_deref().unwrap_or("").contains("cannot connect"), "{:?}", m[0].last_reply);
    for a in store.mail_attempts(ids[0]).await.unwrap() {
        assert!(!a.transcript.contains("pw-never-shown"));
    }
}

#[tokio::test]
async fn a_missing_ca_file_is_a_setup_error_and_touches_no_message() {
    let store = Store::open_in_memory().await.unwrap();
    let ids = queued(&store, vec![message("a@corp.example.com", "a@x", None)], 0).await;
    let transport = Transport::Smtp(SmtpRelay {
        host: "127.0.0.1".into(),
        port: 1,
        security: Security::Tls,
        username: None,
        password: None,
        ca_file: Some("/nonexistent/ca.pem".into()),
        timeout: Duration::from_secs(1),
    });
    let e =
        deliver_due(&store, &transport, &RetryPolicy::default(), &FixedClock::new(1), 10).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let m = store.mail_by_ids(&ids).await.unwrap();
    assert_eq!((m[0].status, m[0].attempts), (MailStatus::Queued, 0));
    assert!(store.mail_attempts(ids[0]).await.unwrap().is_empty());
}
