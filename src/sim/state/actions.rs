//! The nine actions' dispatch, their answers, and the parameter checks they share.

use super::{Payload, World};
use crate::sim::auth::Rejection;
use crate::sim::catalog;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// The answer of an action: `Data`, and the `TaskId` style of that action in the reference.
pub struct Answer {
    pub data: serde_json::Value,
    pub task_id: TaskIdStyle,
}

/// How the reference's samples carry `TaskId`: missing, `""`, or a value.
pub enum TaskIdStyle {
    Missing,
    Empty,
    Value(String),
}

/// An answer's `Data` as JSON.
pub(super) fn to_json(value: impl Serialize) -> serde_json::Value {
    // cannot fail: the model types are plain structs of strings, numbers and lists, with no
    // non-string map keys, which serde_json always serialises.
    serde_json::to_value(value).expect("serialisable")
}

/// A rejection with the HTTP status the provider uses for `code`.
pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Rejection {
    let status = match code {
        "ResourceNotFound" => 404,
        "ResourceInUse" => 409,
        "InternalError" | "CreateOrderExcept" => 500,
        _ => 400,
    };
    Rejection {
        status,
        code: code.into(),
        message: message.into(),
    }
}

/// A string parameter that must be there and not empty.
pub(super) fn required<'a>(
    params: &'a BTreeMap<String, serde_json::Value>,
    name: &str,
) -> Result<&'a str, Rejection> {
    match params.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(serde_json::Value::Null) | None => Err(bad("ArgMissing", format!("缺少参数 {name}"))),
        Some(serde_json::Value::String(_)) => Err(bad("ArgMissing", format!("参数 {name} 为空"))),
        Some(_) => Err(bad("InvalidParameter", format!("参数 {name} 应为字符串"))),
    }
}

/// An optional integer parameter (a JSON number, or digits in a string).
pub(super) fn integer(
    params: &BTreeMap<String, serde_json::Value>,
    name: &str,
) -> Result<Option<i64>, Rejection> {
    match params.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad("InvalidParameter", format!("参数 {name} 应为整数"))),
        // The official Python sample sends PaasGoodsId as a string; accept digits.
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| bad("InvalidParameter", format!("参数 {name} 应为整数"))),
        Some(_) => Err(bad("InvalidParameter", format!("参数 {name} 应为整数"))),
    }
}

impl World {
    /// Dispatches one verified call. `params` are the action parameters (query for GET, JSON body
    /// for POST, `null` already removed).
    pub fn handle(
        &mut self,
        action: &str,
        params: &BTreeMap<String, serde_json::Value>,
        now: DateTime<Utc>,
        base_url: &str,
        make_payload: &mut dyn FnMut(u64, u16, u64) -> Payload,
    ) -> Result<Answer, Rejection> {
        match action {
            "DescribeRegins" => Ok(Answer {
                data: to_json(catalog::regions()),
                task_id: TaskIdStyle::Missing,
            }),
            "DescribeAvailableDBConfig" => describe_available_db_config(params),
            "CreateDBInstance" => self.create_instance(params, now),
            "DescribeDBInstances" => Ok(self.describe_instances(params, now)),
            "DeleteDBInstance" => self.delete_instance(params, now),
            "DescribeBackups" => self.describe_backups(params, now),
            "DownloadBackup" => self.download_backup(params, now, base_url),
            "CreateBackup" => self.create_backup(params, now, make_payload),
            "DeleteBackup" => self.delete_backup(params, now),
            other => Err(bad("InvalidParameter", format!("unknown Action {other}"))),
        }
    }
}

/// `DescribeAvailableDBConfig`: the catalogue of one region.
fn describe_available_db_config(
    params: &BTreeMap<String, serde_json::Value>,
) -> Result<Answer, Rejection> {
    let region = required(params, "RegionId")?;
    if !catalog::region_exists(region) {
        return Err(bad("InvalidParameter", format!("站点 {region} 不存在")));
    }
    Ok(Answer {
        data: to_json(catalog::catalogue(region)),
        task_id: TaskIdStyle::Empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::state::Settings;

    fn params(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn call(
        w: &mut World,
        action: &str,
        p: &[(&str, serde_json::Value)],
    ) -> Result<Answer, Rejection> {
        let mut make = |_: u64, _: u16, _: u64| Payload::File(std::sync::Arc::new(vec![0; 8]));
        w.handle(
            action,
            &params(p),
            DateTime::UNIX_EPOCH,
            "http://sim",
            &mut make,
        )
    }

    #[test]
    fn every_action_reaches_its_handler_and_others_are_unknown() {
        let mut w = World::new(Settings::default());
        assert!(matches!(
            call(&mut w, "DescribeRegins", &[]).unwrap().task_id,
            TaskIdStyle::Missing
        ));
        let config = call(
            &mut w,
            "DescribeAvailableDBConfig",
            &[("RegionId", "CN_Beijing_A".into())],
        )
        .unwrap();
        assert!(matches!(config.task_id, TaskIdStyle::Empty));
        assert_eq!(
            call(
                &mut w,
                "DescribeAvailableDBConfig",
                &[("RegionId", "Mars".into())]
            )
            .err()
            .unwrap()
            .message,
            "站点 Mars 不存在"
        );
        assert_eq!(
            call(&mut w, "DescribeDBInstances", &[]).unwrap().data,
            serde_json::json!([])
        );
        for action in [
            "DeleteDBInstance",
            "DescribeBackups",
            "CreateBackup",
            "DeleteBackup",
            "DownloadBackup",
            "CreateDBInstance",
        ] {
            let r = call(&mut w, action, &[]).err().unwrap();
            assert_eq!(r.code, "ArgMissing", "{action} checks its parameters");
        }
        let r = call(&mut w, "describebackups", &[]).err().unwrap();
        assert_eq!(
            (r.status, r.message.as_str()),
            (400, "unknown Action describebackups")
        );
    }

    #[test]
    fn parameters_are_checked_like_the_provider() {
        let p = params(&[
            ("S", "x".into()),
            ("Empty", "".into()),
            ("N", 5.into()),
            ("Digits", "7".into()),
            ("Float", 1.5.into()),
        ]);
        assert_eq!(required(&p, "S").unwrap(), "x");
        assert_eq!(
            required(&p, "Missing").err().unwrap().message,
            "缺少参数 Missing"
        );
        assert_eq!(
            required(&p, "Empty").err().unwrap().message,
            "参数 Empty 为空"
        );
        assert_eq!(required(&p, "N").err().unwrap().code, "InvalidParameter");
        assert_eq!(integer(&p, "N").unwrap(), Some(5));
        assert_eq!(
            integer(&p, "Digits").unwrap(),
            Some(7),
            "the Python sample sends strings"
        );
        assert_eq!(integer(&p, "Missing").unwrap(), None);
        assert!(integer(&p, "S").is_err() && integer(&p, "Float").is_err());
        assert_eq!(
            [
                bad("ResourceNotFound", "").status,
                bad("ResourceInUse", "").status,
                bad("InternalError", "").status,
                bad("ArgMissing", "").status
            ],
            [404, 409, 500, 400]
        );
    }
}
