//! Reading CPU time of another process (`/proc/PID/stat`, proc(5)) and the kernel's UDP
//! drop counters (`/proc/net/snmp`). Parsers are pure; the readers just add the file I/O.

/// utime + stime in clock ticks from the text of `/proc/PID/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after the *last* ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) 12.
    let mut it = after.split_whitespace().skip(11);
    let utime: u64 = it.next()?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU nanoseconds used so far by process `pid` (all threads), or `None` if it is gone.
pub fn process_cpu_ns(pid: u32, ticks_per_sec: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    Some(ticks * (1_000_000_000 / ticks_per_sec.max(1)))
}

/// The command name (field 2, between the first '(' and the last ')') of a `stat` text.
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// CPU milliseconds used so far by each thread of process `pid`, added up by thread name
/// (`/proc/PID/task/*/stat`); empty if the process is gone.
pub fn thread_cpu_ms(pid: u32, ticks_per_sec: u64) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(comm), Some(ticks)) = (parse_stat_comm(&text), parse_stat_ticks(&text)) {
            *out.entry(comm.to_string()).or_default() += ticks * 1000 / ticks_per_sec.max(1);
        }
    }
    out
}

/// Idle clock ticks of the whole machine and its CPU count, from the text of `/proc/stat`:
/// the `cpu` line's idle, iowait and steal (a worker waiting in io_uring counts as iowait;
/// steal is time the hypervisor gave to others), and the number of `cpuN` lines. Idle
/// time is measured exactly by the tickless kernel, where user and system time are only
/// sampled at each tick (which misses most of a relay's short bursts); busy time is
/// therefore worked out as elapsed time on every CPU minus idle.
pub fn parse_machine_idle_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    let get = |i: usize| v.get(i).copied();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    Some((get(3)? + get(4)? + get(7)?, cpus))
}

/// The whole machine's idle nanoseconds so far and its CPU count.
pub fn machine_idle_ns(ticks_per_sec: u64) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let (ticks, cpus) = parse_machine_idle_ticks(&text)?;
    Some((ticks * (1_000_000_000 / ticks_per_sec.max(1)), cpus))
}

/// The `Udp:` `RcvbufErrors` and `InErrors` counters from the text of `/proc/net/snmp`
/// (a header line of names followed by a line of values).
pub fn parse_udp_errors(snmp: &str) -> Option<(u64, u64)> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("InErrors")?))
}

/// System-wide UDP receive-buffer drops so far (all sockets: generator and relay).
pub fn udp_rcvbuf_errors() -> u64 {
    std::fs::read_to_string("/proc/net/snmp")
        .ok()
        .and_then(|t| parse_udp_errors(&t))
        .map(|(r, _)| r)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let line = "4242 (rtp (eng) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 \
                    5 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(1234 + 567));
        assert_eq!(parse_stat_comm(line), Some("rtp (eng) x"));
        assert_eq!(parse_stat_ticks("no paren"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn machine_idle_counts_idle_iowait_steal_and_the_cpus() {
        let t = "cpu  100 2 30 5000 7 4 6 9 11 0\ncpu0 50 1 15 2500 3 2 3 4 5 0\n\
                 cpu1 50 1 15 2500 4 2 3 5 6 0\nintr 1\n";
        assert_eq!(parse_machine_idle_ticks(t), Some((5000 + 7 + 9, 2)));
        assert_eq!(parse_machine_idle_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(parse_machine_idle_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn snmp_udp_counters() {
        let t =
            "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams \
                 RcvbufErrors SndbufErrors\nUdp: 10 2 7 9 5 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(parse_udp_errors(t), Some((5, 7)));
        assert_eq!(parse_udp_errors("Ip: x\n"), None);
    }
}
