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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub required: bool,
    pub ty: ParamType,
    /// A secret (the new instance's password): callers must not take it from a command line,
    /// and it is carried as a [`crate::secret::Secret`] until the request body is built.
    pub secret: bool,
    /// What the value is, for a message that asks for it (docs/cds-api.md §2.3, §3).
    pub meaning: &'static str,
}

const fn req(name: &'static str, meaning: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: true,
        ty: ParamType::String,
        secret: false,
        meaning,
    }
}
const fn opt(name: &'static str, meaning: &'static str) -> ParamSpec {
    ParamSpec {
        required: false,
        ..req(name, meaning)
    }
}
const fn int(name: &'static str, required: bool, meaning: &'static str) -> ParamSpec {
    ParamSpec {
        required,
        ty: ParamType::Integer,
        ..req(name, meaning)
    }
}
const fn secret(name: &'static str, meaning: &'static str) -> ParamSpec {
    ParamSpec {
        secret: true,
        ..req(name, meaning)
    }
}

/// The meaning of `InstanceUuid` wherever it names one instance.
const ONE_INSTANCE: &str = "the instance's uuid (DescribeDBInstances lists them)";

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
        const REGION: &[ParamSpec] = &[req(
            "RegionId",
            "the site whose offers to list, e.g. CN_Beijing_A (DescribeRegins lists the sites)",
        )];
        const CREATE_INSTANCE: &[ParamSpec] = &[
            req(
                "RegionId",
                "the site to create it in, e.g. CN_Beijing_A (DescribeRegins lists the sites)",
            ),
            req(
                "VdcId",
                "the virtual data centre (VDC) the instance goes in",
            ),
            req("BasePipeId", "the VDC's private network the instance joins"),
            req("InstanceName", "the new instance's name"),
            int(
                "PaasGoodsId",
                true,
                "the offer to buy (version, architecture, RAM): a number from DescribeAvailableDBConfig RegionId=<site>",
            ),
            secret("Password", "the new instance's Redis password"),
            // The reference explains neither of these two.
            int("TestGroupId", false, ""),
            int("Amount", false, "how many instances to create"),
            int("ServicePort", false, "the port Redis listens on"),
            int("SubjectId", false, ""),
        ];
        const FILTERS: &[ParamSpec] = &[
            opt("InstanceUuid", "only this instance"),
            opt("InstanceName", "only instances of this name"),
            opt("IP", "only instances whose IP contains this"),
            opt("TagName", "only instances with this tag"),
        ];
        // The reference marks InstanceUuid optional for DeleteDBInstance; every real caller sends it.
        const INSTANCE: &[ParamSpec] = &[req("InstanceUuid", ONE_INSTANCE)];
        const BACKUP: &[ParamSpec] = &[
            req("InstanceUuid", ONE_INSTANCE),
            req(
                "BackupId",
                "the backup's id (DescribeBackups InstanceUuid=<uuid> lists them)",
            ),
        ];
        const CREATE_BACKUP: &[ParamSpec] = &[
            req("InstanceUuid", ONE_INSTANCE),
            opt("Desc", "free text kept with the backup"),
        ];
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

    /// The accepted name closest to a misspelt one (`InstanceUUID`, `instance_uuid` →
    /// `InstanceUuid`), if it is a likely typo.
    pub fn suggest_param(self, given: &str) -> Option<&'static str> {
        suggest(given, self.params().iter().map(|p| p.name))
    }

    /// Says that `name` is not one of this action's parameters, with a "did you mean".
    pub fn unknown_param(self, name: &str) -> String {
        if self.params().is_empty() {
            return format!("unknown parameter `{name}`: {self} takes none");
        }
        format!(
            "unknown parameter `{name}`{}",
            did_you_mean(name, self.suggest_param(name))
        )
    }

    /// The accepted parameters, for a message: `X takes A, B (required) and C (optional)`.
    pub fn accepted(self) -> String {
        let names = |required: bool| {
            let list: Vec<_> = self
                .params()
                .iter()
                .filter(|p| p.required == required)
                .map(|p| p.name)
                .collect();
            list.join(", ")
        };
        match (names(true), names(false)) {
            (r, o) if r.is_empty() && o.is_empty() => format!("{self} takes no parameters"),
            (r, o) if o.is_empty() => format!("{self} takes {r} (all required)"),
            (r, o) if r.is_empty() => format!("{self} takes {o} (all optional)"),
            (r, o) => format!("{self} takes {r} (required) and {o} (optional)"),
        }
    }

    /// Every required parameter `given` does not hold, in the documented order.
    pub fn missing_required(self, given: impl Fn(&str) -> bool) -> Vec<&'static ParamSpec> {
        self.params()
            .iter()
            .filter(|p| p.required && !given(p.name))
            .collect()
    }
}

/// A name folded for comparison: case, `_` and `-` do not count.
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The closest of `candidates` to `given`, if it is close enough to be a likely typo
/// (Jaro-Winkler over the folded names, as the config's suggestions).
pub fn suggest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let given = fold(given);
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&given, &fold(c)), c))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// ` (did you mean `X`?)`, saying so when only the case or a `_` differs; empty without a
/// suggestion.
pub fn did_you_mean(given: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) if fold(s) == fold(given) => {
            format!(" (did you mean `{s}`? names are case-sensitive)")
        }
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an action name that is not one of the nine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action `{given}`{}; the Redis API has: {}",
    did_you_mean(given, *suggestion),
    Action::ALL.map(|a| a.name()).join(", ")
)]
pub struct UnknownAction {
    pub given: String,
    /// The action `given` is probably a typo of.
    pub suggestion: Option<&'static str>,
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
                suggestion: suggest(s, Action::ALL.map(|a| a.name())),
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

    #[test]
    fn a_misspelt_parameter_name_gets_the_accepted_one() {
        let a = Action::DescribeBackups;
        for given in [
            "InstanceUUID",
            "instanceuuid",
            "instance_uuid",
            "InstanceUid",
        ] {
            assert_eq!(a.suggest_param(given), Some("InstanceUuid"), "{given}");
        }
        assert_eq!(a.suggest_param("BackupId"), None);
        assert_eq!(
            Action::CreateDbInstance.suggest_param("password"),
            Some("Password")
        );
        assert_eq!(Action::DescribeDbInstances.suggest_param("ip"), Some("IP"));
    }

    #[test]
    fn an_unknown_parameter_message_says_when_only_the_case_differs() {
        assert_eq!(
            Action::DescribeBackups.unknown_param("InstanceUUID"),
            "unknown parameter `InstanceUUID` (did you mean `InstanceUuid`? names are case-sensitive)"
        );
        assert_eq!(
            Action::DescribeBackups.unknown_param("InstanceUid"),
            "unknown parameter `InstanceUid` (did you mean `InstanceUuid`?)"
        );
        assert_eq!(
            Action::DescribeBackups.unknown_param("Colour"),
            "unknown parameter `Colour`"
        );
        assert_eq!(
            Action::DescribeRegions.unknown_param("RegionId"),
            "unknown parameter `RegionId`: DescribeRegins takes none"
        );
    }

    #[test]
    fn a_misspelt_action_gets_a_suggestion_and_the_list() {
        for (given, want) in [
            ("DescribeBackup", "DescribeBackups"),
            ("describebackups", "DescribeBackups"),
            ("DescribeRegion", "DescribeRegins"),
            ("CreateDbInstance", "CreateDBInstance"),
            ("DeleteBackups", "DeleteBackup"),
        ] {
            let err = given.parse::<Action>().unwrap_err();
            assert_eq!(err.suggestion, Some(want), "{given}");
            assert!(err.to_string().contains(&format!("did you mean `{want}`?")));
        }
        let err = "Frobnicate".parse::<Action>().unwrap_err();
        assert_eq!(err.suggestion, None);
        assert!(
            err.to_string().ends_with("CreateBackup, DeleteBackup"),
            "{err}"
        );
    }

    #[test]
    fn every_missing_required_parameter_is_listed_in_the_documented_order() {
        let given = ["RegionId", "InstanceName", "Amount"];
        let missing: Vec<_> = Action::CreateDbInstance
            .missing_required(|n| given.contains(&n))
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(missing, ["VdcId", "BasePipeId", "PaasGoodsId", "Password"]);
        assert!(
            Action::DescribeDbInstances
                .missing_required(|_| false)
                .is_empty()
        );
    }

    #[test]
    fn every_required_parameter_says_what_it_is() {
        for a in Action::ALL {
            for p in a.params().iter().filter(|p| p.required) {
                assert!(!p.meaning.is_empty(), "{a} {}", p.name);
            }
        }
    }

    #[test]
    fn only_the_new_instances_password_is_secret() {
        let secrets: Vec<_> = Action::ALL
            .into_iter()
            .flat_map(|a| {
                a.params()
                    .iter()
                    .filter(|p| p.secret)
                    .map(move |p| (a, p.name))
            })
            .collect();
        assert_eq!(secrets, [(Action::CreateDbInstance, "Password")]);
    }

    #[test]
    fn the_accepted_list_separates_required_from_optional() {
        assert_eq!(
            Action::CreateBackup.accepted(),
            "CreateBackup takes InstanceUuid (required) and Desc (optional)"
        );
        assert_eq!(
            Action::DownloadBackup.accepted(),
            "DownloadBackup takes InstanceUuid, BackupId (all required)"
        );
        assert_eq!(
            Action::DescribeDbInstances.accepted(),
            "DescribeDBInstances takes InstanceUuid, InstanceName, IP, TagName (all optional)"
        );
        assert_eq!(
            Action::DescribeRegions.accepted(),
            "DescribeRegins takes no parameters"
        );
    }
}
