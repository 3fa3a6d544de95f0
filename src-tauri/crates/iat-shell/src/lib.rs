//! The IAT Toolkit shell's core, kept free of any window so it can be tested on its own.
//!
//! [`sidecar`] starts the frozen Python sidecar (`iat-sidecar serve --stdio`), speaks newline-delimited JSON-RPC 2.0
//! with it, forwards its notifications, restarts it when it crashes and stops it, with everything it started, when
//! the shell exits. The Tauri app (`src-tauri/src/main.rs`) only wires this into commands and events.

pub mod sidecar;

pub use sidecar::{
    default_sidecar_path, ExitInfo, Notification, ReadyInfo, RestartPolicy, RpcError, Sidecar, SidecarConfig,
    SidecarError, SidecarEvent, SidecarState,
};
