//! A supervised sidecar process speaking newline-delimited JSON-RPC 2.0 over its stdin/stdout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iat_shell::SidecarError> {
//! use iat_shell::{Sidecar, SidecarConfig};
//! let sidecar = Sidecar::start(SidecarConfig::new("/opt/iat/iat-sidecar").env("IAT_HOME", "/tmp/iat")).await?;
//! let mut notes = sidecar.subscribe();
//! let pong = sidecar.call("system.ping", serde_json::json!({})).await?;
//! sidecar.shutdown().await;
//! # let _ = (pong, notes.try_recv()); Ok(()) }
//! ```
//!
//! Lifecycle: [`Sidecar::launch`] starts a supervisor task that spawns the process (`serve --stdio`), waits for its
//! `sidecar.ready` line, then watches it. When the process dies, the calls in flight fail with
//! [`SidecarError::Exited`], and the supervisor starts a new one after an exponential backoff
//! ([`RestartPolicy`]); calls made meanwhile wait for it. [`Sidecar::shutdown`] closes the sidecar's stdin, waits
//! up to [`SidecarConfig::shutdown_grace`], then kills its whole process group (its Job object on Windows).

mod error;
mod generation;
mod process;
mod protocol;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

pub use error::{ExitInfo, SidecarError};
use generation::Generation;
pub use protocol::{Notification, ReadyInfo, RpcError};

/// The sidecar executable's file name on this platform.
pub const SIDECAR_EXE: &str = if cfg!(windows) { "iat-sidecar.exe" } else { "iat-sidecar" };

/// The sidecar to use in development and tests: `$IAT_SIDECAR_PATH` when set, else the frozen build of the
/// repository, `<repo>/dist/iat-sidecar/iat-sidecar[.exe]`.
pub fn default_sidecar_path(repo_root: &Path) -> PathBuf {
    match std::env::var_os("IAT_SIDECAR_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo_root.join("dist").join("iat-sidecar").join(SIDECAR_EXE),
    }
}

/// When and how fast a crashed sidecar is started again.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Restart at all (otherwise the sidecar stays down after a crash and calls fail with `Unavailable`).
    pub enabled: bool,
    /// The delay before the first restart; it doubles with each further consecutive failure...
    pub initial_delay: Duration,
    /// ...up to this.
    pub max_delay: Duration,
    /// A process that stayed up this long resets the backoff to `initial_delay`.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// How to start and supervise the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub program: PathBuf,
    /// Defaults to `serve --stdio`.
    pub args: Vec<OsString>,
    /// Extra environment (e.g. `IAT_HOME`); the rest is inherited.
    pub env: Vec<(OsString, OsString)>,
    pub current_dir: Option<PathBuf>,
    /// How long the sidecar may take to print `sidecar.ready` (a frozen app's first start on a cold disk is slow).
    pub ready_timeout: Duration,
    /// The default limit of one call; `None` waits as long as the process lives.
    pub call_timeout: Option<Duration>,
    /// How long a call made while the sidecar (re)starts waits for it before failing with `Unavailable`.
    pub unavailable_wait: Duration,
    /// How long the sidecar gets to exit after its stdin closes before its process group is killed.
    pub shutdown_grace: Duration,
    pub restart: RestartPolicy,
    /// Copy the sidecar's stderr (its log) to ours, each line prefixed with its pid. The last lines are kept for
    /// error messages either way.
    pub forward_stderr: bool,
}

impl SidecarConfig {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SidecarConfig {
            program: program.into(),
            args: vec!["serve".into(), "--stdio".into()],
            env: Vec::new(),
            current_dir: None,
            ready_timeout: Duration::from_secs(30),
            call_timeout: None,
            unavailable_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            restart: RestartPolicy::default(),
            forward_stderr: true,
        }
    }

    /// Adds one environment variable for the sidecar.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Where the sidecar stands, as [`Sidecar::state`] reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SidecarState {
    /// The first process is starting.
    Starting,
    /// A process is up and answered its handshake (at `ready_at_ms`, milliseconds since the Unix epoch).
    Ready {
        generation: u64,
        pid: u32,
        ready_at_ms: u64,
        #[serde(serialize_with = "public_ready")]
        info: ReadyInfo,
    },
    /// Waiting `delay_ms` before restart number `attempt`.
    Restarting { attempt: u32, delay_ms: u64, last_error: Option<String> },
    /// Shutting down.
    Stopping,
    /// Down for good: shut down, or crashed with restarts disabled (`reason`).
    Stopped { reason: Option<String> },
}

/// Lifecycle events, from [`Sidecar::subscribe_events`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SidecarEvent {
    /// A process answered its handshake, at `ready_at_ms` (milliseconds since the Unix epoch).
    Ready {
        generation: u64,
        pid: u32,
        ready_at_ms: u64,
        #[serde(serialize_with = "public_ready")]
        info: ReadyInfo,
    },
    /// A process ended; `expected` is true when the shell stopped it.
    Exited {
        generation: u64,
        pid: u32,
        exit: ExitInfo,
        expected: bool,
    },
    /// A start attempt failed (spawn error, no handshake...).
    StartFailed {
        generation: u64,
        error: String,
    },
    Restarting {
        attempt: u32,
        delay_ms: u64,
    },
    Stopped,
}

/// Milliseconds since the Unix epoch (what a webview's `new Date(ms)` takes); 0 for a clock before 1970.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn public_ready<S: serde::Serializer>(info: &ReadyInfo, s: S) -> Result<S::Ok, S::Error> {
    info.public().serialize(s)
}

#[derive(Clone)]
enum Phase {
    Starting,
    Running(Arc<Generation>),
    Backoff { attempt: u32, delay: Duration, last_error: Option<String> },
    Stopping,
    Stopped { reason: Option<String> },
}

struct Inner {
    config: SidecarConfig,
    phase: watch::Sender<Phase>,
    notifications: broadcast::Sender<Notification>,
    events: broadcast::Sender<SidecarEvent>,
    next_id: AtomicU64,
    stop: watch::Sender<bool>,
    supervisor: StdMutex<Option<JoinHandle<()>>>,
}

/// A handle to the supervised sidecar; clones share it.
#[derive(Clone)]
pub struct Sidecar {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar").field("program", &self.inner.config.program).field("state", &self.state()).finish()
    }
}

impl Sidecar {
    /// Starts the supervisor and returns at once; the sidecar gets ready in the background (see
    /// [`Sidecar::wait_ready`] and [`Sidecar::subscribe_events`]) and a failed first start is retried like a crash.
    /// Must be called within a Tokio runtime.
    pub fn launch(config: SidecarConfig) -> Sidecar {
        Self::launch_inner(config).0
    }

    /// Starts the sidecar and waits for its first `sidecar.ready`; if that first start fails, everything is
    /// stopped and the error returned (no retry).
    pub async fn start(config: SidecarConfig) -> Result<Sidecar, SidecarError> {
        let (sidecar, first) = Self::launch_inner(config);
        match first.await {
            Ok(Ok(())) => Ok(sidecar),
            Ok(Err(e)) => {
                sidecar.shutdown().await;
                Err(e)
            }
            Err(_) => Err(SidecarError::ShutDown),
        }
    }

    fn launch_inner(config: SidecarConfig) -> (Sidecar, oneshot::Receiver<Result<(), SidecarError>>) {
        let (notifications, _) = broadcast::channel(1024);
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            config,
            phase: watch::channel(Phase::Starting).0,
            notifications,
            events,
            next_id: AtomicU64::new(1),
            stop: watch::channel(false).0,
            supervisor: StdMutex::new(None),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(inner.clone(), first_tx));
        *inner.supervisor.lock().unwrap() = Some(task);
        (Sidecar { inner }, first_rx)
    }

    /// Calls `method` with `params` (`Value::Null` sends none) and returns its result, with the config's default
    /// timeout. Safe to use from many tasks at once: responses are matched by id.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, SidecarError> {
        self.call_with_timeout(method, params, self.inner.config.call_timeout).await
    }

    /// [`Sidecar::call`] with an explicit timeout (`None`: as long as the process lives).
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, SidecarError> {
        let generation = self.running(self.inner.config.unavailable_wait).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        generation.call(id, method, &params, timeout).await
    }

    /// The sidecar's notifications (`project.created`, progress...), in order. A receiver that falls more than
    /// 1024 behind loses the oldest ones (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.inner.notifications.subscribe()
    }

    /// Lifecycle events: ready, exited, restarting, stopped.
    pub fn subscribe_events(&self) -> broadcast::Receiver<SidecarEvent> {
        self.inner.events.subscribe()
    }

    pub fn state(&self) -> SidecarState {
        match &*self.inner.phase.borrow() {
            Phase::Starting => SidecarState::Starting,
            Phase::Running(g) => SidecarState::Ready {
                generation: g.number,
                pid: g.ready.pid,
                ready_at_ms: unix_millis(g.ready_at),
                info: g.ready.clone(),
            },
            Phase::Backoff { attempt, delay, last_error } => SidecarState::Restarting {
                attempt: *attempt,
                delay_ms: delay.as_millis() as u64,
                last_error: last_error.clone(),
            },
            Phase::Stopping => SidecarState::Stopping,
            Phase::Stopped { reason } => SidecarState::Stopped { reason: reason.clone() },
        }
    }

    /// The running process's ready params, if one is up.
    pub fn ready_info(&self) -> Option<ReadyInfo> {
        match &*self.inner.phase.borrow() {
            Phase::Running(g) => Some(g.ready.clone()),
            _ => None,
        }
    }

    /// Waits until a process is ready (at once if one is) and returns its ready params.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<ReadyInfo, SidecarError> {
        Ok(self.running(timeout).await?.ready.clone())
    }

    /// The process group of the running sidecar (Unix; equal to the pid of the process the shell spawned).
    #[cfg(unix)]
    pub fn process_group_id(&self) -> Option<i32> {
        match &*self.inner.phase.borrow() {
            Phase::Running(g) => Some(g.process_group_id()),
            _ => None,
        }
    }

    /// The pid of the process the shell spawned (the ready params' pid may differ behind a launcher).
    pub fn child_pid(&self) -> Option<u32> {
        match &*self.inner.phase.borrow() {
            Phase::Running(g) => Some(g.child_pid),
            _ => None,
        }
    }

    /// Stops the sidecar for good: closes its stdin, waits up to `shutdown_grace` for it to exit, then kills its
    /// process group / job; calls still waiting fail with [`SidecarError::ShutDown`]. Idempotent; returns when
    /// nothing is left running.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = self.inner.supervisor.lock().unwrap().take();
        match task {
            Some(task) => {
                let _ = task.await;
            }
            None => {
                // Another caller is shutting down: wait for it to finish.
                let mut phase = self.inner.phase.subscribe();
                let _ = phase.wait_for(|p| matches!(p, Phase::Stopped { .. })).await;
            }
        }
    }

    async fn running(&self, wait: Duration) -> Result<Arc<Generation>, SidecarError> {
        let mut phase = self.inner.phase.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let last_error = match &*phase.borrow_and_update() {
                // A generation whose process already died is on its way out: wait for the next one.
                Phase::Running(g) if g.exit_info().is_none() => return Ok(g.clone()),
                Phase::Running(_) | Phase::Starting => None,
                Phase::Backoff { last_error, .. } => last_error.clone(),
                Phase::Stopping => return Err(SidecarError::ShutDown),
                Phase::Stopped { reason: None } => return Err(SidecarError::ShutDown),
                Phase::Stopped { reason: Some(r) } => return Err(SidecarError::Unavailable(r.clone())),
            };
            let timed_out = || {
                SidecarError::Unavailable(match &last_error {
                    Some(e) => format!("not ready within {wait:?}; last start error: {e}"),
                    None => format!("not ready within {wait:?}"),
                })
            };
            // A dead-but-current generation does not change the phase; poll it a little while waiting.
            let step = tokio::time::Instant::now() + Duration::from_millis(50);
            match tokio::time::timeout_at(deadline.min(step), phase.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(SidecarError::ShutDown),
                Err(_) if tokio::time::Instant::now() >= deadline => return Err(timed_out()),
                Err(_) => {}
            }
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn supervise(inner: Arc<Inner>, first: oneshot::Sender<Result<(), SidecarError>>) {
    let emit = |event: SidecarEvent| {
        let _ = inner.events.send(event);
    };
    let policy = inner.config.restart.clone();
    let mut first = Some(first);
    let mut stop = inner.stop.subscribe();
    let mut failures: u32 = 0;
    let mut number: u64 = 0;
    let mut reason: Option<String> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        number += 1;
        let last_error;
        match Generation::launch(&inner.config, number, inner.notifications.clone(), stop.clone()).await {
            Ok(generation) => {
                let pid = generation.ready.pid;
                inner.phase.send_replace(Phase::Running(generation.clone()));
                emit(SidecarEvent::Ready {
                    generation: number,
                    pid,
                    ready_at_ms: unix_millis(generation.ready_at),
                    info: generation.ready.clone(),
                });
                // Only now: `start` returns a sidecar whose state already says ready.
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                let started = Instant::now();
                tokio::select! {
                    exit = generation.wait_exit() => {
                        eprintln!("[iat-shell] the sidecar (pid {pid}) exited unexpectedly: {exit}");
                        emit(SidecarEvent::Exited { generation: number, pid, exit: exit.clone(), expected: false });
                        if started.elapsed() >= policy.stable_after {
                            failures = 0;
                        }
                        last_error = Some(format!("the sidecar exited ({exit})"));
                    }
                    _ = stop_requested(&mut stop) => {
                        inner.phase.send_replace(Phase::Stopping);
                        let (exit, graceful) = generation.stop(inner.config.shutdown_grace).await;
                        if !graceful {
                            eprintln!("[iat-shell] the sidecar (pid {pid}) did not exit within {:?}; killed its process group",
                                inner.config.shutdown_grace);
                        }
                        emit(SidecarEvent::Exited { generation: number, pid, exit, expected: true });
                        break;
                    }
                }
            }
            Err(SidecarError::ShutDown) => break,
            Err(e) => {
                eprintln!("[iat-shell] starting the sidecar failed: {e}");
                emit(SidecarEvent::StartFailed { generation: number, error: e.to_string() });
                last_error = Some(e.to_string());
                if let Some(tx) = first.take() {
                    // `start` stops everything on a first failure; `launch` dropped the receiver and retries.
                    if tx.send(Err(e)).is_ok() {
                        stop.wait_for(|s| *s).await.ok();
                        break;
                    }
                }
            }
        }
        if !policy.enabled {
            reason = last_error.or(Some("the sidecar exited".into()));
            break;
        }
        failures += 1;
        let delay = policy.delay(failures);
        inner.phase.send_replace(Phase::Backoff { attempt: failures, delay, last_error });
        emit(SidecarEvent::Restarting { attempt: failures, delay_ms: delay.as_millis() as u64 });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop) => break,
        }
    }
    inner.phase.send_replace(Phase::Stopped { reason });
    emit(SidecarEvent::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RestartPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RestartPolicy::default()
        };
        let delays: Vec<u128> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(200), Duration::from_secs(1));
    }
}
