fn main() {
    // The app's sidecar lives in a folder named after the target triple, like Tauri's externalBin convention.
    println!(
        "cargo:rustc-env=IAT_TARGET_TRIPLE={}",
        std::env::var("TARGET").expect("cargo sets TARGET for build scripts")
    );
    // App commands get permissions of their own (allow-sidecar-call, allow-sidecar-status), so a capability
    // must grant them explicitly: nothing is callable from the webview unless capabilities/*.json says so.
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(&["sidecar_call", "sidecar_status"])),
    )
    .expect("tauri-build failed");
}
