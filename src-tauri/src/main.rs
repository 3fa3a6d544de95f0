//! The IAT Toolkit desktop shell: starts the frozen sidecar, forwards the webview's calls to it and its
//! notifications to the webview, and stops it (with everything it started) when the app exits.
//!
//! Webview API (granted by capabilities/main-window.json, nothing else is):
//! - command `sidecar_call {method, params}` -> the sidecar's result, or an error object
//!   `{"kind": "rpc", code, message, data}` (the sidecar's own error) / `{"kind": "<transport kind>", message}`;
//! - command `sidecar_status` -> `{state, program, recent}` (the supervisor state and the last events);
//! - events `sidecar://notification` (`{method, params}`) and `sidecar://status` (lifecycle: ready, exited,
//!   restarting, start_failed, stopped).
#![cfg_attr(all(not(debug_assertions), target_os = "windows"), windows_subsystem = "windows")]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use iat_shell::sidecar::SIDECAR_EXE;
use iat_shell::{Sidecar, SidecarConfig, SidecarError, SidecarEvent};
use serde_json::{json, Value};
use tauri::{AppHandle, Emitter, Manager, RunEvent};
use tokio::sync::broadcast::error::RecvError;

const NOTIFICATION_EVENT: &str = "sidecar://notification";
const STATUS_EVENT: &str = "sidecar://status";
/// How many recent sidecar events `sidecar_status` returns (for a page that loads after they happened).
const RECENT_EVENTS: usize = 50;
/// Methods the webview may not call: the shell owns the sidecar's lifetime.
const DENIED_METHODS: &[&str] = &["system.shutdown"];

struct Shell {
    sidecar: Sidecar,
    program: PathBuf,
    recent: Mutex<VecDeque<Value>>,
    /// `IAT_TOOLKIT_LOG_CALLS=1`: log each webview call (scripts/test-app checks the page reached the sidecar).
    log_calls: bool,
}

impl Shell {
    fn remember(&self, entry: Value) {
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }
}

#[tauri::command]
async fn sidecar_call(
    shell: tauri::State<'_, Shell>,
    method: String,
    params: Option<Value>,
) -> Result<Value, SidecarError> {
    if DENIED_METHODS.contains(&method.as_str()) {
        return Err(SidecarError::NotAllowed(method));
    }
    let result = shell.sidecar.call(&method, params.unwrap_or(Value::Null)).await;
    if shell.log_calls {
        match &result {
            Ok(_) => eprintln!("[iat-toolkit] sidecar_call {method}: ok"),
            Err(e) => eprintln!("[iat-toolkit] sidecar_call {method}: {} error: {e}", e.kind()),
        }
    }
    result
}

#[tauri::command]
fn sidecar_status(shell: tauri::State<'_, Shell>) -> Value {
    let recent: Vec<Value> = shell.recent.lock().unwrap().iter().cloned().collect();
    json!({"state": shell.sidecar.state(), "program": shell.program, "recent": recent})
}

/// The sidecar executable: `$IAT_SIDECAR_PATH`, else the one bundled with the app (`<resources>/sidecar/`), else
/// (debug builds only) the one staged in src-tauri/binaries or built in <repo>/dist.
fn sidecar_program(app: &AppHandle) -> PathBuf {
    if let Some(path) = std::env::var_os("IAT_SIDECAR_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let bundled = app.path().resource_dir().map(|dir| dir.join("sidecar").join(SIDECAR_EXE));
    if let Ok(path) = &bundled {
        if path.is_file() {
            return path.clone();
        }
    }
    #[cfg(debug_assertions)]
    {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let staged =
            manifest.join("binaries").join(concat!("iat-sidecar-", env!("IAT_TARGET_TRIPLE"))).join(SIDECAR_EXE);
        let dist = manifest.join("..").join("dist").join("iat-sidecar").join(SIDECAR_EXE);
        for candidate in [staged, dist] {
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    // Missing: the start fails with a spawn error naming this path, shown on the status page.
    bundled.unwrap_or_else(|_| PathBuf::from(SIDECAR_EXE))
}

/// Copies the sidecar's notifications and lifecycle events to the webview (and to the app's log).
fn forward_events(app: &AppHandle, sidecar: &Sidecar) {
    let mut notifications = sidecar.subscribe();
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match notifications.recv().await {
                Ok(note) => {
                    let payload = json!({"method": note.method, "params": note.params});
                    handle.state::<Shell>().remember(json!({"type": "notification", "payload": payload}));
                    let _ = handle.emit(NOTIFICATION_EVENT, payload);
                }
                Err(RecvError::Lagged(n)) => {
                    eprintln!("[iat-toolkit] {n} sidecar notifications dropped (slow webview)")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    let mut events = sidecar.subscribe_events();
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    match &event {
                        SidecarEvent::Ready { pid, generation, .. } => {
                            eprintln!("[iat-toolkit] sidecar ready: pid {pid} (start {generation})")
                        }
                        SidecarEvent::Exited { pid, exit, expected, .. } => {
                            eprintln!("[iat-toolkit] sidecar pid {pid} exited ({exit}; expected: {expected})")
                        }
                        _ => {}
                    }
                    let payload = serde_json::to_value(&event).unwrap_or(Value::Null);
                    handle.state::<Shell>().remember(json!({"type": "status", "payload": payload}));
                    let _ = handle.emit(STATUS_EVENT, payload);
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// SIGTERM / SIGINT / SIGHUP exit the app the normal way, so the sidecar is stopped (GTK would otherwise die
/// at once and leave it to notice its closed stdin).
#[cfg(unix)]
fn exit_on_signals(app: &AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            eprintln!("[iat-toolkit] cannot install signal handlers");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        eprintln!("[iat-toolkit] {name}: exiting");
        handle.exit(0);
    });
}

fn main() {
    let app = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![sidecar_call, sidecar_status])
        .setup(|app| {
            let program = sidecar_program(app.handle());
            eprintln!("[iat-toolkit] starting the sidecar {}", program.display());
            let config = SidecarConfig::new(&program);
            // `launch` spawns the supervisor on the runtime it is called in: Tauri's.
            let sidecar = tauri::async_runtime::block_on(async move { Sidecar::launch(config) });
            let log_calls = std::env::var("IAT_TOOLKIT_LOG_CALLS").as_deref() == Ok("1");
            app.manage(Shell { sidecar: sidecar.clone(), program, recent: Mutex::new(VecDeque::new()), log_calls });
            forward_events(app.handle(), &sidecar);
            #[cfg(unix)]
            exit_on_signals(app.handle());
            Ok(())
        })
        .build(tauri::generate_context!())
        .expect("cannot build the Tauri app");

    app.run(|app, event| {
        if let RunEvent::Exit = event {
            // Close its stdin, wait up to 2 s, then kill its process group / job: nothing outlives the app.
            let sidecar = app.state::<Shell>().sidecar.clone();
            tauri::async_runtime::block_on(sidecar.shutdown());
            eprintln!("[iat-toolkit] sidecar stopped; bye");
        }
    });
}
