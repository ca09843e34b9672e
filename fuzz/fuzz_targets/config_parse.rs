//! Any text as a config file: parse and validate must return Ok or located errors, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = rdbvault::config::parse(text, std::path::Path::new("fuzz.yaml")) {
            let _ = errors.to_string();
        }
    }
});
