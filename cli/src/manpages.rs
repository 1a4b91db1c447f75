//! Shell completions (`convoy completions SHELL`) and man pages (`convoy
//! man --out-dir DIR`), generated from the clap definitions of `convoy`,
//! `convoy-agent` and `convoy-coordinator`, so they never drift from the
//! commands. Hidden subcommands (the demo's internals) are left out.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::error::CliError;

/// Which program a completion script is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Program {
    Convoy,
    ConvoyAgent,
    ConvoyCoordinator,
}

fn command_of(p: Program) -> clap::Command {
    match p {
        Program::Convoy => crate::command(),
        Program::ConvoyAgent => convoy_agent::cli::AgentArgs::command(),
        Program::ConvoyCoordinator => convoy_coordinator::cli::CoordinatorArgs::command(),
    }
}

/// Write the completion script of `program` for `shell`.
pub fn completions(
    shell: clap_complete::Shell,
    program: Program,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let mut cmd = command_of(program);
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

/// Render one page (and, recursively, its visible subcommands as
/// `parent-sub.1`) into `dir`; returns the files written.
fn write_pages(cmd: clap::Command, prefix: Option<&str>, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let name = match prefix {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase()).render(&mut bytes).map_err(io(dir))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, bytes).map_err(io(&path))?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub.clone(), Some(&name), dir, out)?;
    }
    Ok(())
}

/// Every man page of the three programs, into `dir` (created if missing).
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut out = Vec::new();
    for p in [Program::Convoy, Program::ConvoyAgent, Program::ConvoyCoordinator] {
        let mut cmd = command_of(p);
        cmd.build();
        write_pages(cmd, None, dir, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, Program::Convoy, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for sub in ["apply", "status", "verify", "events", "audit", "hold", "completions"] {
            assert!(text.contains(sub), "bash completion lacks {sub}");
        }
        let mut out = Vec::new();
        completions(clap_complete::Shell::Zsh, Program::ConvoyCoordinator, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("serve") && text.contains("init"), "{}", &text[..200.min(text.len())]);
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(dir.path()).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in [
            "convoy.1",
            "convoy-verify.1",
            "convoy-agents-hold.1",
            "convoy-audit.1",
            "convoy-agent.1",
            "convoy-coordinator.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("__")), "{names:?}");
        let top = std::fs::read_to_string(dir.path().join("convoy.1")).unwrap();
        assert!(top.contains(".TH") && top.contains("verify") && top.contains("audit"), "{top}");
    }
}
