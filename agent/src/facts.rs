//! Facts the agent reports about its host in Hello.
//!
//! Read from the usual Linux files, without shelling out; a missing file gives
//! an empty fact, never an error (containers often lack `/etc/os-release`).

/// The kernel hostname (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.trim().is_empty()))
}

/// `PRETTY_NAME` from `/etc/os-release` (empty when unknown).
pub fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release").map(|s| parse_pretty_name(&s)).unwrap_or_default()
}

fn parse_pretty_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pretty_name() {
        let s = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(super::parse_pretty_name(s), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(super::parse_pretty_name("ID=x"), "");
    }
}
