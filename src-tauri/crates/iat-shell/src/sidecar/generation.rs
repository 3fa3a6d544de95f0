//! One sidecar process from spawn to exit: the ready handshake, the request writer, the response/notification
//! reader, the pending-call map and the exit watcher. A restart makes a new generation.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{broadcast, oneshot, watch, Mutex};

use super::error::{ExitInfo, SidecarError};
use super::process::{self, ProcessGroup};
use super::protocol::{self, Incoming, Notification, ReadyInfo, READY_METHOD};
use super::SidecarConfig;

/// How many of the sidecar's last stderr lines errors carry.
const STDERR_TAIL_LINES: usize = 40;
/// How long the exit watcher lets the reader drain what a dead process wrote before failing pending calls.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

type Reply = oneshot::Sender<Result<Value, SidecarError>>;

struct Pending {
    /// False once the process is gone: no new call may register.
    open: bool,
    calls: HashMap<u64, Reply>,
}

type StderrTail = Arc<StdMutex<VecDeque<String>>>;

pub(crate) struct Generation {
    pub(crate) number: u64,
    pub(crate) child_pid: u32,
    pub(crate) ready: ReadyInfo,
    /// When the handshake completed: what a status page shows as "ready at", however late it asks.
    pub(crate) ready_at: SystemTime,
    group: ProcessGroup,
    stdin: Mutex<Option<ChildStdin>>,
    pending: StdMutex<Pending>,
    stderr_tail: StderrTail,
    exit: watch::Receiver<Option<ExitInfo>>,
    stopping: AtomicBool,
}

impl Generation {
    /// Spawns the sidecar and waits for its `sidecar.ready` line; then starts the reader and the exit watcher.
    /// A `true` on `cancel` (the shell is shutting down) aborts the wait and kills what was started.
    pub(crate) async fn launch(
        config: &SidecarConfig,
        number: u64,
        notifications: broadcast::Sender<Notification>,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<Arc<Generation>, SidecarError> {
        let (mut child, group) = process::spawn(config)?;
        let child_pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr_tail: StderrTail = Arc::default();
        let stderr_task = tokio::spawn(pump_stderr(
            child.stderr.take().expect("stderr is piped"),
            stderr_tail.clone(),
            config.forward_stderr.then(|| format!("[iat-sidecar {child_pid}]")),
        ));

        let mut buf = Vec::new();
        let first = tokio::select! {
            r = tokio::time::timeout(config.ready_timeout, read_line(&mut stdout, &mut buf)) => r,
            _ = cancelled(&mut cancel) => {
                abandon(&mut child, &group).await;
                return Err(SidecarError::ShutDown);
            }
        };
        let tail = |task: tokio::task::JoinHandle<()>, tail: &StderrTail| {
            let tail = tail.clone();
            async move {
                // Let stderr reach EOF (the process is dead or killed) so the tail holds its last words.
                let _ = tokio::time::timeout(DRAIN_WAIT, task).await;
                snapshot(&tail)
            }
        };
        let ready = match first {
            Err(_elapsed) => {
                abandon(&mut child, &group).await;
                return Err(SidecarError::ReadyTimeout {
                    timeout: config.ready_timeout,
                    stderr_tail: tail(stderr_task, &stderr_tail).await,
                });
            }
            Ok(Ok(None)) => {
                let exit = match tokio::time::timeout(config.shutdown_grace, child.wait()).await {
                    Ok(Ok(status)) => ExitInfo::from_status(&status),
                    _ => ExitInfo::unknown(),
                };
                abandon(&mut child, &group).await;
                return Err(SidecarError::Exited { exit, stderr_tail: tail(stderr_task, &stderr_tail).await });
            }
            Ok(Err(e)) => {
                abandon(&mut child, &group).await;
                return Err(SidecarError::Io(format!("reading the sidecar's stdout: {e}")));
            }
            Ok(Ok(Some(line))) => match parse_ready(&line) {
                Ok(info) => info,
                Err(reason) => {
                    abandon(&mut child, &group).await;
                    return Err(SidecarError::Handshake { reason, stderr_tail: tail(stderr_task, &stderr_tail).await });
                }
            },
        };

        let (exit_tx, exit_rx) = watch::channel(None);
        let generation = Arc::new(Generation {
            number,
            child_pid,
            ready,
            ready_at: SystemTime::now(),
            group,
            stdin: Mutex::new(Some(stdin)),
            pending: StdMutex::new(Pending { open: true, calls: HashMap::new() }),
            stderr_tail,
            exit: exit_rx,
            stopping: AtomicBool::new(false),
        });
        let (drained_tx, drained_rx) = watch::channel(false);
        tokio::spawn(read_loop(generation.clone(), stdout, notifications, drained_tx));
        tokio::spawn(watch_exit(generation.clone(), child, drained_rx, exit_tx));
        Ok(generation)
    }

    /// Sends one request and waits for its response (or the process's death, or the timeout).
    pub(crate) async fn call(
        &self,
        id: u64,
        method: &str,
        params: &Value,
        timeout: Option<Duration>,
    ) -> Result<Value, SidecarError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap();
            if !pending.open {
                drop(pending);
                return Err(self.gone_error());
            }
            pending.calls.insert(id, tx);
        }
        if let Err(e) = self.write(&protocol::request_line(id, method, params)).await {
            self.forget(id);
            // A broken pipe usually means the process just died: report that, once the exit watcher knows.
            if tokio::time::timeout(DRAIN_WAIT * 2, self.wait_exit()).await.is_ok() {
                return Err(self.gone_error());
            }
            return Err(e);
        }
        let outcome = match timeout {
            None => rx.await,
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(r) => r,
                Err(_) => {
                    self.forget(id);
                    return Err(SidecarError::Timeout { method: method.to_string(), timeout: limit });
                }
            },
        };
        outcome.unwrap_or_else(|_| Err(self.gone_error()))
    }

    /// Stops the process: close its stdin (the sidecar exits on EOF), wait up to `grace`, then kill the whole
    /// process group / job. Returns how it ended and whether it left by itself within the grace period.
    pub(crate) async fn stop(&self, grace: Duration) -> (ExitInfo, bool) {
        self.stopping.store(true, Ordering::SeqCst);
        // A writer stuck on a full pipe holds the lock: then skip straight to the kill after the grace period.
        if let Ok(mut stdin) = tokio::time::timeout(grace, self.stdin.lock()).await {
            if let Some(mut pipe) = stdin.take() {
                let _ = pipe.shutdown().await;
            }
        }
        let graceful = tokio::time::timeout(grace, self.wait_exit()).await.is_ok();
        // Always: the sidecar may have left helpers behind even when it exited by itself.
        self.group.kill();
        let exit = tokio::time::timeout(Duration::from_secs(5), self.wait_exit())
            .await
            .unwrap_or_else(|_| ExitInfo::unknown());
        if !self.group.wait_empty(Duration::from_secs(2)).await {
            eprintln!("[iat-shell] processes of the sidecar's group survived SIGKILL for 2 s");
        }
        (exit, graceful)
    }

    /// Waits for the process to exit and its pending calls to be failed.
    pub(crate) async fn wait_exit(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let result = rx.wait_for(|e| e.is_some()).await;
        match result {
            Ok(exit) => exit.clone().unwrap_or_else(ExitInfo::unknown),
            Err(_) => ExitInfo::unknown(),
        }
    }

    pub(crate) fn exit_info(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    #[cfg(unix)]
    pub(crate) fn process_group_id(&self) -> i32 {
        self.group.id()
    }

    fn gone_error(&self) -> SidecarError {
        if self.stopping.load(Ordering::SeqCst) {
            return SidecarError::ShutDown;
        }
        SidecarError::Exited {
            exit: self.exit_info().unwrap_or_else(ExitInfo::unknown),
            stderr_tail: snapshot(&self.stderr_tail),
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().unwrap().calls.remove(&id);
    }

    async fn write(&self, line: &str) -> Result<(), SidecarError> {
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(if self.stopping.load(Ordering::SeqCst) {
                SidecarError::ShutDown
            } else {
                SidecarError::Io("the sidecar's stdin is closed".into())
            });
        };
        let io = |e: std::io::Error| SidecarError::Io(format!("writing to the sidecar's stdin: {e}"));
        pipe.write_all(line.as_bytes()).await.map_err(io)?;
        pipe.flush().await.map_err(io)
    }

    fn resolve(&self, id: u64, outcome: Result<Value, SidecarError>) {
        let reply = self.pending.lock().unwrap().calls.remove(&id);
        match reply {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => eprintln!("[iat-shell] response to unknown or timed-out request id {id}; ignored"),
        }
    }

    /// Closes the pending map and fails every call still waiting.
    fn fail_pending(&self) {
        let calls = {
            let mut pending = self.pending.lock().unwrap();
            pending.open = false;
            std::mem::take(&mut pending.calls)
        };
        for (_, tx) in calls {
            let _ = tx.send(Err(self.gone_error()));
        }
    }
}

fn parse_ready(line: &str) -> Result<ReadyInfo, String> {
    match protocol::classify(line) {
        Incoming::Notification(n) if n.method == READY_METHOD => {
            serde_json::from_value::<ReadyInfo>(n.params).map_err(|e| format!("malformed {READY_METHOD} params: {e}"))
        }
        _ => {
            let shown: String = line.chars().take(200).collect();
            Err(format!("expected a {READY_METHOD} notification as the first stdout line, got: {shown}"))
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    buf.clear();
    if reader.read_until(b'\n', buf).await? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(buf);
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|stop| *stop).await.is_err() {
        // The sender is gone: nobody can cancel any more.
        std::future::pending::<()>().await;
    }
}

/// Kills a child that never became a generation, with its group, and reaps it.
async fn abandon(child: &mut Child, group: &ProcessGroup) {
    group.kill();
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

fn snapshot(tail: &StderrTail) -> Vec<String> {
    tail.lock().unwrap().iter().cloned().collect()
}

async fn pump_stderr(stderr: ChildStderr, tail: StderrTail, prefix: Option<String>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(Some(line)) = read_line(&mut reader, &mut buf).await {
        if let Some(prefix) = &prefix {
            eprintln!("{prefix} {line}");
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

async fn read_loop(
    generation: Arc<Generation>,
    mut stdout: BufReader<ChildStdout>,
    notifications: broadcast::Sender<Notification>,
    drained: watch::Sender<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut stdout, &mut buf).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                eprintln!("[iat-shell] reading the sidecar's stdout failed: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match protocol::classify(&line) {
            Incoming::Response { id, outcome } => generation.resolve(id, outcome.map_err(SidecarError::Rpc)),
            Incoming::Notification(n) => {
                // No subscriber is fine: nobody listens yet.
                let _ = notifications.send(n);
            }
            Incoming::Request { id, method } => {
                let _ = generation.write(&protocol::method_not_found_line(&id, &method)).await;
            }
            Incoming::Invalid(reason) => {
                let shown: String = line.chars().take(200).collect();
                eprintln!("[iat-shell] ignored a line from the sidecar ({reason}): {shown}");
            }
        }
    }
    let _ = drained.send(true);
}

async fn watch_exit(
    generation: Arc<Generation>,
    mut child: Child,
    mut drained: watch::Receiver<bool>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    let exit = match child.wait().await {
        Ok(status) => ExitInfo::from_status(&status),
        Err(e) => {
            eprintln!("[iat-shell] waiting for the sidecar failed: {e}");
            ExitInfo::unknown()
        }
    };
    // Responses written just before the exit are still in the pipe: let the reader deliver them first. A helper
    // the sidecar left behind may hold stdout open, so do not wait for EOF forever: kill the group, then EOF comes.
    if tokio::time::timeout(DRAIN_WAIT, drained.wait_for(|d| *d)).await.is_err() {
        generation.group.kill();
        let _ = tokio::time::timeout(DRAIN_WAIT, drained.wait_for(|d| *d)).await;
    }
    generation.group.kill();
    let _ = exit_tx.send(Some(exit));
    generation.fail_pending();
}
