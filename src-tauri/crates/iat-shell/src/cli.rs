//! The app's command line: `--version` and `--help` answer and exit before any window or GTK exists; anything
//! else the app does not know is refused, so a typo does not silently open a window. Here, not in the app, so
//! it is tested without building the webview stack.

use std::ffi::OsStr;
use std::fmt;

/// Exit status for a command line the app does not understand (as getopt-style tools do).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when there is no graphical display to open the window on.
pub const EXIT_NO_DISPLAY: i32 = 3;

#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Open the window (no arguments).
    Run,
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    UnknownOption(String),
    UnexpectedArgument(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::UnknownOption(opt) => write!(f, "unknown option '{opt}'"),
            ArgError::UnexpectedArgument(arg) => write!(f, "unexpected argument '{arg}' (the app takes no files)"),
        }
    }
}

/// Reads the arguments after the program name. `--help` / `--version` win over anything after them, as in most
/// tools; the first argument that is neither is an error.
pub fn parse_args<I, S>(args: I) -> Result<Invocation, ArgError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    for arg in args {
        let arg = arg.as_ref();
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Invocation::Help),
            Some("-V" | "--version") => return Ok(Invocation::Version),
            // Older macOS passes a process serial number to apps started from the Finder.
            Some(a) if cfg!(target_os = "macos") && a.starts_with("-psn_") => continue,
            _ => {
                let shown = arg.to_string_lossy().into_owned();
                return Err(if shown.starts_with('-') && shown != "-" {
                    ArgError::UnknownOption(shown)
                } else {
                    ArgError::UnexpectedArgument(shown)
                });
            }
        }
    }
    Ok(Invocation::Run)
}

/// `iat-toolkit 0.1.0` for `version_line("iat-toolkit", "0.1.0")` (the app passes its own package's).
pub fn version_line(name: &str, version: &str) -> String {
    format!("{name} {version}")
}

/// What `--help` prints.
pub fn usage(name: &str, version: &str) -> String {
    format!(
        "\
{name} {version}: the IAT Toolkit desktop app (a window on its bundled sidecar).

Usage: {name} [--help | --version]

Options:
  -h, --help     print this help and exit
  -V, --version  print the version and exit

Without options it opens the app's window; that needs a graphical display (DISPLAY or WAYLAND_DISPLAY on
Linux). Environment: IAT_HOME (the sidecar's data folder), IAT_SIDECAR_PATH (use another sidecar executable).

Exit status: 0 on success, {usage} for a bad command line, {display} when no display can be opened.
",
        usage = EXIT_USAGE,
        display = EXIT_NO_DISPLAY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_runs_the_app() {
        assert_eq!(parse_args(Vec::<&str>::new()), Ok(Invocation::Run));
    }

    #[test]
    fn version_and_help_in_long_and_short_form() {
        assert_eq!(parse_args(["--version"]), Ok(Invocation::Version));
        assert_eq!(parse_args(["-V"]), Ok(Invocation::Version));
        assert_eq!(parse_args(["--help"]), Ok(Invocation::Help));
        assert_eq!(parse_args(["-h"]), Ok(Invocation::Help));
    }

    #[test]
    fn the_first_of_help_and_version_wins() {
        assert_eq!(parse_args(["--help", "--version"]), Ok(Invocation::Help));
        assert_eq!(parse_args(["--version", "--bogus"]), Ok(Invocation::Version));
    }

    #[test]
    fn unknown_options_and_stray_arguments_are_errors() {
        assert_eq!(parse_args(["--verison"]), Err(ArgError::UnknownOption("--verison".into())));
        assert_eq!(parse_args(["-v"]), Err(ArgError::UnknownOption("-v".into())));
        assert_eq!(parse_args(["--version=1"]), Err(ArgError::UnknownOption("--version=1".into())));
        assert_eq!(parse_args(["project.iat"]), Err(ArgError::UnexpectedArgument("project.iat".into())));
        assert_eq!(parse_args(["-"]), Err(ArgError::UnexpectedArgument("-".into())));
        // An error before --help is still an error: the command line as a whole is wrong.
        assert_eq!(parse_args(["--bogus", "--help"]), Err(ArgError::UnknownOption("--bogus".into())));
        assert_eq!(ArgError::UnknownOption("--x".into()).to_string(), "unknown option '--x'");
    }

    #[cfg(unix)]
    #[test]
    fn arguments_that_are_not_utf8_are_reported_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let arg = OsStr::from_bytes(b"--caf\xe9");
        match parse_args([arg]) {
            Err(ArgError::UnknownOption(shown)) => assert!(shown.starts_with("--caf"), "{shown}"),
            other => panic!("expected an unknown option, got {other:?}"),
        }
    }

    #[test]
    fn version_line_and_usage_name_the_app_and_its_version() {
        assert_eq!(version_line("iat-toolkit", "1.2.3"), "iat-toolkit 1.2.3");
        let usage = usage("iat-toolkit", "1.2.3");
        assert!(usage.starts_with("iat-toolkit 1.2.3: "), "{usage}");
        assert!(usage.contains("Usage: iat-toolkit [--help | --version]"), "{usage}");
        assert!(usage.contains(&format!("{EXIT_USAGE} for a bad command line")), "{usage}");
    }
}
