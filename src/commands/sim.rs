//! `sim`: the CDS Redis API simulator as a foreground process, for trying rdbvault without an
//! account.

use crate::cli::SimArgs;
use crate::failure::Failure;
use anyhow::Context as _;

/// `sim [--listen ADDR] [--state FILE] ...`: runs until Ctrl-C.
pub async fn sim(args: SimArgs) -> Result<(), Failure> {
    let mut cfg = crate::sim::SimConfig::from_env();
    cfg.settings.backup_delay = args.backup_delay;
    cfg.settings.url_ttl = args.url_ttl;
    cfg.settings.default_backup_size = args.backup_size;
    if let Some(path) = &args.state {
        cfg.instances =
            Some(crate::sim::load_state_file(path).map_err(|e| Failure::Usage(format!("{e:#}")))?);
    }
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "the simulator is meant for loopback; anyone who can reach this address can use it"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let demo = cfg.uses_demo_credentials();
    let id = cfg.access_key_id.clone();
    let demo_secret = cfg.access_key_secret.clone();
    // Only instance definitions can make start fail: a usage problem (exit 2).
    let handle = crate::sim::start(listener, cfg)
        .await
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    outln!(
        "rdbvault sim: CDS Redis API simulator on {}/redis/",
        handle.base_url
    );
    outln!("  config:      cds: {{ endpoint: {} }}", handle.base_url);
    if demo {
        outln!(
            "  credentials: CDS_ACCESS_KEY_ID={id} CDS_ACCESS_KEY_SECRET={} (built-in demo credentials; set both variables to choose others)",
            demo_secret.expose()
        );
    } else {
        outln!(
            "  credentials: from CDS_ACCESS_KEY_ID / CDS_ACCESS_KEY_SECRET (access key id {id})"
        );
    }
    {
        let world = handle.shared.world();
        for i in world.instances.values() {
            outln!(
                "  instance:    {} {} {} ({}{})",
                i.info.instance_uuid,
                i.info.instance_name,
                i.info.ip,
                i.info.sub_product_name,
                if i.shards.is_empty() {
                    String::new()
                } else {
                    format!(", {} shards", i.shards.len())
                }
            );
        }
    }
    outln!(
        "  faults:      curl -X POST {}/_sim/faults -d '{{\"kind\":\"api_error\",\"action\":\"CreateBackup\",\"count\":1}}'",
        handle.base_url
    );
    outln!("Ctrl-C stops it.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    handle.stop().await;
    Ok(())
}
