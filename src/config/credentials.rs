//! CDS API credentials: from `CDS_ACCESS_KEY_ID` / `CDS_ACCESS_KEY_SECRET`, or from the
//! `cds.access_key_id_file` / `cds.access_key_secret_file` keys (which fit systemd's
//! `LoadCredential=`). A secret file that anyone on the machine can read is refused.

use crate::secret::Secret;
use std::path::{Path, PathBuf};

pub const ENV_ACCESS_KEY_ID: &str = "CDS_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "CDS_ACCESS_KEY_SECRET";

#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no CDS {what}: set {env} or cds.{key} in the config (for systemd, LoadCredential= and a path under $CREDENTIALS_DIRECTORY)"
    )]
    Missing {
        what: &'static str,
        env: &'static str,
        key: &'static str,
    },
    /// (`reason` is not a `#[source]`: the message carries it, and `{:#}` would say it twice.)
    #[error("cannot read {path}: {reason}{}", .key.map(|k| format!(" (named by {k}); check the path and that rdbvault's user may read it")).unwrap_or_default())]
    Read {
        path: PathBuf,
        reason: std::io::Error,
        /// The config key that named the file, when known.
        key: Option<&'static str>,
    },
    #[error(
        "{path} is readable by every user (mode {mode:o}); run `chmod 600 {path}` (or 400), owned by the user rdbvault runs as"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
}

/// Expands `$CREDENTIALS_DIRECTORY` / `${CREDENTIALS_DIRECTORY}` at the start of a path, so a
/// config can name systemd credentials without knowing where systemd mounts them.
pub fn expand_credentials_dir(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    for var in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        if let Some(rest) = text.strip_prefix(var)
            && let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY")
        {
            return PathBuf::from(format!("{dir}{rest}"));
        }
    }
    path.to_path_buf()
}

/// Reads one secret file: refuses it if world-readable, trims the trailing newline.
///
/// # Errors
/// Missing, unreadable, world-readable or empty file.
pub fn read_secret_file(path: &Path) -> Result<String, Error> {
    let path = expand_credentials_dir(path);
    let meta = std::fs::metadata(&path).map_err(|reason| Error::Read {
        path: path.clone(),
        reason,
        key: None,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(Error::WorldReadable { path, mode });
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|reason| Error::Read {
        path: path.clone(),
        reason,
        key: None,
    })?;
    let value = text.trim_end_matches(['\n', '\r']).trim().to_string();
    if value.is_empty() {
        return Err(Error::Empty { path });
    }
    Ok(value)
}

/// [`read_secret_file`] for the file a config `key` names: a file that cannot be read says
/// which key named it.
pub fn read_named(path: &Path, key: &'static str) -> Result<String, Error> {
    read_secret_file(path).map_err(|e| match e {
        Error::Read { path, reason, .. } => Error::Read {
            path,
            reason,
            key: Some(key),
        },
        other => other,
    })
}

/// Loads the credentials: each from its file if the config names one, else from the environment.
///
/// # Errors
/// See [`Error`]; messages name the file or variable, never the value.
pub fn load(id_file: Option<&Path>, secret_file: Option<&Path>) -> Result<Credentials, Error> {
    let access_key_id = match id_file {
        Some(p) => read_named(p, "cds.access_key_id_file")?,
        None => std::env::var(ENV_ACCESS_KEY_ID)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(Error::Missing {
                what: "access key id",
                env: ENV_ACCESS_KEY_ID,
                key: "access_key_id_file",
            })?,
    };
    let access_key_secret = match secret_file {
        Some(p) => read_named(p, "cds.access_key_secret_file")?,
        None => std::env::var(ENV_ACCESS_KEY_SECRET)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(Error::Missing {
                what: "access key secret",
                env: ENV_ACCESS_KEY_SECRET,
                key: "access_key_secret_file",
            })?,
    };
    Ok(Credentials {
        access_key_id: access_key_id.trim().to_string(),
        access_key_secret: Secret::new(access_key_secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_readable_secret_file_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cr3t-value"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "s3cr3t-value");
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        std::fs::write(&p, "\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_secret_file(&p), Err(Error::Empty { .. })));
        assert!(matches!(
            read_secret_file(&dir.path().join("nope")),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn a_missing_key_file_names_the_key_and_says_the_reason_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("ak");
        std::fs::write(&id, "AK\n").unwrap();
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
        let missing = dir.path().join("sk-missing");
        let err = load(Some(&id), Some(&missing)).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert!(text.contains("cds.access_key_secret_file"), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }
}
