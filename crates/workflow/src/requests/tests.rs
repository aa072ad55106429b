use serde::Deserialize;
use syncctl_core::{AttrValues, Attributes};
use syncctl_store::{MvWrite, RequestFilter};

use super::*;
use crate::config::{PolicyConfig, SetConfig, WorkflowConfig};

#[derive(Deserialize)]
struct File {
    sets: Vec<SetConfig>,
    policies: Vec<PolicyConfig>,
    workflows: Vec<WorkflowConfig>,
}

const CONFIG: &str = r#"
[[sets]]
name = "sales"
object_type = "person"
criteria = 'department == "Sales"'

[[sets]]
name = "helpdesk"
criteria = 'title == "Helpdesk"'

[[sets]]
name = "expiring"
criteria = 'isPresent(accountExpires) && accountExpires > nowFileTime && accountExpires - nowFileTime < 14 * 864000000000'

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

[[policies]]
name = "expiring-soon"
set = "expiring"
transition = "in"
workflow = "expiry"

[[workflows]]
name = "welcome"
[[workflows.activities]]
name = "welcome"
recipients = ["target", "manager"]
subject = "{{ target.displayName }} joined {{ set.name }}"
text = "Dear {{ recipient.role }}: {{ target.displayName }} is now in Sales (manager: {{ manager.displayName }})."

[[workflows]]
name = "goodbye"
[[workflows.activities]]
recipients = ["target", "set:helpdesk"]
subject = "{{ target.displayName }} left {{ set.name }}"
text = "Bye"

[[workflows]]
name = "expiry"
[[workflows.activities]]
recipients = ["manager"]
subject = "The account of {{ target.displayName }} expires soon"
text = "Expires: {{ target.accountExpires }}"
"#;

fn workflows() -> Arc<Workflows> {
    let f: File = toml::from_str(CONFIG).unwrap();
    Arc::new(
        Workflows::compile(&f.sets, &f.policies, &f.workflows, Some("syncctl@corp.example.com")).unwrap(),
    )
}

fn text(v: &str) -> AttrValues {
    AttrValues::String(vec![v.into()])
}

fn person(id: MvId, name: &str, attrs: &[(&str, AttrValues)]) -> MvObject {
    let mut attributes = Attributes::new();
    attributes.insert("displayName", text(name));
    for (k, v) in attrs {
        attributes.insert(*k, v.clone());
    }
    MvObject {
        id,
        object_type: "person".into(),
        attributes,
        provenance: Default::default(),
        created_at: 1,
        changed_at: 1,
    }
}

fn manager(id: MvId) -> AttrValues {
    AttrValues::Reference(vec![format!("mv:{id}")])
}

/// One sync batch through the hook, then written, as the engine does.
async fn batch(
    store: &Store,
    hook: &WorkflowHook,
    writes: Vec<MvObject>,
    deletes: Vec<MvId>,
    now: i64,
) -> WorkflowWrites {
    let run = store.start_run("delta-sync", None, "corp", now).await.unwrap();
    let mut b = SyncBatch {
        mv_writes: writes.into_iter().map(|object| MvWrite { object, join_keys: vec![] }).collect(),
        mv_deletes: deletes,
        ..SyncBatch::default()
    };
    hook.before_write(store, &mut b, run, now).await.unwrap();
    store.write_sync_batch(run, &b, now).await.unwrap();
    b.workflow
}

fn recipients(w: &WorkflowWrites) -> Vec<Vec<(String, String)>> {
    w.requests
        .iter()
        .map(|r| r.messages.iter().map(|m| (m.recipient_role.clone(), m.recipient.clone())).collect())
        .collect()
}

#[tokio::test]
async fn moving_into_and_out_of_a_set_mails_the_user_the_manager_and_the_helpdesk() {
    let store = Store::open_in_memory().await.unwrap();
    let wf = workflows();
    assert_eq!(prepare_sets(&store, &wf, 1).await.unwrap().len(), 3, "three new sets, evaluated");
    let hook = WorkflowHook::new(wf.clone());
    let alice = |dept: &str| {
        person(
            1,
            "Alice Anders",
            &[("department", text(dept)), ("mail", text("alice@corp.example.com")), ("manager", manager(2))],
        )
    };
    let bob = person(
        2,
        "Bob Brown",
        &[("department", text("Engineering")), ("mail", text("bob@corp.example.com"))],
    );
    let carol =
        person(3, "Carol Help", &[("title", text("Helpdesk")), ("mail", text("helpdesk@corp.example.com"))]);

    // Projected outside the set: no request (carol enters `helpdesk`, which no policy watches).
    let w = batch(&store, &hook, vec![alice("Engineering"), bob.clone(), carol], vec![], 10).await;
    assert!(w.requests.is_empty(), "{:?}", w.requests);
    assert_eq!(w.entered, vec![("helpdesk".to_owned(), 3)]);

    // Alice moves into Sales: one request, one mail to her and one to her manager.
    let w = batch(&store, &hook, vec![alice("Sales")], vec![], 20).await;
    assert_eq!(w.entered, vec![("sales".to_owned(), 1)]);
    assert_eq!(w.requests.len(), 1);
    let r = &w.requests[0];
    assert_eq!(
        (r.policy.as_str(), r.transition, r.object.as_str(), r.error.as_deref()),
        ("joined-sales", Transition::In, "Alice Anders", None)
    );
    assert_eq!(
        recipients(&w),
        [vec![
            ("target".to_owned(), "alice@corp.example.com".to_owned()),
            ("manager".to_owned(), "bob@corp.example.com".to_owned())
        ]]
    );
    assert_eq!(r.messages[0].subject, "Alice Anders joined sales");
    assert_eq!(r.messages[1].text_body, "Dear manager: Alice Anders is now in Sales (manager: Bob Brown).");
    assert_ne!(r.messages[0].message_id, r.messages[1].message_id);
    assert_eq!(store.set_members("sales").await.unwrap(), vec![1]);

    // The same object written again unchanged in Sales: no transition, no request.
    let w = batch(&store, &hook, vec![alice("Sales")], vec![], 30).await;
    assert!(w.requests.is_empty() && w.entered.is_empty() && w.left.is_empty());

    // Moving out fires the transition-out policy: to her and to the helpdesk set's members.
    let w = batch(&store, &hook, vec![alice("Marketing")], vec![], 40).await;
    assert_eq!(w.left, vec![("sales".to_owned(), 1)]);
    assert_eq!(
        recipients(&w),
        [vec![
            ("target".to_owned(), "alice@corp.example.com".to_owned()),
            ("set:helpdesk".to_owned(), "helpdesk@corp.example.com".to_owned())
        ]]
    );
    assert_eq!(w.requests[0].policy, "left-sales");

    // Back in, then deleted: leaving by deletion is a transition out too, rendered from the
    // object as it was.
    batch(&store, &hook, vec![alice("Sales")], vec![], 50).await;
    let w = batch(&store, &hook, vec![], vec![1], 60).await;
    assert_eq!(w.left, vec![("sales".to_owned(), 1)]);
    assert_eq!(w.requests[0].messages[0].subject, "Alice Anders left sales");
    assert!(store.set_members("sales").await.unwrap().is_empty());

    // In the store: 4 requests (in, out, in, out), 2 + 2 + 2 + 2 messages queued.
    let all = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| (r.policy.as_str(), r.messages)).collect::<Vec<_>>(),
        [("left-sales", 2), ("joined-sales", 2), ("left-sales", 2), ("joined-sales", 2)]
    );
    assert_eq!(store.mail_due(60, 100).await.unwrap().len(), 8);
}

#[tokio::test]
async fn a_recipient_without_an_address_is_recorded_on_the_request() {
    let store = Store::open_in_memory().await.unwrap();
    let wf = workflows();
    prepare_sets(&store, &wf, 1).await.unwrap();
    let hook = WorkflowHook::new(wf);
    // Dave has no mail (his primary SMTP address is used) and no manager.
    let dave = person(
        5,
        "Dave",
        &[("department", text("Sales")), ("proxyAddresses", text("SMTP:dave@corp.example.com"))],
    );
    let w = batch(&store, &hook, vec![dave], vec![], 10).await;
    let r = &w.requests[0];
    assert_eq!(recipients(&w), [vec![("target".to_owned(), "dave@corp.example.com".to_owned())]]);
    assert_eq!(r.error.as_deref(), Some("Dave has no manager in the metaverse"));
    // Erin has neither address nor manager with one.
    let frank = person(7, "Frank", &[]);
    let erin = person(6, "Erin", &[("department", text("Sales")), ("manager", manager(7))]);
    let w = batch(&store, &hook, vec![frank, erin], vec![], 20).await;
    let r = &w.requests[0];
    assert!(r.messages.is_empty());
    assert_eq!(
        r.error.as_deref(),
        Some("Erin has no mail address; the manager of Erin (Frank) has no mail address")
    );
    let listed =
        store.requests(&RequestFilter { status: Some("failed".into()), ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn a_new_set_starts_from_what_is_true_and_a_changed_one_again() {
    let store = Store::open_in_memory().await.unwrap();
    // The metaverse exists before any set: Alice is in Sales already.
    let empty = WorkflowHook::new(Arc::new(Workflows::compile(&[], &[], &[], None).unwrap()));
    let alice =
        person(1, "Alice", &[("department", text("Sales")), ("mail", text("alice@corp.example.com"))]);
    batch(&store, &empty, vec![alice.clone()], vec![], 5).await;

    let wf = workflows();
    let notes = prepare_sets(&store, &wf, 10).await.unwrap();
    assert!(
        notes.iter().any(|n| n == "set `sales` (new): 1 members, evaluated without requests"),
        "{notes:?}"
    );
    assert_eq!(store.set_members("sales").await.unwrap(), vec![1]);
    assert!(store.requests(&RequestFilter::default()).await.unwrap().is_empty(), "no request for a baseline");
    // Unchanged: nothing to do.
    assert!(prepare_sets(&store, &wf, 11).await.unwrap().is_empty());
    // Changed criteria: evaluated again, silently; a set no longer configured is dropped.
    let f: File =
        toml::from_str(&CONFIG.replace(r#"department == "Sales""#, r#"department == "Marketing""#)).unwrap();
    let changed = Workflows::compile(
        &f.sets[..1],
        &f.policies[..1],
        &f.workflows[..1],
        Some("syncctl@corp.example.com"),
    )
    .unwrap();
    let notes = prepare_sets(&store, &changed, 12).await.unwrap();
    assert!(
        notes.contains(&"set `sales` (changed criteria): 0 members, evaluated without requests".to_owned()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"set `helpdesk` is no longer configured: its membership was dropped".to_owned()),
        "{notes:?}"
    );
    assert!(store.set_members("sales").await.unwrap().is_empty());
    assert!(store.requests(&RequestFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_time_based_set_is_entered_when_the_time_comes_without_any_change() {
    let store = Store::open_in_memory().await.unwrap();
    let wf = workflows();
    // 2026-01-01T00:00:00Z; the account expires on 2026-01-21 (20 days later).
    let t0 = 1_767_225_600_000_i64;
    let day_ms = 86_400_000_i64;
    let expires_ft = (134_774_i64 * 86_400 + 1_767_225_600 + 20 * 86_400) * 10_000_000;
    prepare_sets(&store, &wf, t0).await.unwrap();
    let hook = WorkflowHook::new(wf.clone());
    let boss = person(2, "Boss", &[("mail", text("boss@corp.example.com"))]);
    let gina = person(
        1,
        "Gina",
        &[("accountExpires", AttrValues::Integer(vec![expires_ft])), ("manager", manager(2))],
    );
    let w = batch(&store, &hook, vec![gina, boss], vec![], t0).await;
    assert!(w.requests.is_empty());
    // Five days on: 15 days left, still out.
    let e = evaluate_time_based(&store, &wf, t0 + 5 * day_ms).await.unwrap();
    assert_eq!((e.objects, e.transitions, e.requests), (2, 0, 0));
    // Seven days on: 13 days left: in, one mail to the manager.
    let e = evaluate_time_based(&store, &wf, t0 + 7 * day_ms).await.unwrap();
    assert_eq!((e.transitions, e.requests), (1, 1));
    let due = store.mail_due(t0 + 7 * day_ms, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].recipient.as_str(), due[0].subject.as_str()),
        ("boss@corp.example.com", "The account of Gina expires soon")
    );
    // Again the same day: already in, nothing new.
    let e = evaluate_time_based(&store, &wf, t0 + 7 * day_ms + 1000).await.unwrap();
    assert_eq!(e.transitions, 0);
    // After it expired it leaves the set (no policy for `out`: no request).
    let e = evaluate_time_based(&store, &wf, t0 + 21 * day_ms).await.unwrap();
    assert_eq!((e.transitions, e.requests), (1, 0));
}
