//! Validation of `destinations`: each entry's name and `type`, then the keys of that type. Both
//! types share one raw struct, so a key of the other type is reported here, at its location.

use super::Validator;
use crate::config::model::{
    Destination, DestinationKind, FileDestination, S3Credentials, S3Destination,
    ServerSideEncryption,
};
use crate::config::raw::RawDestination;
use crate::config::units;
use std::collections::BTreeMap;
use url::Url;

/// `part_size` when unset or wrong: 16MiB.
const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// `upload_concurrency` when unset or wrong.
const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;

impl Validator<'_> {
    /// Every valid entry under `destinations`, by name; a broken one is left out.
    pub(super) fn destinations(
        &mut self,
        raw: &BTreeMap<String, RawDestination>,
    ) -> BTreeMap<String, Destination> {
        let mut destinations = BTreeMap::new();
        if raw.is_empty() {
            self.problem(
                "destinations",
                "no destinations: define at least one (type: s3 or type: file)",
            );
        }
        for (name, d) in raw {
            if let Some(dest) = self.destination(name, d) {
                destinations.insert(name.clone(), dest);
            }
        }
        destinations
    }

    fn destination(&mut self, name: &str, d: &RawDestination) -> Option<Destination> {
        let base = format!("destinations.{name}");
        self.name_ok(&base, "destination", name);
        let kind = match d.kind.as_ref().map(|t| t.0.trim()) {
            None => {
                self.problem(&base, "missing `type`: s3 or file");
                return None;
            }
            Some("s3") => {
                if d.path.is_some() {
                    self.problem(
                        &format!("{base}.path"),
                        "`path` belongs to type: file; an s3 destination uses bucket and prefix",
                    );
                }
                DestinationKind::S3(Box::new(self.s3(name, &base, d)))
            }
            Some("file") => DestinationKind::File(self.file(&base, d)?),
            Some(other) => {
                self.problem(
                    &format!("{base}.type"),
                    format!("unknown destination type `{other}`; use s3 or file"),
                );
                return None;
            }
        };
        Some(Destination {
            name: name.to_string(),
            kind,
        })
    }

    /// A `type: file` destination; `None` without a `path`.
    fn file(&mut self, base: &str, d: &RawDestination) -> Option<FileDestination> {
        let s3_keys = [
            ("bucket", d.bucket.is_some()),
            ("prefix", d.prefix.is_some()),
            ("region", d.region.is_some()),
            ("endpoint", d.endpoint.is_some()),
            ("path_style", d.path_style.is_some()),
            ("storage_class", d.storage_class.is_some()),
            ("server_side_encryption", d.server_side_encryption.is_some()),
            ("kms_key_id", d.kms_key_id.is_some()),
            ("part_size", d.part_size.is_some()),
            ("upload_concurrency", d.upload_concurrency.is_some()),
            ("access_key_id_file", d.access_key_id_file.is_some()),
            ("secret_access_key_file", d.secret_access_key_file.is_some()),
            ("credentials", d.credentials.is_some()),
        ];
        for (key, present) in s3_keys {
            if present {
                self.problem(
                    &format!("{base}.{key}"),
                    format!("`{key}` belongs to type: s3, not type: file"),
                );
            }
        }
        match &d.path {
            Some(p) if !p.as_os_str().is_empty() => Some(FileDestination { path: self.path(p) }),
            _ => {
                self.problem(base, "a file destination needs `path`");
                None
            }
        }
    }

    /// A `type: s3` destination, key by key in a fixed order (the order of its problems).
    fn s3(&mut self, name: &str, base: &str, d: &RawDestination) -> S3Destination {
        let bucket = self.s3_bucket(base, d);
        let prefix = s3_prefix(d);
        let endpoint = self.s3_endpoint(base, d);
        let server_side_encryption = self.s3_encryption(base, d);
        let part_size = self.s3_part_size(base, d);
        let upload_concurrency = self.s3_upload_concurrency(base, d);
        let credentials = self.s3_credentials(base, d, endpoint.is_some());
        S3Destination {
            name: name.to_string(),
            credentials,
            bucket,
            prefix,
            region: d.region.as_ref().map(|t| t.0.trim().to_string()),
            endpoint,
            path_style: d.path_style.unwrap_or(false),
            storage_class: d.storage_class.as_ref().map(|t| t.0.trim().to_string()),
            server_side_encryption,
            part_size,
            upload_concurrency,
            access_key_id_file: d.access_key_id_file.as_deref().map(|p| self.path(p)),
            secret_access_key_file: d.secret_access_key_file.as_deref().map(|p| self.path(p)),
        }
    }

    fn s3_bucket(&mut self, base: &str, d: &RawDestination) -> String {
        match &d.bucket {
            Some(t) if !t.0.trim().is_empty() => t.0.trim().to_string(),
            _ => {
                self.problem(base, "an s3 destination needs `bucket`");
                String::new()
            }
        }
    }

    fn s3_endpoint(&mut self, base: &str, d: &RawDestination) -> Option<Url> {
        d.endpoint
            .as_ref()
            .and_then(|t| match Url::parse(t.0.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    self.problem(
                        &format!("{base}.endpoint"),
                        format!("`{}` is not an http(s) URL", t.0),
                    );
                    None
                }
            })
    }

    /// `server_side_encryption` and `kms_key_id`, which means something only with `aws:kms`.
    fn s3_encryption(&mut self, base: &str, d: &RawDestination) -> Option<ServerSideEncryption> {
        let sse = match d.server_side_encryption.as_ref().map(|t| t.0.trim()) {
            None => None,
            Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::Kms {
                key_id: d.kms_key_id.as_ref().map(|t| t.0.trim().to_string()),
            }),
            Some(other) => {
                self.problem(
                    &format!("{base}.server_side_encryption"),
                    format!("`{other}` is not one of: AES256, aws:kms"),
                );
                None
            }
        };
        if d.kms_key_id.is_some() && !matches!(sse, Some(ServerSideEncryption::Kms { .. })) {
            self.problem(
                &format!("{base}.kms_key_id"),
                "kms_key_id needs server_side_encryption: aws:kms",
            );
        }
        sse
    }

    /// `part_size`, within what S3 accepts for a multipart part.
    fn s3_part_size(&mut self, base: &str, d: &RawDestination) -> u64 {
        let Some(t) = &d.part_size else {
            return DEFAULT_PART_SIZE;
        };
        match units::parse_size(&t.0) {
            Ok(n) if (5 << 20..=5 << 30).contains(&n) => n,
            Ok(n) => {
                self.problem(
                    &format!("{base}.part_size"),
                    format!(
                        "{} is outside what S3 allows for a part: 5MiB to 5GiB",
                        units::format_size(n)
                    ),
                );
                DEFAULT_PART_SIZE
            }
            Err(e) => {
                self.problem(&format!("{base}.part_size"), e);
                DEFAULT_PART_SIZE
            }
        }
    }

    fn s3_upload_concurrency(&mut self, base: &str, d: &RawDestination) -> usize {
        match d.upload_concurrency {
            None => DEFAULT_UPLOAD_CONCURRENCY,
            Some(n @ 1..=64) => n as usize,
            Some(n) => {
                self.problem(
                    &format!("{base}.upload_concurrency"),
                    format!("{n} is outside 1..=64"),
                );
                DEFAULT_UPLOAD_CONCURRENCY
            }
        }
    }

    /// Where the keys come from: key files come in pairs, and exclude `instance_profile`.
    fn s3_credentials(
        &mut self,
        base: &str,
        d: &RawDestination,
        has_endpoint: bool,
    ) -> S3Credentials {
        if d.access_key_id_file.is_some() != d.secret_access_key_file.is_some() {
            self.problem(
                base,
                "set both access_key_id_file and secret_access_key_file, or neither (then the environment, a profile or, with credentials: instance_profile, the instance role)",
            );
        }
        // A store with its own endpoint (CDS object storage, MinIO, SeaweedFS) has no instance
        // role: asking the metadata service would only wait for a timeout, or hand a foreign
        // store the host's AWS role. Only real AWS gets the whole chain unless asked.
        let default_credentials = if has_endpoint {
            S3Credentials::Static
        } else {
            S3Credentials::DefaultChain
        };
        let credentials = self.choice(
            &format!("{base}.credentials"),
            d.credentials.as_ref(),
            &[
                ("static", S3Credentials::Static),
                ("instance_profile", S3Credentials::DefaultChain),
            ],
            default_credentials,
        );
        if credentials == S3Credentials::DefaultChain
            && d.credentials.is_some()
            && d.access_key_id_file.is_some()
        {
            self.problem(
                &format!("{base}.credentials"),
                "credentials: instance_profile and access_key_id_file / secret_access_key_file exclude each other; keep one",
            );
        }
        credentials
    }
}

/// The key prefix as written, without a leading `/` and with a trailing one, so keys are
/// `prefix + name` whatever the user wrote. Empty stays empty (keys at the bucket's root).
fn s3_prefix(d: &RawDestination) -> String {
    let mut prefix = d
        .prefix
        .as_ref()
        .map(|t| t.0.trim().trim_start_matches('/').to_string())
        .unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, paths};
    use super::*;
    use crate::config::parse;
    use crate::config::raw::Text;
    use crate::config::tests::MINIMAL;
    use std::path::{Path, PathBuf};

    fn text(s: &str) -> Option<Text> {
        Some(Text(s.to_string()))
    }

    fn s3(d: RawDestination) -> (S3Destination, Vec<crate::config::Problem>) {
        check(|v| v.s3("s3", "destinations.s3", &d))
    }

    fn bucket() -> RawDestination {
        RawDestination {
            kind: text("s3"),
            bucket: text("b"),
            ..RawDestination::default()
        }
    }

    #[test]
    fn s3_credentials_default_by_endpoint_and_a_bad_value_is_located() {
        let with = |dest: &str| {
            MINIMAL.replace(
                "  local: { type: file, path: /tmp/x }",
                &format!(
                    "  local: {{ type: file, path: /tmp/x }}\n  s3: {{ type: s3, bucket: b{dest} }}"
                ),
            )
        };
        let creds = |text: &str| {
            let c = parse(text, Path::new("t.yaml")).unwrap();
            let DestinationKind::S3(s3) = &c.destinations["s3"].kind else {
                unreachable!()
            };
            (s3.name.clone(), s3.credentials)
        };
        assert_eq!(creds(&with("")), ("s3".into(), S3Credentials::DefaultChain));
        let endpoint = ", endpoint: http://127.0.0.1:9000";
        assert_eq!(creds(&with(endpoint)).1, S3Credentials::Static);
        assert_eq!(
            creds(&with(&format!("{endpoint}, credentials: instance_profile"))).1,
            S3Credentials::DefaultChain
        );
        assert_eq!(
            creds(&with(", credentials: static")).1,
            S3Credentials::Static
        );
        let err = parse(&with(", credentials: imds"), Path::new("t.yaml")).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            err.problems[0].path, "destinations.s3.credentials",
            "{text}"
        );
        assert!(err.problems[0].line.is_some(), "{text}");
        assert!(text.contains("static, instance_profile"), "{text}");
        let both =
            ", credentials: instance_profile, access_key_id_file: /k, secret_access_key_file: /s";
        let err = parse(&with(both), Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems[0].path, "destinations.s3.credentials");
    }

    #[test]
    fn s3_key_files_come_in_pairs() {
        let (_, problems) = s3(RawDestination {
            access_key_id_file: Some(PathBuf::from("id")),
            ..bucket()
        });
        assert_eq!(paths(&problems), ["destinations.s3"]);
        let (d, problems) = s3(RawDestination {
            access_key_id_file: Some(PathBuf::from("id")),
            secret_access_key_file: Some(PathBuf::from("/run/secret")),
            ..bucket()
        });
        assert!(problems.is_empty());
        assert_eq!(
            d.access_key_id_file,
            Some(PathBuf::from("/etc/rdbvault/id"))
        );
        assert_eq!(d.secret_access_key_file, Some(PathBuf::from("/run/secret")));
    }

    #[test]
    fn the_prefix_never_starts_with_a_slash_and_always_ends_with_one() {
        let prefix = |p: Option<&str>| {
            s3_prefix(&RawDestination {
                prefix: p.map(|p| Text(p.to_string())),
                ..RawDestination::default()
            })
        };
        assert_eq!(prefix(None), "");
        assert_eq!(prefix(Some("")), "");
        assert_eq!(prefix(Some("/")), "");
        assert_eq!(prefix(Some(" /a/b ")), "a/b/");
        assert_eq!(prefix(Some("a/")), "a/");
    }

    #[test]
    fn an_s3_destination_needs_a_bucket() {
        for missing in [None, text("  ")] {
            let (d, problems) = s3(RawDestination {
                bucket: missing,
                ..bucket()
            });
            assert_eq!(paths(&problems), ["destinations.s3"]);
            assert_eq!(d.bucket, "");
        }
    }

    #[test]
    fn an_s3_endpoint_must_be_http() {
        let (d, problems) = s3(RawDestination {
            endpoint: text("ftp://x"),
            ..bucket()
        });
        assert_eq!(paths(&problems), ["destinations.s3.endpoint"]);
        assert!(d.endpoint.is_none());
        // A refused endpoint does not make the destination look like a custom store.
        assert_eq!(d.credentials, S3Credentials::DefaultChain);
    }

    #[test]
    fn a_kms_key_needs_kms_encryption() {
        let sse = |sse: Option<&str>, key: Option<&str>| {
            s3(RawDestination {
                server_side_encryption: sse.map(|s| Text(s.to_string())),
                kms_key_id: key.map(|s| Text(s.to_string())),
                ..bucket()
            })
        };
        let (d, problems) = sse(Some("aws:kms"), Some(" k1 "));
        assert!(problems.is_empty());
        assert_eq!(
            d.server_side_encryption,
            Some(ServerSideEncryption::Kms {
                key_id: Some("k1".into())
            })
        );
        let (d, _) = sse(Some("AES256"), None);
        assert_eq!(d.server_side_encryption, Some(ServerSideEncryption::Aes256));
        assert_eq!(
            paths(&sse(Some("AES256"), Some("k")).1),
            ["destinations.s3.kms_key_id"]
        );
        assert_eq!(
            paths(&sse(None, Some("k")).1),
            ["destinations.s3.kms_key_id"]
        );
        assert_eq!(
            paths(&sse(Some("rot13"), Some("k")).1),
            [
                "destinations.s3.server_side_encryption",
                "destinations.s3.kms_key_id"
            ]
        );
    }

    #[test]
    fn parts_are_within_s3s_limits_and_uploads_within_1_to_64() {
        let part = |p: &str| {
            s3(RawDestination {
                part_size: text(p),
                ..bucket()
            })
        };
        assert_eq!(s3(bucket()).0.part_size, 16 << 20);
        assert_eq!(part("5MiB").0.part_size, 5 << 20);
        assert_eq!(part("5GiB").0.part_size, 5 << 30);
        for bad in ["4MiB", "6GiB", "big"] {
            let (d, problems) = part(bad);
            assert_eq!(paths(&problems), ["destinations.s3.part_size"], "{bad}");
            assert_eq!(d.part_size, 16 << 20, "{bad}");
        }
        let uploads = |n: u32| {
            s3(RawDestination {
                upload_concurrency: Some(n),
                ..bucket()
            })
        };
        assert_eq!(s3(bucket()).0.upload_concurrency, 4);
        assert_eq!(uploads(64).0.upload_concurrency, 64);
        for bad in [0, 65] {
            let (d, problems) = uploads(bad);
            assert_eq!(paths(&problems), ["destinations.s3.upload_concurrency"]);
            assert_eq!(d.upload_concurrency, 4);
        }
    }

    #[test]
    fn each_type_refuses_the_other_types_keys() {
        let (d, problems) = check(|v| {
            v.destination(
                "f",
                &RawDestination {
                    kind: text("file"),
                    path: Some(PathBuf::from("archive")),
                    bucket: text("b"),
                    credentials: text("static"),
                    ..RawDestination::default()
                },
            )
        });
        assert_eq!(
            paths(&problems),
            ["destinations.f.bucket", "destinations.f.credentials"]
        );
        let Some(Destination {
            kind: DestinationKind::File(f),
            ..
        }) = d
        else {
            panic!("a file destination with stray keys is still built")
        };
        assert_eq!(f.path, PathBuf::from("/etc/rdbvault/archive"));
        let (_, problems) = check(|v| {
            v.destination(
                "s",
                &RawDestination {
                    path: Some(PathBuf::from("/x")),
                    ..bucket()
                },
            )
        });
        assert_eq!(paths(&problems), ["destinations.s.path"]);
    }

    #[test]
    fn a_destination_without_a_usable_type_or_path_is_left_out() {
        let dest = |d: RawDestination| check(|v| v.destination("d", &d));
        let (d, problems) = dest(RawDestination::default());
        assert!(d.is_none());
        assert_eq!(problems[0].message, "missing `type`: s3 or file");
        let (d, problems) = dest(RawDestination {
            kind: text("ftp"),
            ..RawDestination::default()
        });
        assert!(d.is_none());
        assert_eq!(paths(&problems), ["destinations.d.type"]);
        for path in [None, Some(PathBuf::new())] {
            let (d, problems) = dest(RawDestination {
                kind: text("file"),
                path,
                ..RawDestination::default()
            });
            assert!(d.is_none());
            assert_eq!(problems[0].message, "a file destination needs `path`");
        }
        let (all, problems) = check(|v| v.destinations(&BTreeMap::new()));
        assert!(all.is_empty());
        assert_eq!(paths(&problems), ["destinations"]);
    }
}
