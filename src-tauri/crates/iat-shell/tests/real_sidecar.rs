//! The sidecar client against the real sidecar process (no mock): the frozen build at `$IAT_SIDECAR_PATH`
//! (default `<repo>/dist/iat-sidecar/iat-sidecar`). Without one the tests skip with a message, or fail when
//! `IAT_REQUIRE_REAL_PARTS=1` (as in scripts/test). Each test gets its own temporary `IAT_HOME`.
//! `IAT_SHELL_TEST_LOGS=1` copies the sidecars' logs to stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use iat_shell::{default_sidecar_path, unix_millis, Sidecar, SidecarConfig, SidecarError, SidecarEvent, SidecarState};
use serde_json::{json, Value};
use tokio::sync::broadcast;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..").canonicalize().expect("repository root")
}

/// The real sidecar, or None (skip) / a panic (IAT_REQUIRE_REAL_PARTS=1) when there is none.
fn sidecar_program() -> Option<PathBuf> {
    let path = default_sidecar_path(&repo_root());
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "no sidecar executable at {} (build it with scripts/build-sidecar, or set IAT_SIDECAR_PATH)",
        path.display()
    );
    if std::env::var("IAT_REQUIRE_REAL_PARTS").as_deref() == Ok("1") {
        panic!("{msg}; IAT_REQUIRE_REAL_PARTS=1 forbids skipping");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

macro_rules! require_sidecar {
    () => {
        match sidecar_program() {
            Some(program) => program,
            None => return,
        }
    };
}

fn config(program: &Path, home: &Path) -> SidecarConfig {
    let mut config = SidecarConfig::new(program).env("IAT_HOME", home);
    config.ready_timeout = Duration::from_secs(60);
    config.call_timeout = Some(Duration::from_secs(30));
    config.unavailable_wait = Duration::from_secs(60);
    config.forward_stderr = std::env::var("IAT_SHELL_TEST_LOGS").as_deref() == Ok("1");
    config
}

#[cfg_attr(not(unix), allow(dead_code))]
async fn next_event(events: &mut broadcast::Receiver<SidecarEvent>, what: &str) -> SidecarEvent {
    match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
        Ok(Ok(event)) => event,
        other => panic!("no {what} event: {other:?}"),
    }
}

#[cfg(unix)]
fn signal(pid: u32, sig: i32) {
    // SAFETY: sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill({pid}, {sig})");
}

/// Live (non-zombie) members of a process group. Zombies do not count: in a container nobody may reap them.
#[cfg(unix)]
fn live_group_members(pgid: i32) -> Vec<i32> {
    #[cfg(target_os = "linux")]
    {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses: split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                members.push(pid);
            }
        }
        members
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::killpg(pgid, 0) } == 0 {
            vec![pgid]
        } else {
            Vec::new()
        }
    }
}

#[cfg(unix)]
async fn wait_group_empty(pgid: i32, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let members = live_group_members(pgid);
        if members.is_empty() || Instant::now() >= deadline {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_handshake_then_ping_including_concurrent_calls() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let before = unix_millis(SystemTime::now());
    let sidecar = Sidecar::start(config(&program, home.path())).await.expect("sidecar starts");
    let after = unix_millis(SystemTime::now());

    // The state keeps the moment of the handshake: asking later (a reloaded page) gives the same time.
    let ready_at = |state: SidecarState| match state {
        SidecarState::Ready { ready_at_ms, .. } => ready_at_ms,
        other => panic!("expected ready, got {other:?}"),
    };
    let first = ready_at(sidecar.state());
    assert!((before..=after).contains(&first), "ready at {first}, started between {before} and {after}");
    assert_eq!(serde_json::to_value(sidecar.state()).unwrap()["ready_at_ms"], json!(first));

    let info = sidecar.ready_info().expect("ready");
    assert!(info.pid > 0);
    assert!(info.version.is_some(), "ready params carry the version: {info:?}");
    assert!(info.token.is_some(), "ready params carry the token");
    let ready_file = home.path().join("sidecar.json");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&ready_file).expect("sidecar.json")).unwrap();
    assert_eq!(written["pid"], json!(info.pid));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ready_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "sidecar.json holds the token: owner-only");
    }

    let pong = sidecar.call("system.ping", json!({})).await.expect("ping");
    assert_eq!(pong["pong"], json!(true));
    let pong = sidecar.call("system.ping", Value::Null).await.expect("ping without params");
    assert_eq!(pong["pong"], json!(true));

    // Many callers at once: every response reaches its own caller.
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let sidecar = sidecar.clone();
            tokio::spawn(async move {
                let method = if i % 2 == 0 { "system.ping" } else { "system.info" };
                (method, sidecar.call(method, json!({})).await)
            })
        })
        .collect();
    for call in calls {
        let (method, result) = call.await.unwrap();
        let result = result.unwrap_or_else(|e| panic!("{method}: {e}"));
        if method == "system.ping" {
            assert_eq!(result["pong"], json!(true));
        } else {
            assert!(result.is_object(), "system.info: {result}");
            assert!(result.get("pong").is_none());
        }
    }

    assert_eq!(ready_at(sidecar.state()), first, "the ready time is not re-stamped when asked again");

    sidecar.shutdown().await;
    assert!(!ready_file.exists(), "a clean exit removes sidecar.json");
    match sidecar.call("system.ping", json!({})).await {
        Err(SidecarError::ShutDown) => {}
        other => panic!("a call after shutdown fails with ShutDown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_are_typed_rpc_errors() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(config(&program, home.path())).await.expect("sidecar starts");

    let err = sidecar.call("projects.get", json!({"slug": "no-such-project"})).await.unwrap_err();
    let rpc = err.rpc().unwrap_or_else(|| panic!("an application error, not a transport one: {err:?}"));
    assert_eq!(rpc.code, -32004, "{rpc:?}");
    assert_eq!(rpc.name(), Some("not_found"), "{rpc:?}");
    assert!(!err.is_transport());
    let as_json = serde_json::to_value(&err).unwrap();
    assert_eq!((as_json["kind"].clone(), as_json["code"].clone()), (json!("rpc"), json!(-32004)));
    assert_eq!(as_json["data"]["name"], json!("not_found"));

    let err = sidecar.call("no.such.method", json!({})).await.unwrap_err();
    assert_eq!(err.rpc().map(|e| e.code), Some(-32601), "{err:?}");

    // The sidecar is unharmed.
    assert_eq!(sidecar.call("system.ping", json!({})).await.unwrap()["pong"], json!(true));
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_subscribers() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(config(&program, home.path())).await.expect("sidecar starts");
    let mut notes = sidecar.subscribe();

    let created = sidecar.call("projects.create", json!({"slug": "abc", "name": "ABC"})).await.expect("create");
    assert!(created.to_string().contains("abc"), "{created}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let note = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, notes.recv()).await {
            Ok(Ok(n)) if n.method == "project.created" => break n,
            Ok(Ok(_other)) => continue,
            other => panic!("no project.created notification: {other:?}"),
        }
    };
    assert!(note.params.to_string().contains("abc"), "{note:?}");

    // And the project is there.
    let got = sidecar.call("projects.get", json!({"slug": "abc"})).await.expect("get");
    assert!(got.to_string().contains("ABC"), "{got}");
    sidecar.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sidecar_fails_pending_calls_and_is_restarted() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = config(&program, home.path());
    cfg.restart.initial_delay = Duration::from_millis(100);
    let sidecar = Sidecar::start(cfg).await.expect("sidecar starts");
    let mut events = sidecar.subscribe_events();
    let old = sidecar.ready_info().unwrap();
    let old_group = sidecar.process_group_id().unwrap();
    let old_ready_at = match sidecar.state() {
        SidecarState::Ready { ready_at_ms, .. } => ready_at_ms,
        other => panic!("expected ready, got {other:?}"),
    };

    // Freeze it so a call is surely in flight, then kill it: the call fails with a typed error.
    signal(old.pid, libc::SIGSTOP);
    let pending = {
        let sidecar = sidecar.clone();
        tokio::spawn(async move { sidecar.call("system.ping", json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = unix_millis(SystemTime::now());
    signal(old.pid, libc::SIGKILL);
    match pending.await.unwrap() {
        Err(SidecarError::Exited { exit, .. }) => {
            if sidecar.child_pid() == Some(old.pid) || old_group == old.pid as i32 {
                assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
            }
        }
        other => panic!("the in-flight call fails with Exited, got {other:?}"),
    }

    match next_event(&mut events, "exited").await {
        SidecarEvent::Exited { pid, expected: false, .. } => assert_eq!(pid, old.pid),
        other => panic!("expected an unexpected exit, got {other:?}"),
    }
    match next_event(&mut events, "restarting").await {
        SidecarEvent::Restarting { attempt: 1, .. } => {}
        other => panic!("expected restart 1, got {other:?}"),
    }
    let (new_pid, new_ready_at) = match next_event(&mut events, "ready").await {
        SidecarEvent::Ready { pid, generation: 2, ready_at_ms, .. } => (pid, ready_at_ms),
        other => panic!("expected a new ready, got {other:?}"),
    };
    assert_ne!(new_pid, old.pid);
    // The restarted process has its own ready time, after the kill; the state reports the same one.
    assert!(new_ready_at >= killed_at && new_ready_at > old_ready_at, "{old_ready_at} -> {new_ready_at}");
    match sidecar.state() {
        SidecarState::Ready { ready_at_ms, generation: 2, .. } => assert_eq!(ready_at_ms, new_ready_at),
        other => panic!("expected generation 2 ready, got {other:?}"),
    }
    assert_eq!(sidecar.call("system.ping", json!({})).await.expect("ping after restart")["pong"], json!(true));
    assert!(wait_group_empty(old_group, Duration::from_secs(5)).await.is_empty(), "nothing left of the old process");

    sidecar.shutdown().await;
}

/// A stand-in for a sidecar that started helpers: a wrapper starts a long `sleep` in the background (same process
/// group, stdout inherited), records its pid, then execs the real sidecar.
#[cfg(unix)]
fn wrapper_with_helper(dir: &Path, program: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let helper_pid = dir.join("helper.pid");
    let script = dir.join("sidecar-with-helper");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nsleep 600 &\necho $! > '{}'\nexec '{}' \"$@\"\n", helper_pid.display(), program.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, helper_pid)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_process_of_the_group() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let (wrapper, helper_pid_file) = wrapper_with_helper(home.path(), &program);
    let sidecar = Sidecar::start(config(&wrapper, home.path())).await.expect("sidecar starts");
    let mut events = sidecar.subscribe_events();
    let pgid = sidecar.process_group_id().unwrap();
    let helper: i32 = std::fs::read_to_string(&helper_pid_file).unwrap().trim().parse().unwrap();
    let members = live_group_members(pgid);
    assert!(members.contains(&helper) && members.contains(&pgid), "group {pgid}: {members:?}, helper {helper}");
    assert_eq!(sidecar.call("system.ping", json!({})).await.unwrap()["pong"], json!(true));

    let started = Instant::now();
    sidecar.shutdown().await;
    let took = started.elapsed();
    assert_eq!(live_group_members(pgid), Vec::<i32>::new(), "no orphan after shutdown");
    assert!(took < Duration::from_secs(4), "closing stdin stops the sidecar quickly ({took:?})");
    match next_event(&mut events, "exited").await {
        SidecarEvent::Exited { expected: true, exit, .. } => assert_eq!(exit.code, Some(0), "a clean exit: {exit:?}"),
        other => panic!("expected an expected exit, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events, "stopped").await, SidecarEvent::Stopped));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_does_not_exit_is_killed_after_the_grace_period() {
    let program = require_sidecar!();
    let home = tempfile::tempdir().unwrap();
    let (wrapper, _) = wrapper_with_helper(home.path(), &program);
    let sidecar = Sidecar::start(config(&wrapper, home.path())).await.expect("sidecar starts");
    let pgid = sidecar.process_group_id().unwrap();
    let pid = sidecar.ready_info().unwrap().pid;

    // A frozen process cannot react to its stdin closing: the shell must kill the whole group.
    signal(pid, libc::SIGSTOP);
    let started = Instant::now();
    sidecar.shutdown().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "grace period then kill ({took:?})");
    assert_eq!(wait_group_empty(pgid, Duration::from_secs(2)).await, Vec::<i32>::new(), "no orphan after the kill");
}

#[tokio::test]
async fn a_missing_executable_is_a_spawn_error() {
    let home = tempfile::tempdir().unwrap();
    let err = Sidecar::start(config(&home.path().join("no-such-sidecar"), home.path())).await.unwrap_err();
    assert!(matches!(err, SidecarError::Spawn { .. }), "{err:?}");
    assert!(err.is_transport());
}

#[cfg(unix)]
#[tokio::test]
async fn a_first_line_that_is_not_the_ready_notification_is_a_handshake_error() {
    // /bin/echo prints its arguments ("serve --stdio") and exits: not a sidecar.
    let home = tempfile::tempdir().unwrap();
    let err = Sidecar::start(config(Path::new("/bin/echo"), home.path())).await.unwrap_err();
    match err {
        SidecarError::Handshake { reason, .. } => assert!(reason.contains("serve --stdio"), "{reason}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
}
