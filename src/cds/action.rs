//! The nine actions of the CDS Redis API and what each one takes.
//!
//! One table drives the client (method, where parameters travel), the `api` command (which keys are
//! known, which are integers, which actions need `--yes`) and the simulator (what to check).

use super::sign::Method;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    DescribeRegions,
    DescribeAvailableDbConfig,
    CreateDbInstance,
    DescribeDbInstances,
    DeleteDbInstance,
    DescribeBackups,
    DownloadBackup,
    CreateBackup,
    DeleteBackup,
}

/// The JSON type of an action parameter in a POST body (GET parameters are always strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
}

/// One parameter an action accepts.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub required: bool,
    pub ty: ParamType,
}

const fn req(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: true,
        ty: ParamType::String,
    }
}
const fn opt(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: false,
        ty: ParamType::String,
    }
}
const fn int(name: &'static str, required: bool) -> ParamSpec {
    ParamSpec {
        name,
        required,
        ty: ParamType::Integer,
    }
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::DescribeRegions,
        Action::DescribeAvailableDbConfig,
        Action::CreateDbInstance,
        Action::DescribeDbInstances,
        Action::DeleteDbInstance,
        Action::DescribeBackups,
        Action::DownloadBackup,
        Action::CreateBackup,
        Action::DeleteBackup,
    ];

    /// The action name on the wire. `DescribeRegins` is the provider's spelling, not a typo of ours.
    pub fn name(self) -> &'static str {
        match self {
            Action::DescribeRegions => "DescribeRegins",
            Action::DescribeAvailableDbConfig => "DescribeAvailableDBConfig",
            Action::CreateDbInstance => "CreateDBInstance",
            Action::DescribeDbInstances => "DescribeDBInstances",
            Action::DeleteDbInstance => "DeleteDBInstance",
            Action::DescribeBackups => "DescribeBackups",
            Action::DownloadBackup => "DownloadBackup",
            Action::CreateBackup => "CreateBackup",
            Action::DeleteBackup => "DeleteBackup",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Action::CreateDbInstance
            | Action::DeleteDbInstance
            | Action::CreateBackup
            | Action::DeleteBackup => Method::Post,
            _ => Method::Get,
        }
    }

    /// Actions that destroy or create billable resources; the `api` command asks for `--yes`.
    pub fn is_destructive(self) -> bool {
        matches!(
            self,
            Action::CreateDbInstance | Action::DeleteDbInstance | Action::DeleteBackup
        )
    }

    /// Whether sending the same call twice has the same effect as once. A retried `CreateBackup`
    /// or `CreateDBInstance` whose first attempt reached the server makes a second resource, so the
    /// client retries those only when the server certainly did not act (see `Error::is_retryable`).
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Action::CreateDbInstance | Action::CreateBackup)
    }

    /// The parameters the provider documents for this action.
    pub fn params(self) -> &'static [ParamSpec] {
        const REGION: &[ParamSpec] = &[req("RegionId")];
        const CREATE_INSTANCE: &[ParamSpec] = &[
            req("RegionId"),
            req("VdcId"),
            req("BasePipeId"),
            req("InstanceName"),
            int("PaasGoodsId", true),
            req("Password"),
            int("TestGroupId", false),
            int("Amount", false),
            int("ServicePort", false),
            int("SubjectId", false),
        ];
        const FILTERS: &[ParamSpec] = &[
            opt("InstanceUuid"),
            opt("InstanceName"),
            opt("IP"),
            opt("TagName"),
        ];
        // The reference marks InstanceUuid optional for DeleteDBInstance; every real caller sends it.
        const INSTANCE: &[ParamSpec] = &[req("InstanceUuid")];
        const BACKUP: &[ParamSpec] = &[req("InstanceUuid"), req("BackupId")];
        const CREATE_BACKUP: &[ParamSpec] = &[req("InstanceUuid"), opt("Desc")];
        match self {
            Action::DescribeRegions => &[],
            Action::DescribeAvailableDbConfig => REGION,
            Action::CreateDbInstance => CREATE_INSTANCE,
            Action::DescribeDbInstances => FILTERS,
            Action::DeleteDbInstance | Action::DescribeBackups => INSTANCE,
            Action::DownloadBackup | Action::DeleteBackup => BACKUP,
            Action::CreateBackup => CREATE_BACKUP,
        }
    }

    pub fn param(self, name: &str) -> Option<&'static ParamSpec> {
        self.params().iter().find(|p| p.name == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an action name that is not one of the nine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{given}`; the Redis API has: {}", Action::ALL.map(|a| a.name()).join(", "))]
pub struct UnknownAction {
    pub given: String,
}

impl FromStr for Action {
    type Err = UnknownAction;

    /// Accepts the wire name; `DescribeRegions` is accepted too, since people will type it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "DescribeRegions" {
            return Ok(Action::DescribeRegions);
        }
        Action::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAction {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keep_the_provider_spelling() {
        for a in Action::ALL {
            assert_eq!(a.name().parse::<Action>().unwrap(), a);
        }
        assert_eq!(Action::DescribeRegions.name(), "DescribeRegins");
        assert_eq!(
            "DescribeRegions".parse::<Action>().unwrap(),
            Action::DescribeRegions
        );
        assert!("DescribeBackup".parse::<Action>().is_err());
    }

    #[test]
    fn writes_are_post_reads_are_get() {
        let posts: Vec<_> = Action::ALL
            .into_iter()
            .filter(|a| a.method() == Method::Post)
            .collect();
        assert_eq!(
            posts,
            [
                Action::CreateDbInstance,
                Action::DeleteDbInstance,
                Action::CreateBackup,
                Action::DeleteBackup
            ]
        );
    }
}
