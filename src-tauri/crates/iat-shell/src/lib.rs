//! The IAT Toolkit shell's core, kept free of any window so it can be tested on its own.
//!
//! [`sidecar`] starts the frozen Python sidecar (`iat-sidecar serve --stdio`), speaks newline-delimited JSON-RPC 2.0
//! with it, forwards its notifications, restarts it when it crashes and stops it, with everything it started, when
//! the shell exits. [`cli`] reads the app's command line and [`display`] tells from the environment whether a
//! window can open at all. The Tauri app (`src-tauri/src/main.rs`) only wires these into commands and events.

pub mod cli;
pub mod display;
pub mod sidecar;

pub use sidecar::{
    default_sidecar_path, unix_millis, ExitInfo, Notification, ReadyInfo, RestartPolicy, RpcError, Sidecar,
    SidecarConfig, SidecarError, SidecarEvent, SidecarState,
};
