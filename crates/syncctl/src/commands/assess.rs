//! `syncctl assess`: reads every source (configured connectors, LDIF files) with a full read
//! straight into the assessor (no connector space is written), compares with tenant data
//! when given, and prints the summary or writes the report files. When configured connectors
//! are assessed and the configured database exists, the summary (counts by severity and rule)
//! is stored there for `syncctl serve`'s status page and metrics; [`assess_and_store`] is the
//! service's scheduled assessment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use syncctl_assess::catalogue::{self, Severity};
use syncctl_assess::render::ldif::{sources_with_fixes, to_fix_ldif};
use syncctl_assess::render::{csv::to_csv, html::to_html, to_json};
use syncctl_assess::report::MatchOutcome;
use syncctl_assess::tenant::TenantSnapshot;
use syncctl_assess::{AssessOptions, Assessor, MailSettings, Report};
use syncctl_core::{Clock as _, ImportChange, ImportMode, ImportRequest, SystemClock};
use tokio::sync::mpsc;
use tracing::{Instrument as _, info, info_span};

use crate::cli::{AssessArgs, Cli};
use crate::config::{self, MailConfig, Plan};
use crate::exit::{CmdResult, Code, Failure};
use crate::logging::Progress;
use crate::output;
use crate::registry::{self, ConnectorPlan};

/// Runs the assessment.
pub async fn run(cli: &Cli, args: &AssessArgs) -> CmdResult {
    if args.rules {
        return print_catalogue(cli.json);
    }
    if cli.json && args.csv.as_deref() == Some(Path::new("-")) {
        return Err(Failure::usage(anyhow!("--json and --csv - both write to stdout: choose one")));
    }
    // The config is needed for connectors; with --ldif sources only it is read when present
    // (for `[mail]`).
    let needs_config = !args.connectors.is_empty() || args.ldif.is_empty();
    let plan = if needs_config || cli.config.exists() {
        Some(config::load(&cli.config).map_err(Failure::usage)?)
    } else {
        None
    };
    let mut sources: Vec<&ConnectorPlan> = Vec::new();
    if let Some(plan) = &plan {
        sources.extend(select_connectors(plan, args)?);
    }
    let mut files: Vec<ConnectorPlan> = Vec::new();
    for (i, file) in args.ldif.iter().enumerate() {
        let taken: Vec<&str> =
            sources.iter().map(|s| s.name.as_str()).chain(files.iter().map(|f| f.name.as_str())).collect();
        files.push(ldif_source(file, i, &taken)?);
    }
    sources.extend(files.iter());
    if sources.is_empty() {
        return Err(Failure::usage(anyhow!(
            "nothing to assess: {} has no connectors; configure one or pass --ldif FILE",
            cli.config.display()
        )));
    }
    let tenant = match (&args.tenant, plan.as_ref().map(cloud_connectors).unwrap_or_default().as_slice()) {
        (Some(path), _) => Some(read_tenant(path)?),
        (None, []) => None,
        (None, [cloud]) => Some(read_cloud_tenant(cloud, cli.json).await?),
        (None, several) => {
            return Err(Failure::usage(anyhow!(
                "several cloud connectors ({}): pass the tenant to compare with as --tenant FILE",
                several.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let mail = mail_settings(plan.as_ref(), args);
    let options = AssessOptions { tenant, mail, worst_objects: args.top };
    let configured =
        sources.iter().filter(|s| plan.as_ref().is_some_and(|p| p.connector(&s.name).is_some())).count();
    let report = assess_sources(&sources, options, !cli.json).await?;
    if let Some(plan) = plan.as_ref().filter(|p| configured > 0 && p.store_path.exists()) {
        store_summary(plan, &report, "assess").await?;
    }
    let written = write_files(&report, args)?;
    if cli.json {
        output::print(&format!("{}\n", to_json(&report).map_err(Failure::assess_failed)?))?;
    } else if args.csv.as_deref() != Some(Path::new("-")) {
        output::print(&summary(&report, &written))?;
    }
    Ok(Code::for_verdict(report.verdict))
}

/// The summary of `report` as the database keeps it: counts, never the findings.
pub fn summary_of(report: &Report, origin: &str, at: i64) -> syncctl_store::AssessSummary {
    syncctl_store::AssessSummary {
        at,
        origin: origin.to_owned(),
        verdict: report.verdict.as_str().to_owned(),
        objects: report.totals.objects,
        errors: report.totals.errors,
        warnings: report.totals.warnings,
        infos: report.totals.infos,
        by_rule: report
            .by_rule
            .iter()
            .map(|r| syncctl_store::RuleFindings {
                rule: r.rule.to_owned(),
                severity: r.severity.as_str().to_owned(),
                count: r.count,
            })
            .collect(),
        sources: report.sources.iter().map(|s| s.name.clone()).collect(),
    }
}

async fn store_summary(plan: &Plan, report: &Report, origin: &str) -> Result<(), Failure> {
    let store = super::open_store(plan).await?;
    let stored = store.record_assess_summary(&summary_of(report, origin, SystemClock.now_ms())).await;
    store.close().await;
    stored.map_err(Failure::stopped)?;
    info!(origin, verdict = report.verdict.as_str(), "assess summary stored in the database");
    Ok(())
}

/// The service's scheduled assessment: every configured source (not the cloud connectors),
/// compared with the tenant when exactly one cloud connector is configured, with the `[mail]`
/// checks; its summary stored with origin `serve`. `Ok(false)` when no source is configured.
pub async fn assess_and_store(plan: &Plan) -> Result<bool, Failure> {
    let sources: Vec<&ConnectorPlan> = plan.connectors.iter().filter(|c| c.type_name != "graph").collect();
    if sources.is_empty() {
        return Ok(false);
    }
    let tenant = match cloud_connectors(plan).as_slice() {
        [cloud] => Some(read_cloud_tenant(cloud, true).await?),
        _ => None,
    };
    let mail = plan.mail.as_ref().map(mail_settings_of);
    let options = AssessOptions { tenant, mail, worst_objects: 0 };
    let report = assess_sources(&sources, options, false).await?;
    store_summary(plan, &report, "serve").await?;
    Ok(true)
}

/// Reads every source with a full read into one assessor and returns the report.
/// `progress`: draw a spinner per source on a terminal.
pub async fn assess_sources(
    sources: &[&ConnectorPlan],
    options: AssessOptions,
    progress: bool,
) -> Result<Report, Failure> {
    let mut assessor = Assessor::new(options);
    for spec in sources {
        read_source(spec, &mut assessor, progress).await?;
    }
    let generated_at = output::rfc3339(SystemClock.now_ms());
    Ok(assessor.finish(generated_at, format!("syncctl {}", env!("CARGO_PKG_VERSION"))))
}

fn print_catalogue(json: bool) -> CmdResult {
    if json {
        output::print_json(&serde_json::to_value(catalogue::ALL).map_err(Failure::stopped)?)?;
        return Ok(Code::Success);
    }
    let rows: Vec<Vec<String>> = catalogue::ALL
        .iter()
        .map(|r| {
            vec![
                r.id.to_owned(),
                r.severity.as_str().to_owned(),
                r.attribute.to_owned(),
                r.idfix.to_owned(),
                format!("{} Fix: {}", r.summary, r.fix),
            ]
        })
        .collect();
    let mut text = format!(
        "{} rules. Severity: error = blocks a correct sync; warning = the cloud will change or drop the value; info = worth knowing.\n\n",
        rows.len()
    );
    text.push_str(&output::table(&["RULE", "SEVERITY", "ATTRIBUTE", "IDFIX", "WHAT AND FIX"], &rows));
    output::print(&text)?;
    Ok(Code::Success)
}

/// The configured cloud connectors (type `graph`): the tenant the sources are compared with,
/// never a source themselves.
fn cloud_connectors(plan: &Plan) -> Vec<&ConnectorPlan> {
    plan.connectors.iter().filter(|c| c.type_name == "graph").collect()
}

fn select_connectors<'p>(plan: &'p Plan, args: &AssessArgs) -> Result<Vec<&'p ConnectorPlan>, Failure> {
    let mut out = Vec::new();
    if args.connectors.is_empty() {
        if args.ldif.is_empty() {
            out.extend(plan.connectors.iter().filter(|c| c.type_name != "graph"));
        }
        return Ok(out);
    }
    for name in &args.connectors {
        let spec = plan.connector(name).ok_or_else(|| {
            Failure::usage(anyhow!(
                "no connector named `{name}` in {} (configured: {})",
                plan.source.display(),
                plan.connector_names()
            ))
        })?;
        if spec.type_name == "graph" {
            return Err(Failure::usage(anyhow!(
                "connector `{name}` is the cloud tenant (type graph): the sources are compared with it, it is not assessed itself"
            )));
        }
        out.push(spec);
    }
    Ok(out)
}

/// Reads the tenant live through a Graph connector (a full import: domains, users with their
/// admin roles, groups).
async fn read_cloud_tenant(spec: &ConnectorPlan, json: bool) -> Result<TenantSnapshot, Failure> {
    let span =
        info_span!("connector", connector = %spec.name, r#type = spec.type_name, endpoint = %spec.endpoint);
    async {
        let built = spec.build().map_err(Failure::usage)?;
        let mut connector = built.connector;
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            connector.import(ImportRequest { mode: ImportMode::Full, watermark: None }, tx).await
        });
        let progress = Progress::new(!json, &format!("reading the tenant through {}", spec.name));
        let mut objects = Vec::new();
        while let Some(batch) = rx.recv().await {
            for change in batch.changes {
                if let ImportChange::Present(object) | ImportChange::Incremental { object, .. } = change {
                    objects.push(object);
                }
            }
            syncctl_engine::ImportProgress::advance(&progress, objects.len() as u64, 0);
        }
        progress.finish();
        let result = reader
            .await
            .map_err(|e| Failure::assess_failed(anyhow!("reading the tenant through {}: {e}", spec.name)))?;
        result.map_err(|fault| {
            Failure::assess_failed(anyhow!("the tenant could not be read through `{}`: {fault}", spec.name))
        })?;
        info!(objects = objects.len(), "tenant read");
        TenantSnapshot::from_cloud_objects(&objects)
            .map_err(|e| Failure::assess_failed(anyhow!("the tenant read through `{}`: {e}", spec.name)))
    }
    .instrument(span)
    .await
}

/// An `--ldif FILE` source: an `ldif` connector of AD flavor named after the file.
fn ldif_source(file: &Path, index: usize, taken: &[&str]) -> Result<ConnectorPlan, Failure> {
    if !file.exists() {
        return Err(Failure::not_found(anyhow!("the LDIF file {} does not exist", file.display())));
    }
    let stem: String = file
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                .collect()
        })
        .unwrap_or_else(|| format!("ldif-{}", index + 1));
    let mut name = stem.clone();
    let mut n = 2;
    while taken.contains(&name.as_str()) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    let mut settings = toml::Table::new();
    settings.insert("path".into(), toml::Value::String(file.to_string_lossy().into_owned()));
    let cwd = std::env::current_dir().unwrap_or_default();
    registry::plan("ldif", &name, settings, &cwd).map_err(Failure::usage)
}

fn read_tenant(path: &Path) -> Result<TenantSnapshot, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure::not_found(anyhow!("the tenant file {} does not exist", path.display()))
        } else {
            Failure::usage(anyhow!("cannot read the tenant file {}: {e}", path.display()))
        }
    })?;
    TenantSnapshot::from_graph_json(&text).map_err(|e| Failure::usage(anyhow!("{}: {e}", path.display())))
}

fn mail_settings(plan: Option<&Plan>, args: &AssessArgs) -> Option<MailSettings> {
    let configured = plan.and_then(|p| p.mail.as_ref());
    let sender = args.mail_sender.clone().or_else(|| configured.map(|m| m.sender.clone()))?;
    let mut settings = match configured {
        Some(m) => mail_settings_of(m),
        None => MailSettings::default(),
    };
    settings.sender = sender;
    if let Some(account) = &args.mail_relay_account {
        settings.relay_account = Some(account.clone());
    }
    Some(settings)
}

/// The notification-mail settings `[mail]` gives the readiness check (also `mail test`'s).
pub fn mail_settings_of(mail: &MailConfig) -> MailSettings {
    let smtp = mail.smtp.as_ref();
    MailSettings {
        sender: mail.sender.clone(),
        relay_account: smtp.and_then(|s| s.username.clone()),
        relay_host: smtp.map(|s| s.host.clone()),
        relay_port: smtp.map(|s| s.port),
        relay_security: smtp.map(|s| s.security.clone()),
    }
}

/// Reads one source with a full import into the assessor.
async fn read_source(spec: &ConnectorPlan, assessor: &mut Assessor, progress: bool) -> Result<(), Failure> {
    let span =
        info_span!("connector", connector = %spec.name, r#type = spec.type_name, endpoint = %spec.endpoint);
    async {
        let built = spec.build().map_err(Failure::usage)?;
        let source = assessor.begin_source(&spec.name, built.kind, &spec.endpoint);
        let mut connector = built.connector;
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            connector.import(ImportRequest { mode: ImportMode::Full, watermark: None }, tx).await
        });
        let bar = Progress::new(progress, &format!("reading {}", spec.name));
        let mut objects = 0u64;
        while let Some(batch) = rx.recv().await {
            for change in batch.changes {
                objects += 1;
                match change {
                    ImportChange::Present(object) | ImportChange::Incremental { object, .. } => {
                        assessor.observe(source, &object);
                    }
                    ImportChange::Invalid(error) => assessor.observe_unreadable(source, &error),
                    ImportChange::Deleted { .. } | ImportChange::Unchanged { .. } => objects -= 1,
                }
            }
            syncctl_engine::ImportProgress::advance(&bar, objects, 0);
        }
        bar.finish();
        let result =
            reader.await.map_err(|e| Failure::assess_failed(anyhow!("reading {}: {e}", spec.name)))?;
        let summary = result.map_err(|fault| {
            Failure::assess_failed(anyhow!("source `{}` could not be read: {fault}", spec.name))
        })?;
        info!(objects, pages = summary.pages, "source read");
        Ok(())
    }
    .instrument(span)
    .await
}

/// `fixes.ldif` -> `fixes.<source>.ldif`.
fn per_source(fix: &Path, source: &str) -> PathBuf {
    let name = fix.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".ldif").unwrap_or(&name);
    fix.with_file_name(format!("{stem}.{source}.ldif"))
}

fn undo_path(fix: &Path) -> PathBuf {
    let name = fix.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".ldif").unwrap_or(&name);
    fix.with_file_name(format!("{stem}.undo.ldif"))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::assess_failed)
}

/// Writes the requested files; returns lines saying what was written.
fn write_files(report: &Report, args: &AssessArgs) -> Result<Vec<String>, Failure> {
    let mut written = Vec::new();
    if let Some(path) = &args.csv {
        let text = to_csv(report).map_err(Failure::assess_failed)?;
        if path == Path::new("-") {
            output::print(&text)?;
        } else {
            write(path, &text)?;
            written.push(format!("CSV (IdFix columns): {}", path.display()));
        }
    }
    if let Some(path) = &args.html {
        write(path, &to_html(report).map_err(Failure::assess_failed)?)?;
        written.push(format!("HTML report: {}", path.display()));
    }
    if let Some(path) = &args.fix_ldif {
        // Each source is its own directory: with fixes for several, one file pair per source.
        let sources = sources_with_fixes(report);
        let several = sources.len() > 1;
        for source in sources {
            let ldif = to_fix_ldif(report, source);
            let fix = if several { per_source(path, source) } else { path.clone() };
            let undo = undo_path(&fix);
            write(&fix, &ldif.fix)?;
            write(&undo, &ldif.undo)?;
            written.push(format!(
                "fix LDIF for {source}: {} ({} changes on {} objects; review, then ldapmodify -f); undo LDIF: {}",
                fix.display(),
                ldif.changes,
                ldif.objects,
                undo.display()
            ));
        }
        if report.remediations.is_empty() {
            written.push(format!("no fix to suggest: {} not written", path.display()));
        }
    }
    Ok(written)
}

fn summary(report: &Report, written: &[String]) -> String {
    let mut out = String::new();
    let t = &report.totals;
    let read: u64 = report.sources.iter().map(|s| s.objects_read).sum();
    let _ = writeln!(
        out,
        "Readiness: {} ({} errors, {} warnings, {} notes) over {} objects assessed of {read} read; {} skipped as IdFix skips them.",
        report.verdict.as_str().to_uppercase(),
        t.errors,
        t.warnings,
        t.infos,
        t.objects,
        t.skipped
    );
    let _ = writeln!(
        out,
        "{} objects with errors, {} with warnings only.\n",
        t.objects_with_errors, t.objects_with_warnings
    );
    let rows: Vec<Vec<String>> = report
        .sources
        .iter()
        .map(|s| {
            let skipped: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            vec![
                s.name.clone(),
                s.kind.clone(),
                s.endpoint.clone(),
                s.objects_read.to_string(),
                s.objects_assessed.to_string(),
                s.unreadable.to_string(),
                if skipped.is_empty() { "-".into() } else { skipped.join(", ") },
            ]
        })
        .collect();
    out.push_str("Sources\n");
    out.push_str(&output::table(
        &["NAME", "KIND", "ENDPOINT", "READ", "ASSESSED", "UNREADABLE", "SKIPPED"],
        &rows,
    ));
    if !report.by_rule.is_empty() {
        let mut by_rule = report.by_rule.clone();
        by_rule.sort_by_key(|r| (r.severity, std::cmp::Reverse(r.count)));
        let rows: Vec<Vec<String>> = by_rule
            .iter()
            .map(|r| vec![r.severity.as_str().into(), r.rule.into(), r.count.to_string(), r.attribute.into()])
            .collect();
        out.push_str("\nFindings by rule (syncctl assess --rules explains each)\n");
        out.push_str(&output::table(&["SEVERITY", "RULE", "COUNT", "ATTRIBUTE"], &rows));
    }
    if !report.upn_suffixes.is_empty() {
        let rows: Vec<Vec<String>> = report
            .upn_suffixes
            .iter()
            .map(|s| {
                vec![
                    s.suffix.clone(),
                    s.users.to_string(),
                    if s.routable { "yes".into() } else { "no".into() },
                    match s.verified {
                        Some(true) => s.authentication.clone().unwrap_or_else(|| "yes".into()),
                        Some(false) => "no".into(),
                        None => "-".into(),
                    },
                    s.cloud_suffix.clone(),
                    s.reason.clone(),
                ]
            })
            .collect();
        out.push_str("\nUPN suffixes\n");
        out.push_str(&output::table(
            &["SUFFIX", "USERS", "ROUTABLE", "VERIFIED", "CLOUD SUFFIX", "WHY"],
            &rows,
        ));
    }
    let a = &report.anchors;
    if a.compared_with_tenant {
        let _ = writeln!(
            out,
            "\nAnchor audit against the tenant: {} hard match, {} soft match, {} new, {} conflict, {} without anchor.",
            a.hard_match, a.soft_match, a.new, a.conflict, a.no_anchor
        );
        let conflicts: Vec<Vec<String>> = report
            .anchor_audit
            .iter()
            .filter(|r| r.outcome == MatchOutcome::Conflict)
            .take(10)
            .map(|r| vec![r.dn.clone(), r.cloud_id.clone().unwrap_or_default(), r.detail.clone()])
            .collect();
        if !conflicts.is_empty() {
            out.push_str(&output::table(&["CONFLICT", "CLOUD ID", "WHY"], &conflicts));
        }
    } else {
        let _ = writeln!(
            out,
            "\nAnchor audit: {} objects with an ImmutableID, {} without; pass --tenant FILE to predict hard and soft matches.",
            report.anchor_audit.iter().filter(|r| r.immutable_id.is_some()).count(),
            a.no_anchor
        );
    }
    let f = &report.federation;
    if !f.top_level_domains.is_empty() || f.forests.len() > 1 {
        let _ = writeln!(
            out,
            "Federation: top-level domains {}; sub-domains {}; forests {}.",
            list(&f.top_level_domains),
            list(&f.subdomains),
            list(&f.forests)
        );
    }
    if !report.worst_objects.is_empty() {
        let rows: Vec<Vec<String>> = report
            .worst_objects
            .iter()
            .map(|o| {
                let rules: Vec<&str> = report
                    .findings
                    .iter()
                    .filter(|f| f.source == o.source && f.dn == o.dn && f.severity != Severity::Info)
                    .map(|f| f.rule)
                    .collect();
                vec![o.errors.to_string(), o.warnings.to_string(), o.dn.clone(), rules.join(", ")]
            })
            .collect();
        out.push_str("\nWorst objects\n");
        out.push_str(&output::table(&["ERRORS", "WARNINGS", "DN", "RULES"], &rows));
    }
    let fixable = report.remediations.len();
    if !written.is_empty() || fixable > 0 {
        out.push('\n');
    }
    if fixable > 0 && written.iter().all(|w| !w.starts_with("fix LDIF")) {
        let _ = writeln!(
            out,
            "{fixable} fixes can be suggested: write them with --fix-ldif FILE (or see --csv / --html)."
        );
    }
    for w in written {
        let _ = writeln!(out, "Wrote {w}");
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}
