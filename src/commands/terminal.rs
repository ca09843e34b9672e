//! What the command line writes to a terminal and what it leaves out elsewhere: whether colour
//! is wanted (a terminal, and no `NO_COLOR`), the logging set-up every command starts with, and
//! the log writer that steps around the progress bars so a log line never lands inside them
//! (nor they on it).
//!
//! The rule, for every command: colour and progress bars only on a terminal; `NO_COLOR` set to
//! anything but the empty string (<https://no-color.org>) turns every colour off, the bars' and
//! the log lines'; pipes and files get plain text.

use crate::config;
use indicatif::MultiProgress;
use std::ffi::OsStr;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;

/// Whether `NO_COLOR`'s value asks for no colour: set and not empty, as no-color.org says.
fn no_color_asked(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// Whether output to a stream may be coloured: it is a terminal and `NO_COLOR` (its value
/// given) does not ask for plain text.
fn colour_for(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && !no_color_asked(no_color)
}

/// Whether what goes to stderr (the progress bars, the log lines) may be coloured.
pub(super) fn colour_on_stderr() -> bool {
    colour_for(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Whether progress bars may be drawn on stderr: it is a terminal and, when the command also
/// prints its results on stdout while the bars are up (`with_stdout`), so is stdout. Results
/// piped away (`| tee log`) reach the terminal behind the bars' back, where a redraw could
/// erase them; a command with results in a pipe or a file draws no bars.
pub(super) fn bars_on_stderr(with_stdout: bool) -> bool {
    bars_for(
        std::io::stderr().is_terminal(),
        with_stdout.then(|| std::io::stdout().is_terminal()),
    )
}

/// [`bars_on_stderr`] given whether stderr is a terminal and, when it matters, stdout.
fn bars_for(stderr_is_terminal: bool, stdout_is_terminal: Option<bool>) -> bool {
    stderr_is_terminal && stdout_is_terminal.unwrap_or(true)
}

/// Sets up logging once, to stderr: `RUST_LOG` wins over `level`. Text is coloured only on a
/// terminal without `NO_COLOR`; JSON never is. Inside a job's span the span's fields
/// (`policy`, `instance`, `job_id`) are written once per line: JSON lists the spans
/// (`"spans": [{"name": "job", ...}]`) without repeating the innermost one as `"span"`.
pub fn init_logging(format: config::LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogLine::default);
    let _ = match format {
        config::LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        config::LogFormat::Text => builder.with_ansi(colour_on_stderr()).try_init(),
    };
}

/// The progress bars on screen now, if any: log lines are written around them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Log lines step around `bars` until [`BarsOnScreen`] is dropped.
pub(super) fn bars_on_screen(bars: &MultiProgress) -> BarsOnScreen {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bars.clone());
    BarsOnScreen(())
}

/// While alive, log lines are written around the progress bars (see [`bars_on_screen`]).
pub(super) struct BarsOnScreen(());

impl Drop for BarsOnScreen {
    fn drop(&mut self) {
        *BARS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// One log line on its way to stderr: gathered whole, then written in one piece when the
/// logger lets go of it, with the progress bars (if any are on screen) lifted while it is.
#[derive(Default)]
struct LogLine {
    buf: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Cloned out, so the lock is not held while the bars redraw.
        let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A log line that cannot be written has nowhere else to go.
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.buf);
        };
        match bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_with_any_value_but_the_empty_string_turns_colour_off() {
        for value in ["1", "0", "true", "false", "yes", " "] {
            assert!(!colour_for(true, Some(OsStr::new(value))), "{value:?}");
        }
    }

    #[test]
    fn an_empty_or_absent_no_color_leaves_colour_to_the_terminal() {
        assert!(colour_for(true, None));
        assert!(colour_for(true, Some(OsStr::new(""))));
    }

    #[test]
    fn bars_need_a_terminal_on_stderr_and_on_stdout_when_results_go_there() {
        assert!(bars_for(true, None));
        assert!(bars_for(true, Some(true)));
        assert!(!bars_for(true, Some(false)), "results piped: no bars");
        assert!(!bars_for(false, None));
        assert!(!bars_for(false, Some(true)));
    }

    #[test]
    fn no_terminal_means_no_colour_whatever_no_color_says() {
        assert!(!colour_for(false, None));
        assert!(!colour_for(false, Some(OsStr::new(""))));
        assert!(!colour_for(false, Some(OsStr::new("1"))));
    }
}
