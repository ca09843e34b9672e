//! `verify [ID ...] [--all]`: re-reads stored copies ([`crate::verify::verify_copies`]).

use crate::config::Config;
use crate::failure::Failure;
use crate::store::Store;

/// `verify [ID ...] [--all]`.
pub async fn verify(cfg: Config, ids: Vec<String>, all: bool) -> Result<(), Failure> {
    if ids.is_empty() && !all {
        return Err(Failure::Usage(
            "name the copies to verify (job or backup ids), or pass --all".into(),
        ));
    }
    let store = Store::open(&cfg.state.path).await?;
    let copies = store.destination_copies(&ids).await?;
    if copies.is_empty() {
        return Err(Failure::Usage(if all {
            "no stored copies to verify yet".into()
        } else {
            format!("no stored copy matches {}", ids.join(", "))
        }));
    }
    let handles = crate::destination::Handles::open(&cfg)
        .await
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    let bad = crate::verify::verify_copies(
        &store,
        &handles,
        &crate::clock::system(),
        &copies,
        |c, r| match r {
            Ok(s) => println!(
                "ok   {} {} {} bytes sha256 {}",
                c.destination,
                c.object_key.as_deref().unwrap_or("-"),
                s.size,
                s.sha256
            ),
            Err(b) => println!(
                "BAD  {} {} (backup {}, job {}): {b}",
                c.destination,
                c.object_key.as_deref().unwrap_or("-"),
                c.backup_id,
                c.job_id.as_deref().unwrap_or("-")
            ),
        },
    )
    .await?;
    println!(
        "{} cop{} checked, {bad} bad",
        copies.len(),
        if copies.len() == 1 { "y" } else { "ies" }
    );
    store.close().await;
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} stored cop{} failed verification (named above)",
            if bad == 1 { "y" } else { "ies" }
        )));
    }
    Ok(())
}
