//! Starting the sidecar so that it and everything it starts can be stopped together.
//!
//! Unix (Linux, macOS): the sidecar leads a process group of its own (`setpgid(0, 0)` in the child, through
//! `process_group(0)`); stopping sends SIGKILL to the whole group with `killpg`, so its helper processes go too.
//! Windows: the sidecar is put in a Job object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`; stopping terminates the
//! job, and if the shell dies without stopping it, the OS closes the job handle and kills the job's processes.

use std::process::Stdio;

use tokio::process::{Child, Command};

use super::error::SidecarError;
use super::SidecarConfig;

/// The sidecar's process group (Unix) or job (Windows).
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    #[cfg(unix)]
    pgid: i32,
    #[cfg(windows)]
    job: windows::Job,
}

impl ProcessGroup {
    /// Kills every process of the group at once (SIGKILL / TerminateJobObject). Harmless when none is left.
    pub(crate) fn kill(&self) {
        #[cfg(unix)]
        {
            // SAFETY: killpg only sends a signal; pgid is the group the sidecar created as its leader. Once all its
            // members are gone it fails with ESRCH, which is fine.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
        #[cfg(windows)]
        self.job.terminate();
    }

    /// Waits (polling, at most `within`) until no live process of the group is left: a SIGKILL is delivered
    /// asynchronously, so `killpg` returning does not mean the members are gone yet.
    pub(crate) async fn wait_empty(&self, within: std::time::Duration) -> bool {
        #[cfg(unix)]
        {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                if !group_alive(self.pgid) {
                    return true;
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        #[cfg(windows)]
        {
            let _ = within;
            true
        }
    }

    /// The process group id (Unix): the sidecar's pid.
    #[cfg(unix)]
    pub(crate) fn id(&self) -> i32 {
        self.pgid
    }
}

/// Whether a live (non-zombie) process of group `pgid` exists. Zombies wait for their reaper and hold nothing.
#[cfg(unix)]
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::killpg(pgid, 0) } != 0 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // killpg(.., 0) also sees zombies: look closer in /proc.
        let Ok(entries) = std::fs::read_dir("/proc") else { return true };
        let wanted = pgid.to_string();
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid pgrp ...": comm may hold anything, so split after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else { continue };
            let mut fields = rest.split_whitespace();
            let (state, pgrp) = (fields.next(), fields.nth(1));
            if pgrp == Some(wanted.as_str()) && state != Some("Z") {
                return true;
            }
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// Spawns `program args...` with piped stdio in a process group / job of its own.
pub(crate) fn spawn(config: &SidecarConfig) -> Result<(Child, ProcessGroup), SidecarError> {
    let mut cmd = Command::new(&config.program);
    cmd.args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A last resort only: the supervisor always stops the whole group explicitly.
        .kill_on_drop(true);
    if let Some(dir) = &config.current_dir {
        cmd.current_dir(dir);
    }
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};
        // No console window for the sidecar; its own console process group so console signals of the shell's
        // console do not reach it behind the supervisor's back.
        cmd.creation_flags(CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP);
    }

    let spawn_error = |e: std::io::Error| SidecarError::Spawn {
        program: config.program.display().to_string(),
        reason: e.to_string(),
    };

    #[cfg(windows)]
    let job = windows::Job::new().map_err(spawn_error)?;

    let child = cmd.spawn().map_err(spawn_error)?;

    #[cfg(unix)]
    let group = ProcessGroup { pgid: child.id().map(|id| id as i32).unwrap_or(0) };
    #[cfg(windows)]
    let group = {
        // The window between spawn and assignment is a few microseconds; the sidecar's interpreter takes far
        // longer before it can start anything, so its children are born inside the job.
        if let Some(handle) = child.raw_handle() {
            if let Err(e) = job.assign(handle) {
                let mut child = child;
                let _ = child.start_kill();
                return Err(spawn_error(e));
            }
        }
        ProcessGroup { job }
    };
    #[cfg(unix)]
    if group.pgid <= 0 {
        return Err(SidecarError::Spawn {
            program: config.program.display().to_string(),
            reason: "the child exited before its pid could be read".into(),
        });
    }
    Ok((child, group))
}

#[cfg(windows)]
mod windows {
    use std::io;
    use std::os::windows::io::RawHandle;

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation, SetInformationJobObject,
        TerminateJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };

    /// An owned Job object handle; closing it kills the processes still in the job.
    #[derive(Debug)]
    pub(crate) struct Job(HANDLE);

    // SAFETY: a job handle is a kernel object handle, usable from any thread.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    impl Job {
        pub(crate) fn new() -> io::Result<Job> {
            // SAFETY: plain Win32 calls on a handle this function owns; the info struct is plain data.
            unsafe {
                let handle = CreateJobObjectW(std::ptr::null(), std::ptr::null());
                if handle.is_null() {
                    return Err(io::Error::last_os_error());
                }
                let job = Job(handle);
                let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
                info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                let ok = SetInformationJobObject(
                    job.0,
                    JobObjectExtendedLimitInformation,
                    &info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION as *const core::ffi::c_void,
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                );
                if ok == 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(job)
            }
        }

        pub(crate) fn assign(&self, process: RawHandle) -> io::Result<()> {
            // SAFETY: `process` is the live child's handle, borrowed for the call.
            let ok = unsafe { AssignProcessToJobObject(self.0, process as HANDLE) };
            if ok == 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }

        pub(crate) fn terminate(&self) {
            // SAFETY: terminating our own job; failure (e.g. already empty) is harmless.
            unsafe {
                TerminateJobObject(self.0, 1);
            }
        }
    }

    impl Drop for Job {
        fn drop(&mut self) {
            // SAFETY: the handle is owned and closed once.
            unsafe {
                CloseHandle(self.0);
            }
        }
    }
}
