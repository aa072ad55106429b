//! A cloud directory kept in memory: the export-capable connector the sync-engine tests use
//! until the Graph connector exists (the Graph connector must pass the same tests). Its import
//! returns the objects it holds, like a full import of Graph users, groups and contacts (anchor:
//! the cloud `id`); everything it is asked to do is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use syncctl_core::{
    Anchor, AttrValues, Attributes, Capabilities, Connector, ConnectorFault, CsObject, Dn, ExportFailure,
    ExportItem, ExportKind, ExportOutcome, ImportBatch, ImportChange, ImportRequest, ImportSummary,
};
use tokio::sync::mpsc;

/// The connector kind the default cloud rules apply to in tests.
pub const KIND: &str = "cloud-test";

/// The cloud's objects, shared between the test and the connector.
#[derive(Clone, Default)]
pub struct CloudState {
    objects: Arc<Mutex<BTreeMap<String, CsObject>>>,
    log: Arc<Mutex<Vec<String>>>,
    next: Arc<Mutex<u64>>,
}

impl CloudState {
    /// Puts a user (`id`, UPN and more attributes) in the cloud.
    pub fn put_user(&self, id: &str, upn: &str, extra: &[(&str, AttrValues)]) {
        self.put(id, "user", &[("userPrincipalName", AttrValues::String(vec![upn.to_owned()]))], extra);
    }

    /// Puts an object of any type.
    pub fn put(
        &self,
        id: &str,
        object_type: &str,
        attrs: &[(&str, AttrValues)],
        extra: &[(&str, AttrValues)],
    ) {
        let mut attributes = Attributes::new();
        attributes.insert("id", AttrValues::String(vec![id.to_owned()]));
        for (name, v) in attrs.iter().chain(extra) {
            attributes.insert(*name, v.clone());
        }
        let object = CsObject {
            anchor: Anchor::new(id).unwrap(),
            immutable_id: None,
            dn: Dn::parse(&format!("CN={id},CN={object_type}s")).unwrap(),
            object_class: object_type.to_owned(),
            attributes,
        };
        self.objects.lock().unwrap().insert(id.to_owned(), object);
    }

    /// What the connector was asked to do, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The writes (adds, updates, deletes) in the log.
    pub fn writes(&self) -> Vec<String> {
        self.log().into_iter().filter(|l| !l.starts_with("import")).collect()
    }

    /// The object with this id.
    pub fn get(&self, id: &str) -> Option<CsObject> {
        self.objects.lock().unwrap().get(id).cloned()
    }

    /// Every object.
    pub fn objects(&self) -> Vec<CsObject> {
        self.objects.lock().unwrap().values().cloned().collect()
    }

    /// The object whose attribute `name` has `value` (the first).
    pub fn find(&self, name: &str, value: &str) -> Option<CsObject> {
        self.objects
            .lock()
            .unwrap()
            .values()
            .find(|o| o.attributes.get(name).is_some_and(|v| v.display_values().iter().any(|x| x == value)))
            .cloned()
    }
}

/// The connector.
pub struct CloudConnector {
    name: String,
    state: CloudState,
}

impl CloudConnector {
    /// A connector called `name` over `state`.
    pub fn new(name: &str, state: CloudState) -> Self {
        Self { name: name.to_owned(), state }
    }
}

impl CloudConnector {
    /// The id of an object that already has the item's onPremisesImmutableId.
    fn already_created(&self, item: &ExportItem) -> Option<String> {
        let wanted = item.attributes.iter().find(|(n, _)| n == "onPremisesImmutableId")?.1.clone()?;
        self.state
            .objects
            .lock()
            .unwrap()
            .values()
            .find(|o| o.attributes.get("onPremisesImmutableId") == Some(&wanted))
            .map(|o| o.anchor.to_string())
    }
}

#[async_trait::async_trait]
impl Connector for CloudConnector {
    fn name(&self) -> &str {
        &self.name
    }
    fn endpoint(&self) -> String {
        "memory://cloud".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            full_import: true,
            delta_import: false,
            export: true,
            object_types: vec!["user".into(), "group".into(), "contact".into()],
            export_attributes: Default::default(),
        }
    }
    async fn import(
        &mut self,
        _request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> Result<ImportSummary, ConnectorFault> {
        let objects: Vec<CsObject> = self.state.objects.lock().unwrap().values().cloned().collect();
        self.state.log.lock().unwrap().push(format!("import {} objects", objects.len()));
        let batch = ImportBatch {
            changes: objects.into_iter().map(ImportChange::Present).collect(),
            watermark: None,
        };
        tx.send(batch).await.map_err(|_| {
            ConnectorFault::new(
                syncctl_core::FaultKind::Cancelled,
                self.endpoint(),
                "the engine stopped reading",
            )
        })?;
        Ok(ImportSummary { sweep_unseen: true, method: "memory".into(), ..ImportSummary::default() })
    }

    async fn export(&mut self, items: Vec<ExportItem>) -> Result<Vec<ExportOutcome>, ConnectorFault> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let label = |o: &CsObject| {
                o.attributes
                    .get("userPrincipalName")
                    .or_else(|| o.attributes.get("displayName"))
                    .and_then(|v| v.display_values().into_iter().next())
                    .unwrap_or_else(|| o.anchor.to_string())
            };
            let result = match item.kind {
                ExportKind::Add if item.uncertain && self.already_created(&item).is_some() => {
                    // Sent before and maybe done: look it up by its ImmutableID first.
                    let id = self.already_created(&item).unwrap_or_default();
                    self.state.log.lock().unwrap().push(format!("found {} {id}", item.object_type));
                    Ok(Some(Anchor::new(id).unwrap()))
                }
                ExportKind::Add => {
                    let id = {
                        let mut n = self.state.next.lock().unwrap();
                        *n += 1;
                        format!("new-{n}")
                    };
                    let mut attributes = Attributes::new();
                    attributes.insert("id", AttrValues::String(vec![id.clone()]));
                    for (name, v) in &item.attributes {
                        if let Some(v) = v {
                            attributes.insert(name.as_str(), v.clone());
                        }
                    }
                    let object = CsObject {
                        anchor: Anchor::new(id.as_str()).unwrap(),
                        immutable_id: None,
                        dn: Dn::parse(&format!("CN={id},CN={}s", item.object_type)).unwrap(),
                        object_class: item.object_type.clone(),
                        attributes,
                    };
                    self.state.log.lock().unwrap().push(format!(
                        "add {} {}",
                        item.object_type,
                        label(&object)
                    ));
                    self.state.objects.lock().unwrap().insert(id.clone(), object);
                    Ok(Some(Anchor::new(id).unwrap()))
                }
                ExportKind::Update | ExportKind::Delete => {
                    let anchor = item.anchor.clone().map(|a| a.to_string()).unwrap_or_default();
                    let mut objects = self.state.objects.lock().unwrap();
                    match objects.get_mut(&anchor) {
                        None => Err(ExportFailure {
                            kind: "ObjectNotFound".into(),
                            message: format!("no object {anchor}"),
                            retryable: false,
                        }),
                        Some(o) if item.kind == ExportKind::Delete => {
                            let l = label(o);
                            objects.remove(&anchor);
                            self.state.log.lock().unwrap().push(format!("delete {} {l}", item.object_type));
                            Ok(None)
                        }
                        Some(o) => {
                            let mut changed = Vec::new();
                            for (name, v) in &item.attributes {
                                changed.push(name.clone());
                                match v {
                                    Some(v) => o.attributes.insert(name.as_str(), v.clone()),
                                    None => {
                                        o.attributes.remove(name);
                                    }
                                }
                            }
                            let l = label(o);
                            self.state.log.lock().unwrap().push(format!(
                                "update {} {l} {}",
                                item.object_type,
                                changed.join(",")
                            ));
                            Ok(None)
                        }
                    }
                }
            };
            out.push(ExportOutcome::new(item.id, result));
        }
        Ok(out)
    }
}
