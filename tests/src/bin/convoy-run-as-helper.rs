//! The `run_as` trampoline for the in-process tests: the test binaries run
//! the agent library, but the trampoline must be a binary whose `main` calls
//! [`convoy_agent::run_as::hook`] first (see `tests/tests/run_as.rs`).

fn main() {
    convoy_agent::run_as::hook();
    eprintln!("convoy-run-as-helper: only runs as `{} ...`", convoy_agent::run_as::MODE);
    std::process::exit(2);
}
