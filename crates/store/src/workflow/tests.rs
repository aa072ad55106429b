use super::*;
use crate::{MvObject, MvWrite, SyncBatch};

fn message(to: &str, id: &str) -> NewMessage {
    NewMessage {
        activity: "notify".into(),
        recipient_role: "target".into(),
        sender: "syncctl@corp.example.com".into(),
        recipient: to.into(),
        subject: "Welcome".into(),
        text_body: "Hello".into(),
        html_body: None,
        message_id: id.into(),
    }
}

fn request(mv: MvId, messages: Vec<NewMessage>) -> NewRequest {
    NewRequest {
        mv_id: mv,
        object: format!("User {mv}"),
        set_name: "sales".into(),
        transition: Transition::In,
        policy: "joined-sales".into(),
        workflow: "welcome".into(),
        error: None,
        messages,
    }
}

fn mv(id: MvId) -> MvWrite {
    MvWrite {
        object: MvObject {
            id,
            object_type: "person".into(),
            attributes: Default::default(),
            provenance: Default::default(),
            created_at: 1,
            changed_at: 1,
        },
        join_keys: vec![],
    }
}

#[tokio::test]
async fn workflow_rows_commit_with_the_sync_batch() {
    let store = Store::open_in_memory().await.unwrap();
    let run = store.start_run("delta-sync", None, "corp", 1).await.unwrap();
    let batch = SyncBatch {
        mv_writes: vec![mv(7)],
        workflow: WorkflowWrites {
            entered: vec![("sales".into(), 7)],
            requests: vec![request(7, vec![message("a@x.test", "m1@x"), message("b@x.test", "m2@x")])],
            ..WorkflowWrites::default()
        },
        ..SyncBatch::default()
    };
    store.write_sync_batch(run, &batch, 100).await.unwrap();
    assert_eq!(store.requests_of_runs(&[run]).await.unwrap(), 1);
    assert_eq!(store.requests_of_runs(&[run + 1]).await.unwrap(), 0);
    assert_eq!(store.set_members("sales").await.unwrap(), vec![7]);
    assert_eq!(store.memberships_of(&[7, 8]).await.unwrap(), vec![(7, "sales".to_owned())]);
    let reqs = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.mv_id, r.status.as_str(), r.messages, r.delivered, r.run_id, r.created_at),
        (7, "pending", 2, 0, Some(run), 100)
    );
    let due = store.mail_due(100, 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.recipient.as_str()).collect::<Vec<_>>(), ["a@x.test", "b@x.test"]);
    assert!(due.iter().all(|m| m.status == MailStatus::Queued && m.request_id == Some(r.id)));

    // A batch that fails leaves neither the metaverse change nor the workflow rows: the same
    // Message-ID again breaks the UNIQUE constraint inside the transaction.
    let bad = SyncBatch {
        mv_writes: vec![mv(8)],
        workflow: WorkflowWrites {
            entered: vec![("sales".into(), 8)],
            requests: vec![request(8, vec![message("c@x.test", "m1@x")])],
            ..WorkflowWrites::default()
        },
        ..SyncBatch::default()
    };
    assert!(store.write_sync_batch(run, &bad, 200).await.is_err());
    assert_eq!(store.set_members("sales").await.unwrap(), vec![7]);
    assert!(store.mv_by_ids(&[8]).await.unwrap().is_empty());
    assert_eq!(store.requests(&RequestFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn attempts_retries_dead_letters_and_the_request_status() {
    let store = Store::open_in_memory().await.unwrap();
    let w = WorkflowWrites {
        requests: vec![request(1, vec![message("a@x.test", "a@x"), message("b@x.test", "b@x")])],
        ..WorkflowWrites::default()
    };
    store.write_workflow(&w, None, 10).await.unwrap();
    let due = store.mail_due(10, 10).await.unwrap();
    let (a, b) = (due[0].id, due[1].id);
    assert!(store.mail_due(9, 10).await.unwrap().is_empty(), "nothing is due before it was queued");

    // a is delivered.
    let t = store.mail_begin_attempt(a, 20).await.unwrap();
    store.mail_delivered(a, t, "250 2.0.0 OK", "transcript a", 21).await.unwrap();
    // b fails and is queued again for 1000.
    let t = store.mail_begin_attempt(b, 20).await.unwrap();
    store
        .mail_failed(b, t, AttemptOutcome::Transient, "connection refused", "t", Some(1000), 22)
        .await
        .unwrap();
    let reqs = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!(reqs[0].status, "failed");
    assert_eq!(reqs[0].error.as_deref(), Some("last delivery error: connection refused"));
    assert_eq!(store.mail_due(999, 10).await.unwrap().len(), 0);
    let due = store.mail_due(1000, 10).await.unwrap();
    assert_eq!((due.len(), due[0].id, due[0].attempts), (1, b, 1));

    // b is refused for good: dead letter.
    let t = store.mail_begin_attempt(b, 1000).await.unwrap();
    store.mail_failed(b, t, AttemptOutcome::Permanent, "550 5.7.1 no", "t2", None, 1001).await.unwrap();
    let m = &store.mail_by_ids(&[b]).await.unwrap()[0];
    assert_eq!(
        (m.status, m.attempts, m.dead_at, m.last_reply.as_deref()),
        (MailStatus::DeadLetter, 2, Some(1001), Some("550 5.7.1 no"))
    );
    assert!(store.mail_due(i64::MAX, 10).await.unwrap().is_empty(), "a dead letter is never due");
    let reqs = store
        .requests(&RequestFilter { status: Some("dead-letter".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(reqs.len(), 1);
    let attempts = store.mail_attempts(b).await.unwrap();
    assert_eq!(
        attempts.iter().map(|x| (x.outcome, x.reply.as_deref())).collect::<Vec<_>>(),
        [
            (AttemptOutcome::Transient, Some("connection refused")),
            (AttemptOutcome::Permanent, Some("550 5.7.1 no"))
        ]
    );

    // mail retry: queued again, due now, attempts back at 0; then delivered.
    assert_eq!(store.mail_requeue(&[], 2000).await.unwrap(), vec![b]);
    let due = store.mail_due(2000, 10).await.unwrap();
    assert_eq!((due[0].id, due[0].attempts, due[0].status), (b, 0, MailStatus::Queued));
    let t = store.mail_begin_attempt(b, 2000).await.unwrap();
    store.mail_delivered(b, t, "250 ok", "t3", 2001).await.unwrap();
    let reqs = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!((reqs[0].status.as_str(), reqs[0].delivered, reqs[0].updated_at), ("delivered", 2, 2001));

    // Purge: delivered messages older than 2001 go (only a), with their attempts.
    assert_eq!(store.mail_purge(&[MailStatus::Delivered], 2001).await.unwrap(), 1);
    assert!(store.mail_attempts(a).await.unwrap().is_empty());
    assert_eq!(store.mail_list(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_attempt_left_in_progress_is_due_again_and_closed_as_interrupted() {
    let store = Store::open_in_memory().await.unwrap();
    let ids = store
        .write_workflow(
            &WorkflowWrites { messages: vec![message("a@x.test", "a@x")], ..Default::default() },
            None,
            1,
        )
        .await
        .unwrap();
    let first = store.mail_begin_attempt(ids[0], 5).await.unwrap();
    // The process dies here. The next delivery run finds the message `sending`.
    let due = store.mail_due(6, 10).await.unwrap();
    assert_eq!((due.len(), due[0].status), (1, MailStatus::Sending));
    let second = store.mail_begin_attempt(ids[0], 7).await.unwrap();
    store.mail_delivered(ids[0], second, "250 ok", "", 8).await.unwrap();
    let attempts = store.mail_attempts(ids[0]).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.id, a.outcome)).collect::<Vec<_>>(),
        [(first, AttemptOutcome::Interrupted), (second, AttemptOutcome::Delivered)]
    );
}

#[tokio::test]
async fn requests_filter_by_status_and_object() {
    let store = Store::open_in_memory().await.unwrap();
    let mut failing = request(2, vec![]);
    failing.object = "Bob_Brown 100%".into();
    failing.error = Some("the manager has no mail address".into());
    let w = WorkflowWrites {
        requests: vec![request(1, vec![message("a@x.test", "a@x")]), failing],
        ..WorkflowWrites::default()
    };
    store.write_workflow(&w, None, 10).await.unwrap();
    let all = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| (r.mv_id, r.status.as_str())).collect::<Vec<_>>(),
        [(2, "failed"), (1, "pending")]
    );
    let by = |status: Option<&str>, object: Option<&str>| {
        let store = store.clone();
        let filter =
            RequestFilter { status: status.map(Into::into), object: object.map(Into::into), limit: 0 };
        async move { store.requests(&filter).await.unwrap().iter().map(|r| r.mv_id).collect::<Vec<_>>() }
    };
    assert_eq!(by(Some("pending"), None).await, [1]);
    assert_eq!(by(Some("delivered"), None).await, Vec::<i64>::new());
    assert_eq!(by(None, Some("2")).await, [2]);
    assert_eq!(by(None, Some("mv:1")).await, [1]);
    assert_eq!(by(None, Some("user 1")).await, [1]);
    assert_eq!(by(None, Some("bob_")).await, [2]);
    // `%` and `_` are matched literally.
    assert_eq!(by(None, Some("u_e")).await, Vec::<i64>::new(), "`u_e` would match `User 1` as a pattern");
    assert_eq!(by(None, Some("100%")).await, [2]);
    assert_eq!(by(Some("failed"), Some("user")).await, Vec::<i64>::new());
}

#[tokio::test]
async fn sets_are_replaced_dropped_and_pruned() {
    let store = Store::open_in_memory().await.unwrap();
    let run = store.start_run("delta-sync", None, "corp", 1).await.unwrap();
    store
        .write_sync_batch(run, &SyncBatch { mv_writes: vec![mv(1), mv(2)], ..Default::default() }, 1)
        .await
        .unwrap();
    store.replace_set("sales", "fp1", &[1, 2, 3], 5).await.unwrap();
    assert_eq!(store.set_definitions().await.unwrap(), vec![("sales".to_owned(), "fp1".to_owned())]);
    assert_eq!(store.set_members("sales").await.unwrap(), vec![1, 2, 3]);
    // 3 is not in the metaverse.
    assert_eq!(store.prune_set_members().await.unwrap(), 1);
    store.replace_set("sales", "fp2", &[2], 6).await.unwrap();
    assert_eq!(store.set_members("sales").await.unwrap(), vec![2]);
    assert_eq!(store.set_definitions().await.unwrap(), vec![("sales".to_owned(), "fp2".to_owned())]);
    assert_eq!(store.mv_ids_after(0, 1).await.unwrap(), vec![1]);
    assert_eq!(store.mv_ids_after(1, 10).await.unwrap(), vec![2]);
    store.drop_set("sales").await.unwrap();
    assert!(store.set_definitions().await.unwrap().is_empty());
    assert!(store.set_members("sales").await.unwrap().is_empty());
}
