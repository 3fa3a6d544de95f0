//! Typed errors: the sidecar's own JSON-RPC errors ([`SidecarError::Rpc`]) apart from transport and lifecycle
//! failures, so a caller can tell "the project does not exist" from "the sidecar is down".

use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::protocol::RpcError;

/// How a sidecar process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it (Unix).
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub(crate) fn from_status(status: &std::process::ExitStatus) -> Self {
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(status);
        #[cfg(not(unix))]
        let signal = None;
        ExitInfo { code: status.code(), signal }
    }

    pub(crate) fn unknown() -> Self {
        ExitInfo { code: None, signal: None }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => write!(f, "signal {sig}"),
            (None, None) => write!(f, "unknown status"),
        }
    }
}

/// Everything a sidecar call or start can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SidecarError {
    /// The sidecar answered with a JSON-RPC error (an application error such as `not_found`, or a protocol error
    /// such as an unknown method). The sidecar itself is fine.
    #[error("sidecar error: {0}")]
    Rpc(RpcError),

    /// The sidecar executable could not be started.
    #[error("cannot start the sidecar {program}: {reason}")]
    Spawn { program: String, reason: String },

    /// The sidecar did not announce `sidecar.ready` in time.
    #[error("the sidecar did not get ready within {timeout:?}{}", tail_suffix(.stderr_tail))]
    ReadyTimeout { timeout: Duration, stderr_tail: Vec<String> },

    /// The sidecar's first line was not a valid `sidecar.ready` notification.
    #[error("bad sidecar handshake: {reason}{}", tail_suffix(.stderr_tail))]
    Handshake { reason: String, stderr_tail: Vec<String> },

    /// The sidecar process ended while this call was in flight, or before it got ready; the call's outcome is
    /// unknown. A supervised sidecar is being restarted.
    #[error("the sidecar process exited ({exit}){}", tail_suffix(.stderr_tail))]
    Exited { exit: ExitInfo, stderr_tail: Vec<String> },

    /// No sidecar process is ready (it is restarting and did not come back within the wait).
    #[error("the sidecar is unavailable: {0}")]
    Unavailable(String),

    /// No answer within the call's timeout.
    #[error("the sidecar did not answer {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },

    /// Reading from or writing to the sidecar's pipes failed.
    #[error("sidecar I/O error: {0}")]
    Io(String),

    /// The shell refuses to forward this method (e.g. `system.shutdown`: the shell owns the sidecar's lifetime).
    #[error("method {0} is not allowed from the shell")]
    NotAllowed(String),

    /// The sidecar was stopped (the shell is exiting).
    #[error("the sidecar has been shut down")]
    ShutDown,
}

fn tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines:\n{}", tail.join("\n"))
    }
}

impl SidecarError {
    /// The short machine-readable kind: `rpc` for the sidecar's own errors, a transport/lifecycle kind otherwise.
    pub fn kind(&self) -> &'static str {
        match self {
            SidecarError::Rpc(_) => "rpc",
            SidecarError::Spawn { .. } => "spawn",
            SidecarError::ReadyTimeout { .. } => "ready_timeout",
            SidecarError::Handshake { .. } => "handshake",
            SidecarError::Exited { .. } => "exited",
            SidecarError::Unavailable(_) => "unavailable",
            SidecarError::Timeout { .. } => "timeout",
            SidecarError::Io(_) => "io",
            SidecarError::NotAllowed(_) => "not_allowed",
            SidecarError::ShutDown => "shut_down",
        }
    }

    /// The JSON-RPC error object, for [`SidecarError::Rpc`].
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            SidecarError::Rpc(e) => Some(e),
            _ => None,
        }
    }

    /// True for errors of the transport or the process, as opposed to the sidecar's own answers.
    pub fn is_transport(&self) -> bool {
        !matches!(self, SidecarError::Rpc(_) | SidecarError::NotAllowed(_))
    }
}

/// Serialised for the webview as `{"kind": "rpc", "code", "message", "data"}` for the sidecar's errors and
/// `{"kind": "<transport kind>", "message"}` for the others.
impl Serialize for SidecarError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        match self {
            SidecarError::Rpc(e) => {
                map.serialize_entry("code", &e.code)?;
                map.serialize_entry("message", &e.message)?;
                map.serialize_entry("data", e.data.as_ref().unwrap_or(&Value::Null))?;
            }
            SidecarError::Exited { exit, .. } => {
                map.serialize_entry("message", &self.to_string())?;
                map.serialize_entry("exit", exit)?;
            }
            other => map.serialize_entry("message", &other.to_string())?,
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpc_errors_serialise_with_code_and_data() {
        let err = SidecarError::Rpc(RpcError {
            code: -32004,
            message: "no project abc".into(),
            data: Some(json!({"name": "not_found", "details": {}})),
        });
        assert!(!err.is_transport());
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"kind": "rpc", "code": -32004, "message": "no project abc",
                   "data": {"name": "not_found", "details": {}}})
        );
        let err = SidecarError::Timeout { method: "system.ping".into(), timeout: Duration::from_secs(1) };
        assert!(err.is_transport());
        assert_eq!(serde_json::to_value(&err).unwrap()["kind"], json!("timeout"));
    }
}
