//! The IAT Toolkit desktop shell: starts the frozen sidecar, forwards the webview's calls to it and its
//! notifications to the webview, and stops it (with everything it started) when the app exits.
//!
//! Webview API (granted by capabilities/main-window.json, nothing else is):
//! - command `sidecar_call {method, params}` -> the sidecar's result, or an error object
//!   `{"kind": "rpc", code, message, data}` (the sidecar's own error) / `{"kind": "<transport kind>", message}`;
//! - command `sidecar_status` -> `{state, program, recent}` (the supervisor state, with `ready_at_ms` when
//!   ready, and the last events as `{type, payload}`);
//! - events `sidecar://notification` (`{method, params, at, seq}`) and `sidecar://status` (lifecycle: ready,
//!   exited, restarting, start_failed, stopped; `{event, ..., at, seq}`). `at` is when it happened (ms since the
//!   Unix epoch; a ready event's is the handshake's time), `seq` orders events across both channels and lets a
//!   page that reloads tell the events it already has from `recent`.
//!
//! `--help` / `--version` answer before anything else; without a display the app says so and exits (the
//! checks are `iat_shell::cli` and `iat_shell::display`, tested there).
#![cfg_attr(all(not(debug_assertions), target_os = "windows"), windows_subsystem = "windows")]

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use iat_shell::cli::{self, Invocation};
use iat_shell::sidecar::SIDECAR_EXE;
use iat_shell::{unix_millis, Sidecar, SidecarConfig, SidecarError, SidecarEvent};
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
    recent: Mutex<Recent>,
    /// `IAT_TOOLKIT_LOG_CALLS=1`: log each webview call (scripts/test-app checks the page reached the sidecar).
    log_calls: bool,
}

#[derive(Default)]
struct Recent {
    last_seq: u64,
    entries: VecDeque<Value>,
}

impl Shell {
    /// Stamps the event's payload with `at` (ms since the epoch) and the next `seq`, keeps it for
    /// `sidecar_status`, and returns the stamped payload to emit.
    fn remember(&self, kind: &str, at_ms: u64, mut payload: Value) -> Value {
        let mut recent = self.recent.lock().unwrap();
        recent.last_seq += 1;
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("at".into(), json!(at_ms));
            obj.insert("seq".into(), json!(recent.last_seq));
        }
        if recent.entries.len() == RECENT_EVENTS {
            recent.entries.pop_front();
        }
        recent.entries.push_back(json!({"type": kind, "payload": payload}));
        payload
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
    let recent: Vec<Value> = shell.recent.lock().unwrap().entries.iter().cloned().collect();
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
                    let now = unix_millis(SystemTime::now());
                    let payload = handle.state::<Shell>().remember("notification", now, payload);
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
                    let mut at_ms = unix_millis(SystemTime::now());
                    match &event {
                        SidecarEvent::Ready { pid, generation, ready_at_ms, .. } => {
                            at_ms = *ready_at_ms;
                            eprintln!("[iat-toolkit] sidecar ready: pid {pid} (start {generation})")
                        }
                        SidecarEvent::Exited { pid, exit, expected, .. } => {
                            eprintln!("[iat-toolkit] sidecar pid {pid} exited ({exit}; expected: {expected})")
                        }
                        _ => {}
                    }
                    let payload = serde_json::to_value(&event).unwrap_or(Value::Null);
                    let payload = handle.state::<Shell>().remember("status", at_ms, payload);
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

/// Checks the environment, then initialises GTK on this (the main) thread: a display that is named but cannot
/// be opened is an error here rather than a panic in tao, whose own `gtk::init` is then a no-op.
#[cfg(any(
    target_os = "linux",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
fn open_display() -> Result<(), String> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let (display, wayland) = (var("DISPLAY"), var("WAYLAND_DISPLAY"));
    if let Some(reason) =
        iat_shell::display::missing_display(display.as_deref(), wayland.as_deref(), var("GDK_BACKEND").as_deref())
    {
        return Err(reason);
    }
    gtk::init().map_err(|e| {
        let shown = |name, value: Option<std::ffi::OsString>| match value {
            Some(v) => format!("{name}={}", v.to_string_lossy()),
            None => format!("{name} unset"),
        };
        format!("GTK cannot open it ({e}; {}, {})", shown("DISPLAY", display), shown("WAYLAND_DISPLAY", wayland))
    })
}

/// macOS and Windows always have their window system.
#[cfg(not(any(
    target_os = "linux",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
fn open_display() -> Result<(), String> {
    Ok(())
}

fn main() {
    let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let answer = match cli::parse_args(std::env::args_os().skip(1)) {
        Ok(Invocation::Run) => None,
        Ok(Invocation::Version) => Some(cli::version_line(name, version) + "\n"),
        Ok(Invocation::Help) => Some(cli::usage(name, version)),
        Err(e) => {
            eprintln!("{name}: {e}\nTry '{name} --help' for more information.");
            std::process::exit(cli::EXIT_USAGE);
        }
    };
    if let Some(text) = answer {
        // Not println!: a closed stdout (`--version | true`) is not worth a panic.
        let _ = std::io::stdout().write_all(text.as_bytes());
        return;
    }
    if let Err(reason) = open_display() {
        eprintln!("{name}: no graphical display available: {reason}; set DISPLAY or run under a desktop session");
        std::process::exit(cli::EXIT_NO_DISPLAY);
    }
    run_app();
}

fn run_app() {
    let app = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![sidecar_call, sidecar_status])
        .setup(|app| {
            let program = sidecar_program(app.handle());
            eprintln!("[iat-toolkit] starting the sidecar {}", program.display());
            let config = SidecarConfig::new(&program);
            // `launch` spawns the supervisor on the runtime it is called in: Tauri's.
            let sidecar = tauri::async_runtime::block_on(async move { Sidecar::launch(config) });
            let log_calls = std::env::var("IAT_TOOLKIT_LOG_CALLS").as_deref() == Ok("1");
            app.manage(Shell { sidecar: sidecar.clone(), program, recent: Mutex::default(), log_calls });
            forward_events(app.handle(), &sidecar);
            #[cfg(unix)]
            exit_on_signals(app.handle());
            Ok(())
        })
        .build(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("iat-toolkit: cannot start the app: {e}");
            std::process::exit(1);
        });

    app.run(|app, event| {
        if let RunEvent::Exit = event {
            // Close its stdin, wait up to 2 s, then kill its process group / job: nothing outlives the app.
            let sidecar = app.state::<Shell>().sidecar.clone();
            tauri::async_runtime::block_on(sidecar.shutdown());
            eprintln!("[iat-toolkit] sidecar stopped; bye");
        }
    });
}
