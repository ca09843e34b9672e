//! `completions SHELL` and `man [--dir DIR]`: generated from the clap definition in
//! [`crate::cli`], so they can never disagree with the parser. Neither reads a config file.
//!
//! `man` prints one page for the whole command line: the global part as clap_mangen renders
//! it, then a COMMANDS section with one subsection per command (`jobs show` and `backups pin`
//! included) holding its synopsis, description and options. `man --dir DIR` writes git-style
//! pages instead (`rdbvault.1`, `rdbvault-check-config.1`, `rdbvault-jobs-show.1`, ...), which
//! is what a package installs under `man1/`.

use crate::cli::Cli;
use crate::failure::Failure;
use clap::CommandFactory as _;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// The binary's name, as completions and pages call it.
const BIN: &str = "rdbvault";

/// `completions SHELL`: the completion script on standard output.
///
/// # Errors
/// Standard output cannot be written (other than a closed pipe).
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    write_stdout(&script)
}

/// `man [--dir DIR]`: one page on standard output, or one page per command in `DIR`.
///
/// # Errors
/// `DIR` is not an existing directory (exit 2), a page cannot be written, or standard output
/// cannot be written.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    let Some(dir) = dir else {
        return write_stdout(&one_page().map_err(render_failed)?);
    };
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "man --dir {}: not an existing directory; create it (mkdir -p {}) or leave out --dir to print one page",
            dir.display(),
            dir.display()
        )));
    }
    let mut written = Vec::new();
    for (name, page) in pages_per_command().map_err(render_failed)? {
        std::fs::write(dir.join(&name), page).map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot write {}: {e}; check that the directory is writable",
                dir.join(&name).display()
            ))
        })?;
        written.push(name);
    }
    outln!(
        "wrote {} pages into {}: {}",
        written.len(),
        dir.display(),
        written.join(" ")
    );
    Ok(())
}

fn render_failed(e: std::io::Error) -> Failure {
    Failure::Runtime(anyhow::anyhow!("cannot render the manual page: {e}"))
}

/// The command tree with bin names resolved (`rdbvault jobs show`) and no `help` subcommand.
fn the_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `(file name, page)` for the top level and every command, git style: `rdbvault.1`,
/// `rdbvault-check-config.1`, `rdbvault-jobs-show.1`, ...
fn pages_per_command() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        man.render(&mut page)?;
        out.push((man.get_filename(), ascii_roff(&page)));
        for sub in visible_subcommands(cmd) {
            walk(sub, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&the_command(), &mut out)?;
    Ok(out)
}

/// The whole command line as one roff page: the top-level page without its list of
/// `rdbvault-COMMAND(1)` references (they would name pages that are not installed), then every
/// command in a subsection of COMMANDS, then exit status and notes.
pub(crate) fn one_page() -> std::io::Result<Vec<u8>> {
    let cmd = the_command();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in visible_subcommands(&cmd) {
        command_section(&mut out, sub)?;
    }
    out.extend_from_slice(
        b".SH \"EXIT STATUS\"\n0 success, 1 runtime failure (the API, a destination or the state DB \
failed), 2 usage or configuration error (the message names the file and line, or the YAML path), \
3 a backup or a verification failed, 4 a backup asked for was skipped (its instance already had \
an open job) and nothing failed.\n.SH ENVIRONMENT\n.TP\n.B RDBVAULT_CONFIG\n\
The config file when -c is not given.\n.TP\n.B CDS_ACCESS_KEY_ID, CDS_ACCESS_KEY_SECRET\n\
The CDS API keys, unless the config names key files (cds.access_key_id_file, \
cds.access_key_secret_file).\n.TP\n.B RUST_LOG\nA log filter overriding log.level.\n",
    );
    let mut notes = Vec::new();
    top.render_extra_section(&mut notes)?;
    out.extend_from_slice(
        &String::from_utf8_lossy(&notes)
            .replacen(".SH EXTRA", ".SH NOTES", 1)
            .into_bytes(),
    );
    top.render_version_section(&mut out)?;
    Ok(ascii_roff(&out))
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// One command (and, after it, each of its own subcommands) as `.SS "rdbvault NAME"`: its
/// synopsis and description as paragraphs, its options as a list, its examples as written.
fn command_section(out: &mut Vec<u8>, sub: &clap::Command) -> std::io::Result<()> {
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    writeln!(out, ".SS \"{}\"", roff_escape(name))?;
    let man = clap_mangen::Man::new(sub.clone());
    let mut part = Vec::new();
    man.render_synopsis_section(&mut part)?;
    man.render_description_section(&mut part)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut part)?;
    }
    if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
        man.render_extra_section(&mut part)?;
    }
    out.extend_from_slice(&demote_headings(&part));
    for nested in visible_subcommands(sub) {
        command_section(out, nested)?;
    }
    Ok(())
}

/// Fits a page's sections into a subsection: `.SH SYNOPSIS` and `.SH DESCRIPTION` become plain
/// paragraphs, `.SH OPTIONS` (or any other heading) a bold label over its list, and `.SH EXTRA`
/// (the examples of `after_help`, laid out for a terminal) a paragraph kept as written
/// (`.nf` ... `.fi`). The string definitions every render repeats are dropped: the page's own
/// preamble has them.
fn demote_headings(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    let mut no_fill = false;
    for line in text.lines() {
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            continue;
        }
        let Some(heading) = line.strip_prefix(".SH ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if std::mem::take(&mut no_fill) {
            out.push_str(".fi\n");
        }
        match heading.trim_matches('"') {
            "SYNOPSIS" | "DESCRIPTION" => out.push_str(".PP\n"),
            "EXTRA" => {
                out.push_str(".PP\n.nf\n");
                no_fill = true;
            }
            "OPTIONS" => out.push_str(".PP\n\\fBOptions:\\fR\n"),
            other => {
                out.push_str(".PP\n\\fB");
                out.push_str(other);
                out.push_str(":\\fR\n");
            }
        }
    }
    if no_fill {
        out.push_str(".fi\n");
    }
    out.into_bytes()
}

/// Every character beyond ASCII as groff's `\[uXXXX]`, so the page renders the same with or
/// without `preconv` (plain `groff -man` reads bytes, not UTF-8).
fn ascii_roff(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let _ = write!(out, "\\[u{:04X}]", u32::from(c));
        }
    }
    out.into_bytes()
}

/// Escapes text for a roff macro argument in double quotes.
fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\e").replace('"', "\\(dq")
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Runtime(anyhow::anyhow!(
            "cannot write to standard output: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_headings_become_paragraphs_and_labels() {
        let roff = b".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.SH SYNOPSIS\n\\fBx\\fR\n.SH DESCRIPTION\nhello\n\
.SH OPTIONS\n.TP\n--a\n.SH \"MY HEADING\"\nz\n.SH EXTRA\nExamples:\n  x y\n";
        let out = String::from_utf8(demote_headings(roff)).unwrap();
        assert_eq!(
            out,
            ".PP\n\\fBx\\fR\n.PP\nhello\n.PP\n\\fBOptions:\\fR\n.TP\n--a\n.PP\n\\fBMY HEADING:\\fR\nz\n\
.PP\n.nf\nExamples:\n  x y\n.fi\n"
        );
    }

    #[test]
    fn characters_beyond_ascii_become_groff_escapes() {
        assert_eq!(
            ascii_roff("a 中国 é".as_bytes()),
            b"a \\[u4E2D]\\[u56FD] \\[u00E9]"
        );
    }

    #[test]
    fn the_page_has_every_command_once_as_a_subsection() {
        let page = String::from_utf8(one_page().unwrap()).unwrap();
        assert!(page.contains("\n.TH rdbvault 1 "), "{}", &page[..200]);
        for name in [
            "check-config",
            "jobs show",
            "backups pin",
            "completions",
            "man",
            "init",
        ] {
            let heading = format!(".SS \"rdbvault {name}\"\n");
            assert_eq!(page.matches(&heading).count(), 1, "{heading}");
        }
        assert!(
            !page.contains("rdbvault-check-config(1)"),
            "no references to absent pages"
        );
        assert_eq!(page.matches(".SH ").count(), page.matches("\n.SH ").count());
    }
}
