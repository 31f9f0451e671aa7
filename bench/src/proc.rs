//! What the measurements read from /proc: CPU time of a process (or of a PostgreSQL cluster), the
//! busy time of the whole machine, and a process's memory. One copy for both load generators.

use std::path::Path;

/// Linux reports CPU times in USER_HZ ticks, which the kernel ABI fixes at 100.
const USER_HZ: f64 = 100.0;

/// User and system CPU seconds, so far.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.sys
    }
}

/// CPU seconds spent between two samples (`None` when either is missing).
pub fn cpu_between(before: Option<Cpu>, after: Option<Cpu>) -> Option<f64> {
    Some(after?.total() - before?.total())
}

/// utime and stime of a process (all its threads), from /proc/PID/stat; with `children`, also
/// the times of its waited-for children.
pub fn proc_cpu(pid: u32, children: bool) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&stat)?;
    // f[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let tick = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).map(|v| v as f64 / USER_HZ);
    let (mut user, mut sys) = (tick(14)?, tick(15)?);
    if children {
        user += tick(16)?;
        sys += tick(17)?;
    }
    Some(Cpu { user, sys })
}

/// The fields of a /proc/PID/stat line after the command name, which is in parentheses and may
/// contain spaces (so they are counted from its closing parenthesis): the first is field 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// CPU of a PostgreSQL cluster: the postmaster (with reaped children) and its live children.
pub fn pg_cpu(data: &Path) -> Option<Cpu> {
    let pid: u32 =
        std::fs::read_to_string(data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
    let mut cpu = proc_cpu(pid, true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // Field 4 is the parent's PID.
        let ppid = stat_fields(&stat).and_then(|f| f.get(1)?.parse::<u32>().ok());
        if ppid == Some(pid)
            && let Some(c) = proc_cpu(child, false)
        {
            cpu.user += c.user;
            cpu.sys += c.sys;
        }
    }
    Some(cpu)
}

/// Busy CPU seconds of the whole machine so far (all cores), from /proc/stat: user, nice,
/// system, irq, softirq and steal; not idle nor iowait.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
    if ticks.len() < 8 {
        return None;
    }
    let busy: u64 = ticks.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Some(busy as f64 / USER_HZ)
}

#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM of a process, from /proc/PID/status.
pub fn proc_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Mem { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_of_this_process_parse() {
        let me = std::process::id();
        let mem = proc_mem(me).expect("own status");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib);
        let cpu = proc_cpu(me, false).expect("own stat");
        assert!(cpu.user >= 0.0 && cpu.sys >= 0.0);
        assert!(proc_cpu(me, true).expect("own stat with children").total() >= cpu.total());
        assert!(machine_busy_secs().expect("/proc/stat") > 0.0);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 130 3 4 20 0 1 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "7");
        assert_eq!(f[14 - 3], "250");
        assert_eq!(f[17 - 3], "4");
    }
}
