//! The invariants' rule for maintenance windows (see the parent module's
//! list): a host starts inside a window of its calendar, its estimate plus
//! the cutoff fitting before the window closes, unless an operator lifted
//! the windows.

use super::*;

impl<'a> Checker<'a> {
    /// Host `h` of group `g` starts at `now`: inside a window it fits in,
    /// unless the windows were lifted before.
    pub(super) fn in_window(&mut self, n: usize, now: UnixMillis, h: usize, g: usize) {
        if self.windows_lifted.is_some() {
            return;
        }
        let Some((cal, need)) = self.spec.windows.as_ref().and_then(|w| w.calendar(g, h)) else { return };
        let t = schedule::to_utc(now.0);
        let host = &self.spec.hosts[h].host;
        let group = &self.spec.groups[g].name;
        match cal.open_at(t) {
            None => self.fail(format!(
                "entry {n}: host {host} of group {group} started at {t} outside its maintenance windows ({}) \
                 with no windows override before",
                cal.tz.name()
            )),
            Some(close) if chrono::TimeDelta::from_std(need).is_ok_and(|need| t + need > close) => {
                self.fail(format!(
                    "entry {n}: host {host} of group {group} started at {t} although its estimate plus cutoff ({}) \
                     does not fit before its window closes at {close}",
                    crate::plan::format_duration(need)
                ));
            }
            Some(_) => {}
        }
    }
}
