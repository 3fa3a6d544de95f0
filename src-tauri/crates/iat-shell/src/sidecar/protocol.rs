//! The wire format: newline-delimited JSON-RPC 2.0 messages (one JSON object per line, UTF-8).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The method of the sidecar's first stdout line.
pub const READY_METHOD: &str = "sidecar.ready";

/// A JSON-RPC error object as the sidecar sends it: `{"code", "message", "data": {"name", "details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// The sidecar's stable error name (`data.name`, e.g. `"not_found"`), when it sent one.
    pub fn name(&self) -> Option<&str> {
        self.data.as_ref()?.get("name")?.as_str()
    }

    /// The error's structured details (`data.details`), when it sent some.
    pub fn details(&self) -> Option<&Value> {
        self.data.as_ref()?.get("details")
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({}, code {})", self.message, name, self.code),
            None => write!(f, "{} (code {})", self.message, self.code),
        }
    }
}

/// A notification from the sidecar: a message with a `method` and no `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// The params of the `sidecar.ready` notification (also written to `$IAT_HOME/sidecar.json`).
///
/// Only `pid` is required; the rest is kept as sent so a newer sidecar can add fields. `token` guards the sidecar's
/// network transports: it is never printed by `Debug` and [`ReadyInfo::public`] leaves it out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub pid: u32,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub schema_version: Option<Value>,
    #[serde(default)]
    pub home: Option<String>,
    #[serde(default)]
    pub tcp: Option<Value>,
    #[serde(default)]
    pub http: Option<Value>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ReadyInfo {
    /// The ready params without the secret token, fit for a webview or a log.
    pub fn public(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = value.as_object_mut() {
            obj.remove("token");
        }
        value
    }
}

impl std::fmt::Debug for ReadyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyInfo")
            .field("pid", &self.pid)
            .field("version", &self.version)
            .field("schema_version", &self.schema_version)
            .field("home", &self.home)
            .field("tcp", &self.tcp)
            .field("http", &self.http)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// One line read from the sidecar's stdout, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A response to one of our requests.
    Response { id: u64, outcome: Result<Value, RpcError> },
    /// A notification (method, no id).
    Notification(Notification),
    /// A request from the sidecar to the shell (method and id); the shell serves none.
    Request { id: Value, method: String },
    /// Anything else: not JSON, not an object, a response to an id we never sent...
    Invalid(String),
}

pub(crate) fn classify(line: &str) -> Incoming {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Incoming::Invalid(format!("not JSON ({e})")),
    };
    let Value::Object(mut obj) = value else {
        return Incoming::Invalid("not a JSON object".into());
    };
    let id = obj.remove("id");
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), None) => {
            Incoming::Notification(Notification { method, params: obj.remove("params").unwrap_or(Value::Null) })
        }
        (Some(Value::String(method)), Some(id)) => Incoming::Request { id, method },
        (Some(_), _) => Incoming::Invalid("method is not a string".into()),
        (None, Some(id)) => {
            let Some(id) = id.as_u64() else {
                return Incoming::Invalid(format!("response with an id the shell never sends: {id}"));
            };
            if let Some(error) = obj.remove("error") {
                match serde_json::from_value::<RpcError>(error) {
                    Ok(err) => Incoming::Response { id, outcome: Err(err) },
                    Err(e) => Incoming::Invalid(format!("malformed error object ({e})")),
                }
            } else if let Some(result) = obj.remove("result") {
                Incoming::Response { id, outcome: Ok(result) }
            } else {
                Incoming::Invalid("response with neither result nor error".into())
            }
        }
        (None, None) => Incoming::Invalid("neither a method nor an id".into()),
    }
}

/// A request line (with its trailing newline).
pub(crate) fn request_line(id: u64, method: &str, params: &Value) -> String {
    let mut msg = Map::new();
    msg.insert("jsonrpc".into(), Value::from("2.0"));
    msg.insert("id".into(), Value::from(id));
    msg.insert("method".into(), Value::from(method));
    if !params.is_null() {
        msg.insert("params".into(), params.clone());
    }
    let mut line = Value::Object(msg).to_string();
    line.push('\n');
    line
}

/// The error reply to a request from the sidecar (the shell serves no methods).
pub(crate) fn method_not_found_line(id: &Value, method: &str) -> String {
    let mut line = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32601, "message": format!("the shell serves no method {method:?}"),
                  "data": {"name": "method_not_found", "details": {}}},
    })
    .to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_results_errors_and_notifications() {
        match classify(r#"{"jsonrpc":"2.0","id":7,"result":{"pong":true}}"#) {
            Incoming::Response { id: 7, outcome: Ok(v) } => assert_eq!(v, json!({"pong": true})),
            other => panic!("{other:?}"),
        }
        let line = r#"{"jsonrpc":"2.0","id":8,"error":{"code":-32004,"message":"no","data":{"name":"not_found","details":{}}}}"#;
        match classify(line) {
            Incoming::Response { id: 8, outcome: Err(e) } => {
                assert_eq!((e.code, e.name()), (-32004, Some("not_found")));
            }
            other => panic!("{other:?}"),
        }
        match classify(r#"{"jsonrpc":"2.0","method":"project.created","params":{"slug":"a"}}"#) {
            Incoming::Notification(n) => {
                assert_eq!((n.method.as_str(), n.params), ("project.created", json!({"slug": "a"})))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify("{}"), Incoming::Invalid(_)));
        assert!(matches!(classify("nope"), Incoming::Invalid(_)));
        assert!(matches!(classify(r#"{"id":null,"error":{"code":-32700,"message":"x"}}"#), Incoming::Invalid(_)));
        assert!(matches!(classify(r#"{"id":1,"method":"ui.ask"}"#), Incoming::Request { .. }));
    }

    #[test]
    fn request_lines_are_one_line_and_omit_null_params() {
        let line = request_line(3, "system.ping", &Value::Null);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v, json!({"jsonrpc": "2.0", "id": 3, "method": "system.ping"}));
        let line = request_line(4, "projects.get", &json!({"slug": "a\nb"}));
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn ready_info_hides_its_token() {
        let info: ReadyInfo =
            serde_json::from_value(json!({"pid": 5, "token": "s3cret", "version": "0.1.0", "new": 1})).unwrap();
        assert!(!format!("{info:?}").contains("s3cret"));
        assert!(info.public().get("token").is_none());
        assert_eq!(info.public()["new"], json!(1));
    }
}
