//! `verify [ID ...] [--all] [--json]`: re-reads stored copies ([`crate::verify::verify_copies`]).

use crate::config::Config;
use crate::failure::Failure;
use crate::store::Store;
use crate::store::inventory::CopyRow;

/// One copy's verdict, as `verify --json` prints it.
#[derive(serde::Serialize)]
struct Verdict {
    destination: String,
    object_key: Option<String>,
    backup_id: String,
    job_id: Option<String>,
    ok: bool,
    /// `missing`, `corrupt` or `unreadable` (this time; says nothing about the copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

impl Verdict {
    fn of(
        c: &crate::store::inventory::CopyRow,
        r: &Result<crate::transfer::Stored, crate::verify::Bad>,
    ) -> Verdict {
        use crate::verify::Bad;
        let (problem, error) = match r {
            Ok(_) => (None, None),
            Err(b @ Bad::Missing(_)) => (Some("missing"), Some(b.to_string())),
            Err(b @ Bad::Corrupt(_)) => (Some("corrupt"), Some(b.to_string())),
            Err(b @ Bad::Unreadable(_)) => (Some("unreadable"), Some(b.to_string())),
        };
        Verdict {
            destination: c.destination.clone(),
            object_key: c.object_key.clone(),
            backup_id: c.backup_id.clone(),
            job_id: c.job_id.clone(),
            ok: r.is_ok(),
            problem,
            error,
            size: r.as_ref().ok().map(|s| s.size),
            sha256: r.as_ref().ok().map(|s| s.sha256.clone()),
        }
    }
}

/// `verify [ID ...] [--all] [--json]`.
pub async fn verify(cfg: Config, ids: Vec<String>, all: bool, json: bool) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    if ids.is_empty() && !all {
        return Err(Failure::Usage(
            "name the copies to verify (job or backup ids), or pass --all".into(),
        ));
    }
    let store = Store::connect(&cfg.state).await?;
    let copies = named_copies(&store, &ids).await?;
    if copies.is_empty() {
        return Err(Failure::Usage(if all {
            "no stored copies to verify yet".into()
        } else {
            format!(
                "{} named no stored copy (the job stored none, or retention deleted them); see `{rdbvault} backups`",
                ids.join(", ")
            )
        }));
    }
    let handles = crate::destination::Handles::open(&cfg)
        .await
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    let mut verdicts = Vec::new();
    let mut failed = Vec::new();
    let bad = crate::verify::verify_copies(
        &store,
        &handles,
        &crate::clock::system(),
        &copies,
        |c, r| {
            if let Err(why) = r {
                failed.push((c.clone(), why.to_string()));
            }
            if json {
                verdicts.push(Verdict::of(c, r));
            } else {
                print_verdict(c, r);
            }
        },
    )
    .await?;
    // Queued for `notify:` targets; the daemon delivers them.
    crate::verify::tell_failures(&store, &cfg, &failed).await;
    if json {
        super::format::print_json(&serde_json::json!({
            "checked": copies.len(),
            "bad": bad,
            "copies": verdicts,
        }));
    } else {
        outln!(
            "{} cop{} checked, {bad} bad",
            copies.len(),
            if copies.len() == 1 { "y" } else { "ies" }
        );
    }
    store.close().await;
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} stored cop{} failed verification (named above)",
            if bad == 1 { "y" } else { "ies" }
        )));
    }
    Ok(())
}

/// The copies `ids` name through the one id resolver ([`Store::find`]), each once; every
/// stored copy when `ids` is empty.
async fn named_copies(store: &Store, ids: &[String]) -> Result<Vec<CopyRow>, Failure> {
    if ids.is_empty() {
        return Ok(store.destination_copies().await?);
    }
    let mut copies: Vec<CopyRow> = Vec::new();
    for id in ids {
        let named = store.find(id).await.map_err(super::jobs::lookup_failure)?;
        for c in store.copies_of(&named).await? {
            if copies.iter().all(|seen| seen.id != c.id) {
                copies.push(c);
            }
        }
    }
    Ok(copies)
}

/// One line per copy: `ok ...` or `BAD ... : why`.
fn print_verdict(c: &CopyRow, r: &Result<crate::transfer::Stored, crate::verify::Bad>) {
    match r {
        Ok(s) => outln!(
            "ok   {} {} {} bytes sha256 {}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            s.size,
            s.sha256
        ),
        Err(b) => outln!(
            "BAD  {} {} (backup {}, job {}): {b}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            c.backup_id,
            c.job_id.as_deref().unwrap_or("-")
        ),
    }
}
