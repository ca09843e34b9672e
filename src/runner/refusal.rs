//! Provider values the runner will not build on: an id that cannot name a copy, the same backup
//! listed twice, a size larger than rdbvault believes or the destination accepts.
//!
//! The checks are pure ([`check_size`], [`vet_records`]; their reasons are [`Refusal`]); [`refuse`] counts a refusal in
//! `provider_values_rejected{policy, field}` and turns it into the job's failure, so every
//! refused value is both visible on a dashboard and named in the job's error.

use super::{Context, Stop};
use crate::cds::model::Backup;
use crate::store::JobRow;
use crate::transfer::UnsafeProviderId;
use anyhow::anyhow;

/// Which limit a refused size broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `limits.max_backup_size`.
    MaxBackupSize,
    /// The destination's own largest object, smaller than `limits.max_backup_size`.
    Destination,
}

/// Why a provider value is refused.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    /// An id that cannot be part of a key or a path.
    UnsafeId(UnsafeProviderId),
    /// `DescribeBackups` lists the same backup id twice: an ambiguous answer.
    Duplicate { backup_id: String },
    /// A size beyond what rdbvault believes or the destination accepts.
    Oversize {
        backup_id: String,
        size: u64,
        limit: u64,
        set_by: Limit,
    },
}

impl From<UnsafeProviderId> for Refusal {
    fn from(e: UnsafeProviderId) -> Self {
        Refusal::UnsafeId(e)
    }
}

impl Refusal {
    /// The `field` label of `provider_values_rejected`.
    pub(super) fn field(&self) -> &'static str {
        match self {
            Refusal::UnsafeId(e) => e.field,
            Refusal::Duplicate { .. } => "backup_id",
            Refusal::Oversize { .. } => "backup_size",
        }
    }

    /// The job's error: which value of which instance, and what to do about it.
    fn into_error(self, instance_uuid: &str) -> anyhow::Error {
        match self {
            Refusal::UnsafeId(e) => anyhow::Error::new(e),
            Refusal::Duplicate { backup_id } => anyhow!(
                "DescribeBackups lists backup {backup_id} of instance {instance_uuid} more than once; refusing an ambiguous answer"
            ),
            Refusal::Oversize {
                backup_id,
                size,
                limit,
                set_by,
            } => anyhow!(
                "the provider says backup {backup_id} of instance {instance_uuid} is {size} bytes, more than {} allows ({}); refusing it as implausible (raise limits.max_backup_size if it is real)",
                match set_by {
                    Limit::Destination => "the destination",
                    Limit::MaxBackupSize => "limits.max_backup_size",
                },
                crate::config::units::format_size(limit)
            ),
        }
    }
}

/// The most a backup of this job may be: `limits.max_backup_size`, and the destination's own
/// largest object where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SizeLimits {
    pub max_backup_size: u64,
    pub largest_object: Option<u64>,
}

impl SizeLimits {
    /// The limits for this job's destination (none of its own if it is gone from the config).
    pub(super) fn of(ctx: &Context, job: &JobRow) -> SizeLimits {
        SizeLimits {
            max_backup_size: ctx.config.limits.max_backup_size,
            largest_object: ctx
                .destinations
                .get(&job.destination)
                .and_then(|d| d.largest_object()),
        }
    }
}

/// Checks a `BackupSize` the provider announced against the limits. No announced size is no
/// refusal here (the download is cut off past `limits.max_backup_size` instead).
pub(super) fn check_size(
    backup_id: &str,
    size: Option<u64>,
    limits: SizeLimits,
) -> Result<(), Refusal> {
    let Some(size) = size else { return Ok(()) };
    let max = limits.max_backup_size;
    let limit = limits.largest_object.map_or(max, |l| max.min(l));
    if size > limit {
        return Err(Refusal::Oversize {
            backup_id: backup_id.to_string(),
            size,
            limit,
            set_by: if limit < max {
                Limit::Destination
            } else {
                Limit::MaxBackupSize
            },
        });
    }
    Ok(())
}

/// Checks a finished set of backup records before any of it is journaled: every id becomes part of a key, each
/// backup must be listed once, and a size decides buffers and bounds the download. The first
/// record that fails a check, in the provider's order, is the one refused.
pub(super) fn vet_records(records: &[Backup], limits: SizeLimits) -> Result<(), Refusal> {
    let mut seen = std::collections::HashSet::new();
    for b in records {
        crate::transfer::check_provider_id("backup_id", &b.backup_id)?;
        if !seen.insert(b.backup_id.as_str()) {
            return Err(Refusal::Duplicate {
                backup_id: b.backup_id.clone(),
            });
        }
        check_size(&b.backup_id, b.backup_size, limits)?;
    }
    Ok(())
}

/// Counts a refused value and fails the job saying which.
pub(super) fn refuse(ctx: &Context, job: &JobRow, refusal: Refusal) -> Stop {
    ctx.metrics
        .provider_values_rejected
        .with_label_values(&[job.policy.as_str(), refusal.field()])
        .inc();
    Stop::Fail(refusal.into_error(&job.instance_uuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A finished record of 4 KiB.
    fn record(id: &str) -> Backup {
        Backup {
            backup_id: id.into(),
            status: Backup::FINISHED.into(),
            backup_size: Some(4096),
            ..Backup::default()
        }
    }

    fn limits(max: u64, largest_object: Option<u64>) -> SizeLimits {
        SizeLimits {
            max_backup_size: max,
            largest_object,
        }
    }

    #[test]
    fn a_size_up_to_the_limit_is_accepted_and_one_byte_more_is_refused() {
        let l = limits(10 * GIB, None);
        assert_eq!(check_size("b1", Some(10 * GIB), l), Ok(()));
        assert_eq!(
            check_size("b1", Some(10 * GIB + 1), l),
            Err(Refusal::Oversize {
                backup_id: "b1".into(),
                size: 10 * GIB + 1,
                limit: 10 * GIB,
                set_by: Limit::MaxBackupSize,
            })
        );
    }

    #[test]
    fn an_unannounced_size_is_never_refused_here() {
        assert_eq!(check_size("b1", None, limits(1, Some(1))), Ok(()));
    }

    #[test]
    fn a_destination_limit_below_max_backup_size_is_the_one_that_refuses() {
        let refused = check_size("b1", Some(6 * GIB), limits(10 * GIB, Some(5 * GIB)));
        assert!(
            matches!(
                refused,
                Err(Refusal::Oversize {
                    limit,
                    set_by: Limit::Destination,
                    ..
                }) if limit == 5 * GIB
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_destination_limit_above_or_equal_to_max_backup_size_leaves_the_setting_in_charge() {
        for largest in [10 * GIB, 5000 * GIB] {
            let refused = check_size("b1", Some(11 * GIB), limits(10 * GIB, Some(largest)));
            assert!(
                matches!(
                    refused,
                    Err(Refusal::Oversize {
                        set_by: Limit::MaxBackupSize,
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn each_refusal_is_counted_under_the_field_it_concerns() {
        let unsafe_id = crate::transfer::check_provider_id("shard_id", "../x").unwrap_err();
        assert_eq!(Refusal::from(unsafe_id).field(), "shard_id");
        assert_eq!(
            Refusal::Duplicate {
                backup_id: "b".into()
            }
            .field(),
            "backup_id"
        );
        let oversize = check_size("b", Some(2), limits(1, None)).unwrap_err();
        assert_eq!(oversize.field(), "backup_size");
    }

    #[test]
    fn an_oversize_message_names_the_backup_the_instance_and_the_limit_that_refused_it() {
        let refused = check_size("b-7", Some(2048), limits(4096, Some(1024))).unwrap_err();
        let text = format!("{:#}", refused.into_error("inst-1"));
        assert_eq!(
            text,
            format!(
                "the provider says backup b-7 of instance inst-1 is 2048 bytes, more than the destination allows ({}); refusing it as implausible (raise limits.max_backup_size if it is real)",
                crate::config::units::format_size(1024)
            )
        );
    }

    #[test]
    fn a_finished_set_is_refused_for_an_unsafe_id_a_duplicate_or_an_oversize_record() {
        let ok = vec![record("a"), record("b")];
        assert_eq!(vet_records(&ok, limits(GIB, None)), Ok(()));

        let unsafe_id = vec![record("a/..")];
        assert!(matches!(
            vet_records(&unsafe_id, limits(GIB, None)),
            Err(Refusal::UnsafeId(e)) if e.field == "backup_id"
        ));

        let twice = vec![record("a"), record("a")];
        assert_eq!(
            vet_records(&twice, limits(GIB, None)),
            Err(Refusal::Duplicate {
                backup_id: "a".into()
            })
        );

        let mut huge = record("h");
        huge.backup_size = Some(GIB + 1);
        assert!(matches!(
            vet_records(&[record("a"), huge], limits(GIB, None)),
            Err(Refusal::Oversize { backup_id, .. }) if backup_id == "h"
        ));
    }
}
