//! Any bytes as a CDS API answer: the envelope and every typed model must decode or fail,
//! never panic.
#![no_main]
use rdbvault::cds::model::*;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(env) = serde_json::from_value::<Envelope>(value.clone()) {
        let _ = env.is_success();
        let d = env.data;
        let _ = serde_json::from_value::<Vec<Region>>(d.clone());
        let _ = serde_json::from_value::<DbConfigCatalog>(d.clone());
        let _ = serde_json::from_value::<CreatedInstances>(d.clone());
        let _ = serde_json::from_value::<Vec<Instance>>(d.clone());
        let _ = serde_json::from_value::<Vec<Backup>>(d.clone());
        let _ = serde_json::from_value::<BackupDownload>(d);
    }
    if let Some(s) = value.as_str() {
        let _ = parse_provider_time(s, &chrono_tz_shanghai());
    }
});

fn chrono_tz_shanghai() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).unwrap()
}
