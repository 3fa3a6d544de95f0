//! Is there a display to open the window on? Tauri's event loop (tao) panics with "Failed to initialize gtk
//! backend!" (exit 101) when GTK cannot open one; the app checks the environment first (here) and then calls
//! `gtk::init` itself (src-tauri/src/main.rs), and says what is missing instead.

use std::ffi::OsStr;

/// Why the environment alone rules out a display, or None when it names one (or the GTK backend it asks for
/// cannot be judged from the environment, e.g. broadway). The values are DISPLAY, WAYLAND_DISPLAY, GDK_BACKEND.
pub fn missing_display(
    display: Option<&OsStr>,
    wayland: Option<&OsStr>,
    gdk_backend: Option<&OsStr>,
) -> Option<String> {
    let set = |v: Option<&OsStr>| v.is_some_and(|v| !v.is_empty());
    match gdk_backend.and_then(OsStr::to_str).unwrap_or("") {
        "" => (!set(display) && !set(wayland)).then(|| "neither DISPLAY nor WAYLAND_DISPLAY is set".to_string()),
        "x11" => (!set(display)).then(|| "GDK_BACKEND=x11 but DISPLAY is not set".to_string()),
        "wayland" => (!set(wayland)).then(|| "GDK_BACKEND=wayland but WAYLAND_DISPLAY is not set".to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(display: Option<&str>, wayland: Option<&str>, backend: Option<&str>) -> Option<String> {
        missing_display(display.map(OsStr::new), wayland.map(OsStr::new), backend.map(OsStr::new))
    }

    #[test]
    fn no_display_variable_is_missing_and_empty_counts_as_unset() {
        let expected = Some("neither DISPLAY nor WAYLAND_DISPLAY is set".to_string());
        assert_eq!(check(None, None, None), expected);
        assert_eq!(check(Some(""), Some(""), None), expected);
        assert_eq!(check(Some(""), None, Some("")), expected);
    }

    #[test]
    fn either_variable_is_enough_without_a_backend_choice() {
        assert_eq!(check(Some(":0"), None, None), None);
        assert_eq!(check(None, Some("wayland-0"), None), None);
        assert_eq!(check(Some(":1"), Some("wayland-0"), None), None);
    }

    #[test]
    fn a_chosen_backend_needs_its_own_variable() {
        assert_eq!(check(None, Some("wayland-0"), Some("x11")), Some("GDK_BACKEND=x11 but DISPLAY is not set".into()));
        assert_eq!(check(Some(":0"), None, Some("x11")), None);
        assert_eq!(
            check(Some(":0"), None, Some("wayland")),
            Some("GDK_BACKEND=wayland but WAYLAND_DISPLAY is not set".into())
        );
        assert_eq!(check(None, Some("wayland-0"), Some("wayland")), None);
    }

    #[test]
    fn backends_the_environment_cannot_judge_are_left_to_gtk() {
        assert_eq!(check(None, None, Some("broadway")), None);
        assert_eq!(check(None, None, Some("wayland,x11")), None);
    }
}
