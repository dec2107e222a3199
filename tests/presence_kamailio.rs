//! rtpanchor's presence agent against Kamailio's (modules `presence` + `presence_xml`,
//! `tools/kamailio/presence.cfg`, db_text files: no database server) as a reference: the
//! same two SIPp scenarios (`tools/sipp/presence_compare_*.xml`) run against each server
//! on loopback ports 14850-14899, and the test compares what the scenarios received (read
//! from SIPp's `-trace_msg` logs):
//! - the watcher: 489 for `Event: weather`, 200 for `Event: presence`, a NOTIFY of the
//!   current state, one per change (away, busy, removed), 200 to un-SUBSCRIBE and a final
//!   NOTIFY `terminated`;
//! - the publisher: 200 + SIP-ETag, a modification 200 + a new SIP-ETag, an unknown
//!   SIP-If-Match, 489 for `Event: weather`, 200 for the removal.
//!
//! Status codes and NOTIFY bodies (their `<basic>` statuses and RPID activities; tuple ids
//! and the entity are not compared) must be equal, except the differences README.md lists
//! under *Presence compared with Kamailio*, which are asserted as they are, so a change on
//! either side shows up here.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{
    find_program, kamailio_args, sipp_program, sipp_scenario, wait_udp_bound, Peer,
};
use common::TempDir;

const LO: &str = "127.0.0.1";
const KAMAILIO_SIP: u16 = 14850;
const RELAY_SIP: u16 = 14851;
const RELAY_NG: u16 = 14852;
const WATCHER: u16 = 14853;
const PUBLISHER: u16 = 14854;
const MEDIA: (u16, u16) = (14860, 14899);

/// One message of a SIPp trace: its first line, headers and body.
#[derive(Debug)]
struct Traced {
    received: bool,
    first: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Traced {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> Option<u16> {
        self.first.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    fn is_notify(&self) -> bool {
        self.first.starts_with("NOTIFY ")
    }
}

/// The messages of a `-trace_msg` log, in order.
fn read_trace(path: &Path) -> Vec<Traced> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for block in text.split("\n-----------------------------------------------") {
        let mut lines = block.splitn(3, '\n');
        let _stamp = lines.next();
        let Some(kind) = lines.next() else { continue };
        let received = kind.contains("message received");
        if !received && !kind.contains("message sent") {
            continue;
        }
        let msg = lines.next().unwrap_or("").trim_start_matches('\n');
        let (head, body) = msg.split_once("\r\n\r\n").unwrap_or((msg, ""));
        let mut head_lines = head.split("\r\n");
        let first = head_lines.next().unwrap_or("").to_owned();
        let headers = head_lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        out.push(Traced {
            received,
            first,
            headers,
            body: body.trim_end().to_owned(),
        });
    }
    out
}

/// What a NOTIFY says: the subscription state (without `expires=`) and, from its PIDF body,
/// the `<basic>` statuses and RPID activities in document order (`None`: no body).
#[derive(Clone, Debug, PartialEq, Eq)]
struct NotifySays {
    state: String,
    doc: Option<(Vec<String>, Vec<String>)>,
}

fn says(n: &Traced) -> NotifySays {
    let state = n
        .header("Subscription-State")
        .unwrap_or("")
        .split(';')
        .filter(|p| !p.trim_start().starts_with("expires="))
        .collect::<Vec<_>>()
        .join(";");
    let doc = (!n.body.is_empty()).then(|| {
        let basic = between_all(&n.body, "<basic>", "</basic>");
        let mut activities = Vec::new();
        for part in n.body.split("<rpid:").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() && name != "activities" {
                activities.push(name);
            }
        }
        (basic, activities)
    });
    NotifySays { state, doc }
}

fn between_all(s: &str, open: &str, close: &str) -> Vec<String> {
    s.split(open)
        .skip(1)
        .filter_map(|p| p.split_once(close).map(|(v, _)| v.trim().to_owned()))
        .collect()
}

/// What the two scenarios received from one server.
#[derive(Debug)]
struct Observed {
    watcher_statuses: Vec<u16>,
    notifies: Vec<NotifySays>,
    publisher_statuses: Vec<u16>,
    etags: Vec<Option<String>>,
}

fn sipp(dir: &Path, server: u16, scenario: &str, port: u16) -> Peer {
    let mut cmd = Command::new(sipp_program());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(sipp_scenario(scenario))
        .arg(format!("{LO}:{server}"))
        .args(["-s", "bob", "-i", LO, "-p", &port.to_string()])
        .args(["-m", "1", "-nostdin", "-trace_msg", "-trace_err"])
        .args(["-timeout", "40s", "-timeout_error"]);
    Peer::spawn(scenario, &mut cmd, &dir.join(format!("{scenario}.out"))).expect("start sipp")
}

/// The `-trace_msg` log SIPp wrote for `scenario` in `dir`.
fn trace_of(dir: &Path, scenario: &str) -> Option<PathBuf> {
    let stem = scenario.trim_end_matches(".xml");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(stem) && n.ends_with("_messages.log"))
        })
}

/// Runs the watcher, then (once it has its first NOTIFY) the publisher, against `server`.
fn observe(dir: &Path, server: u16, what: &str) -> Observed {
    let (w, p) = (
        "presence_compare_watcher.xml",
        "presence_compare_publisher.xml",
    );
    let mut watcher = sipp(dir, server, w, WATCHER);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subscribed = trace_of(dir, w)
            .is_some_and(|t| read_trace(&t).iter().any(|m| m.received && m.is_notify()));
        if subscribed {
            break;
        }
        assert!(
            Instant::now() < deadline && watcher.is_running(),
            "{what}: the watcher got no NOTIFY:\n{}",
            watcher.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut publisher = sipp(dir, server, p, PUBLISHER);
    for peer in [&mut publisher, &mut watcher] {
        let status = peer.wait_timeout(Duration::from_secs(45));
        assert!(
            status.is_some_and(|s| s.success()),
            "{what}: {} failed ({status:?}):\n{}",
            peer.name(),
            peer.log_tail(40)
        );
    }
    let wt = read_trace(&trace_of(dir, w).expect("watcher trace"));
    let pt = read_trace(&trace_of(dir, p).expect("publisher trace"));
    let responses = |t: &[Traced]| -> Vec<u16> {
        t.iter()
            .filter(|m| m.received)
            .filter_map(Traced::status)
            .collect()
    };
    Observed {
        watcher_statuses: responses(&wt),
        notifies: wt
            .iter()
            .filter(|m| m.received && m.is_notify())
            .map(says)
            .collect(),
        publisher_statuses: responses(&pt),
        etags: pt
            .iter()
            .filter(|m| m.received && m.status() == Some(200))
            .map(|m| m.header("SIP-ETag").map(str::to_owned))
            .collect(),
    }
}

fn start_kamailio(dir: &Path) -> Peer {
    let kamailio = find_program("kamailio").expect("kamailio is not installed");
    let db = dir.join("dbtext");
    let template = Path::new("/usr/share/kamailio/dbtext/kamailio");
    std::fs::create_dir_all(&db).unwrap();
    for e in std::fs::read_dir(template)
        .expect("kamailio's db_text tables")
        .flatten()
    {
        std::fs::copy(e.path(), db.join(e.file_name())).unwrap();
    }
    let run = dir.join("kamailio-run");
    std::fs::create_dir_all(&run).unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kamailio/presence.cfg");
    let mut cmd = Command::new(kamailio);
    kamailio_args(&mut cmd, &cfg, &run, dir)
        .args(["-A", &format!("LISTEN_IP={LO}")])
        .args(["-A", &format!("SIP_PORT={KAMAILIO_SIP}")])
        .args(["-A", &format!("SERVER_ADDRESS=\"sip:{LO}:{KAMAILIO_SIP}\"")])
        .args(["-A", &format!("DB_URL=\"text://{}\"", db.display())]);
    let mut kam = Peer::spawn("kamailio", &mut cmd, &dir.join("kamailio.log")).expect("kamailio");
    wait_udp_bound(&mut kam, KAMAILIO_SIP, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    kam
}

fn start_relay(dir: &Path) -> Peer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO])
        .args(["--listen-ng", &format!("{LO}:{RELAY_NG}")])
        .args(["--listen-sip", &format!("{LO}:{RELAY_SIP}")])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--no-kernel-forwarding"])
        .arg("--sip-state-dir")
        .arg(dir.join("state"));
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    wait_udp_bound(&mut relay, RELAY_SIP, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    relay
}

fn doc(basic: &[&str], activities: &[&str]) -> Option<(Vec<String>, Vec<String>)> {
    Some((
        basic.iter().map(|s| s.to_string()).collect(),
        activities.iter().map(|s| s.to_string()).collect(),
    ))
}

#[test]
fn sipp_presence_scenarios_against_rtpanchor_and_kamailio() {
    let dir = TempDir::new("rtpanchor-presence-kamailio").unwrap();
    let kdir = dir.path().join("kamailio");
    let rdir = dir.path().join("rtpanchor");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::create_dir_all(&rdir).unwrap();

    let mut kam = start_kamailio(&kdir);
    let k = observe(&kdir, KAMAILIO_SIP, "kamailio");
    kam.stop(Duration::from_secs(3));
    let mut relay = start_relay(&rdir);
    let r = observe(&rdir, RELAY_SIP, "rtpanchor");
    relay.stop(Duration::from_secs(3));
    eprintln!("kamailio:  {k:?}\nrtpanchor: {r:?}");

    // The watcher's responses: 489, 200, 200 from both.
    assert_eq!(r.watcher_statuses, vec![489, 200, 200]);
    assert_eq!(k.watcher_statuses, r.watcher_statuses);
    // The publisher's: equal but for the unknown SIP-If-Match (RFC 3903 §6 step 4: 412),
    // which Kamailio 5.6 answers 500 when the AoR has a publication.
    assert_eq!(r.publisher_statuses, vec![200, 200, 412, 489, 200]);
    assert_eq!(k.publisher_statuses, vec![200, 200, 500, 489, 200]);
    // Every 200 to a PUBLISH that keeps a publication carries a new SIP-ETag.
    for o in [&r, &k] {
        assert!(o.etags.len() >= 2 && o.etags[..2].iter().all(Option::is_some));
        assert_ne!(o.etags[0], o.etags[1]);
    }
    // NOTIFYs: the same states and documents, in the same order, except two. Before
    // anything is published, rtpanchor sends a PIDF document saying closed (the
    // registration-derived state: bob has no binding) and Kamailio a NOTIFY without a body;
    // the final `terminated` NOTIFY carries the current document from rtpanchor and no body
    // from Kamailio (a body is optional there). After the removal both say closed.
    let active = "active".to_string();
    assert_eq!(
        r.notifies,
        vec![
            NotifySays {
                state: active.clone(),
                doc: doc(&["closed"], &[])
            },
            NotifySays {
                state: active.clone(),
                doc: doc(&["open"], &["away"])
            },
            NotifySays {
                state: active.clone(),
                doc: doc(&["open"], &["busy"])
            },
            NotifySays {
                state: active.clone(),
                doc: doc(&["closed"], &[])
            },
            NotifySays {
                state: "terminated;reason=timeout".into(),
                doc: doc(&["closed"], &[])
            },
        ]
    );
    assert_eq!(k.notifies.len(), r.notifies.len(), "{:?}", k.notifies);
    for (i, (kn, rn)) in k.notifies.iter().zip(&r.notifies).enumerate() {
        assert_eq!(kn.state, rn.state, "NOTIFY {i}");
        match i {
            0 | 4 => assert_eq!(kn.doc, None, "NOTIFY {i}: {kn:?}"),
            _ => assert_eq!(kn.doc, rn.doc, "NOTIFY {i}"),
        }
    }
}
