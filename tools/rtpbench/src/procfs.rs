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
        assert_eq!(parse_stat_ticks("no paren"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
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
