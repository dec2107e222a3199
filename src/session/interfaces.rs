//! Named media interfaces, as rtpengine has them: `--interface NAME/ADDR[!ADVERTISED]`,
//! repeatable. One name may carry several addresses (IPv4 and IPv6, and several of one family:
//! calls are spread over them round-robin); an address given without a name belongs to
//! `default`. Which interface a side of a call uses is chosen by name (ng `direction`,
//! `from-interface`/`to-interface`, or the SIP proxy's network of the peer) and by the family
//! of the side's media.
//!
//! Pure: parsing and selection, no sockets.

use std::net::IpAddr;

use crate::session::negotiate::{Family, NegotiateError, RelayInterface};

/// The name of an interface given without one.
pub const DEFAULT_NAME: &str = "default";

/// Longest interface name accepted (rtpengine's names are short words like `internal`).
pub const MAX_NAME_LEN: usize = 64;

/// Parses one `[NAME/]ADDR[!ADVERTISED]`.
pub fn parse_interface(s: &str) -> Result<RelayInterface, String> {
    let s = s.trim();
    let (name, rest) = match s.split_once('/') {
        Some((n, r)) => (n.trim(), r),
        None => (DEFAULT_NAME, s),
    };
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(format!(
            "bad interface name {name:?} (letters, digits, - _ . : only)"
        ));
    }
    let (local, adv) = match rest.split_once('!') {
        Some((l, a)) => (l.trim(), Some(a.trim())),
        None => (rest.trim(), None),
    };
    let local: IpAddr = local
        .parse()
        .map_err(|_| format!("bad interface address {local:?}"))?;
    check_not_wildcard(local)?;
    let advertised = match adv {
        Some(a) => {
            let a: IpAddr = a
                .parse()
                .map_err(|_| format!("bad advertised address {a:?}"))?;
            if a.is_ipv6() != local.is_ipv6() {
                return Err(format!(
                    "advertised address {a} is not of the family of {local}"
                ));
            }
            (a != local).then_some(a)
        }
        None => None,
    };
    Ok(RelayInterface {
        name: name.to_owned(),
        local,
        advertised,
    })
}

/// A wildcard cannot be written into SDP: media interfaces name real addresses.
fn check_not_wildcard(local: IpAddr) -> Result<(), String> {
    if local.is_unspecified() {
        return Err(format!(
            "interface address {local} is a wildcard: give the address peers send to"
        ));
    }
    Ok(())
}

/// Parses a list of interfaces and checks it: at least one, no address twice.
pub fn parse_interfaces<S: AsRef<str>>(list: &[S]) -> Result<Vec<RelayInterface>, String> {
    let mut out: Vec<RelayInterface> = Vec::with_capacity(list.len());
    for s in list {
        let i = parse_interface(s.as_ref())?;
        if let Some(dup) = out.iter().find(|o| o.local == i.local) {
            return Err(format!(
                "interface address {} given twice ({} and {})",
                i.local, dup.name, i.name
            ));
        }
        out.push(i);
    }
    if out.is_empty() {
        return Err("no interface given".into());
    }
    Ok(out)
}

/// The name used when a signal names none: `default` if configured, else the first
/// interface's name.
pub fn default_name(interfaces: &[RelayInterface]) -> Option<&str> {
    interfaces
        .iter()
        .find(|i| i.name.eq_ignore_ascii_case(DEFAULT_NAME))
        .or_else(|| interfaces.first())
        .map(|i| i.name.as_str())
}

/// Whether `name` is a configured interface name.
pub fn is_known(interfaces: &[RelayInterface], name: &str) -> bool {
    interfaces.iter().any(|i| i.name.eq_ignore_ascii_case(name))
}

/// The distinct names, in configuration order.
pub fn names(interfaces: &[RelayInterface]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for i in interfaces {
        if !out.iter().any(|n| n.eq_ignore_ascii_case(&i.name)) {
            out.push(&i.name);
        }
    }
    out
}

/// The interface for one side of a call: among the addresses of `name` (an unknown or absent
/// name: the default), those of `family` when it is forced (an error if there are none),
/// else those of the side's own family (`ipv6`), else any; of these, number `turn` modulo
/// their count (the caller's round-robin counter, one turn per call).
pub fn select<'i>(
    interfaces: &'i [RelayInterface],
    name: Option<&str>,
    family: Option<Family>,
    ipv6: bool,
    turn: usize,
) -> Result<&'i RelayInterface, NegotiateError> {
    let asked = name.filter(|n| is_known(interfaces, n));
    let name = match asked {
        Some(n) => n,
        None => default_name(interfaces).ok_or(NegotiateError::NoInterface("relay"))?,
    };
    let named: Vec<&'i RelayInterface> = interfaces
        .iter()
        .filter(|i| i.name.eq_ignore_ascii_case(name))
        .collect();
    // Without a name asked for, a family the default lacks is taken from any interface.
    let anywhere: Vec<&'i RelayInterface> = if asked.is_none() {
        interfaces.iter().collect()
    } else {
        Vec::new()
    };
    let of_family = |list: &[&'i RelayInterface], v6: bool| -> Vec<&'i RelayInterface> {
        list.iter().copied().filter(|i| i.is_ipv6() == v6).collect()
    };
    let nth = |v: &[&'i RelayInterface]| v.get(turn.checked_rem(v.len())?).copied();
    let family_pick =
        |v6: bool| nth(&of_family(&named, v6)).or_else(|| nth(&of_family(&anywhere, v6)));
    match family {
        Some(Family::V6) => family_pick(true).ok_or(NegotiateError::NoInterface("IPv6")),
        Some(Family::V4) => family_pick(false).ok_or(NegotiateError::NoInterface("IPv4")),
        None => family_pick(ipv6)
            .or_else(|| nth(&named))
            .ok_or(NegotiateError::NoInterface("relay")),
    }
}

/// The interface an address of ours belongs to (a bound side's name in `query`).
pub fn owner(interfaces: &[RelayInterface], local: IpAddr) -> Option<&RelayInterface> {
    interfaces.iter().find(|i| i.local == local)
}

/// The interface names the two sides of a signal use: `direction[0]` for the side that sent
/// `from-tag`, `direction[1]` for the other. In an offer the from-tag side is the offerer, so
/// the offerer takes the first name and the receiver the second. In an answer the from-tag is
/// still the caller's (the offerer's), while the SDP comes from the to-tag side: the names are
/// swapped against the SDP's sender, so the answerer takes the second name. Returns
/// (sender of this SDP, its receiver).
pub fn sides(direction: &[String], sender_is_from_tag: bool) -> [Option<&str>; 2] {
    let at = |i: usize| {
        direction
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    };
    if sender_is_from_tag {
        [at(0), at(1)]
    } else {
        [at(1), at(0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifs(list: &[&str]) -> Vec<RelayInterface> {
        parse_interfaces(list).unwrap()
    }

    #[test]
    fn parses_rtpengine_forms() {
        let i = parse_interface("10.0.0.1").unwrap();
        assert_eq!(
            (i.name.as_str(), i.local.to_string()),
            ("default", "10.0.0.1".into())
        );
        assert_eq!(i.advertised, None);
        let i = parse_interface("external/10.0.0.1!203.0.113.5").unwrap();
        assert_eq!(i.name, "external");
        assert_eq!(i.sdp_addr().to_string(), "203.0.113.5");
        assert_eq!(i.local.to_string(), "10.0.0.1");
        let i = parse_interface("pub/2001:db8::1").unwrap();
        assert!(i.is_ipv6());
        assert_eq!(
            parse_interface("x/1.2.3.4!1.2.3.4").unwrap().advertised,
            None
        );
        for bad in [
            "nonsense",
            "/10.0.0.1",
            "a b/10.0.0.1",
            "x/10.0.0.1!2001:db8::1",
            "x/0.0.0.0",
            "x/10.0.0.1!",
            "x/::",
        ] {
            assert!(parse_interface(bad).is_err(), "{bad}");
        }
        assert!(parse_interfaces(&["a/10.0.0.1", "b/10.0.0.1"]).is_err());
        assert!(parse_interfaces::<&str>(&[]).is_err());
    }

    #[test]
    fn selects_by_name_family_and_turn() {
        let list = ifs(&[
            "internal/10.0.0.1",
            "external/203.0.113.1",
            "external/203.0.113.2",
            "external/2001:db8::1",
        ]);
        let pick = |name, family, v6, turn| {
            select(&list, name, family, v6, turn)
                .map(|i| i.local.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(pick(Some("internal"), None, false, 7).unwrap(), "10.0.0.1");
        assert_eq!(
            pick(Some("EXTERNAL"), None, false, 0).unwrap(),
            "203.0.113.1"
        );
        assert_eq!(
            pick(Some("external"), None, false, 1).unwrap(),
            "203.0.113.2"
        );
        assert_eq!(
            pick(Some("external"), None, false, 2).unwrap(),
            "203.0.113.1"
        );
        assert_eq!(
            pick(Some("external"), None, true, 5).unwrap(),
            "2001:db8::1"
        );
        assert_eq!(
            pick(Some("external"), Some(Family::V6), false, 0).unwrap(),
            "2001:db8::1"
        );
        // internal has no IPv6: the side's family falls back, a forced one fails.
        assert_eq!(pick(Some("internal"), None, true, 0).unwrap(), "10.0.0.1");
        assert!(pick(Some("internal"), Some(Family::V6), false, 0).is_err());
        // No name, or an unknown one: the first name (no `default` here); a family it
        // lacks comes from any interface.
        assert_eq!(pick(None, None, false, 3).unwrap(), "10.0.0.1");
        assert_eq!(pick(None, None, true, 0).unwrap(), "2001:db8::1");
        assert_eq!(pick(Some("dmz"), None, false, 0).unwrap(), "10.0.0.1");
        let with_default = ifs(&["a/10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            select(&with_default, None, None, false, 0)
                .unwrap()
                .local
                .to_string(),
            "10.0.0.2"
        );
        assert!(select(&[], None, None, false, 0).is_err());
        assert_eq!(names(&list), vec!["internal", "external"]);
        assert_eq!(
            owner(&list, "203.0.113.2".parse().unwrap()).unwrap().name,
            "external"
        );
    }

    #[test]
    fn direction_is_swapped_against_the_answer_sdp_sender() {
        let dir = vec!["internal".to_string(), "external".to_string()];
        // Offer: from-tag side sends the SDP.
        assert_eq!(sides(&dir, true), [Some("internal"), Some("external")]);
        // Answer: the to-tag side sends it; it is on the second network.
        assert_eq!(sides(&dir, false), [Some("external"), Some("internal")]);
        // from-interface only, or to-interface only (an empty first entry).
        let from_only = vec!["internal".to_string()];
        assert_eq!(sides(&from_only, false), [None, Some("internal")]);
        let to_only = vec![String::new(), "external".to_string()];
        assert_eq!(sides(&to_only, true), [None, Some("external")]);
        assert_eq!(sides(&[], true), [None, None]);
    }
}
