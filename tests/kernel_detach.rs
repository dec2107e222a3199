//! Fault injection: an outsider detaches the relay's in-kernel program (its TCX link on lo,
//! with `bpftool link detach`: `tc filter del` does not reach a TCX link) while a call is
//! relayed in the kernel. The packets then reach the worker's sockets again; the worker takes
//! the directions back (counted: `kernel_takebacks`) and relays them in user space, with
//! nothing lost and every packet counted once. Within a few seconds the relay attaches the
//! program again (counted: `kernel_reattached`) and the call goes back to the kernel. Only
//! the link held by this test's relay is detached, so other relays on the machine keep theirs.
//!
//! Ports (block 15500-15999): ng 15650, media 15660-15699.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::calls::call;
use common::kernel::cannot_run;
use common::media::{recv_n, relay, rtp, wait_for};
use common::ng::{client, find_int, int_at, Relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

/// Sends `seqs` (SSRC `ssrc`) from `from` to `to` 50 at a time and checks that `at` gets
/// exactly those, intact.
fn round(from: &UdpSocket, to: SocketAddr, at: &UdpSocket, seqs: &[u16], ssrc: u32, what: &str) {
    let mut have = Vec::new();
    for chunk in seqs.chunks(50) {
        for (k, &q) in chunk.iter().enumerate() {
            from.send_to(&rtp(q, u32::from(q) * 160, ssrc, &[q as u8; 160]), to)
                .unwrap();
            if k % 10 == 9 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for (p, _) in recv_n(at, chunk.len(), Duration::from_secs(3)) {
            assert_eq!(p.len(), 172, "{what}: size kept");
            have.push(u16::from_be_bytes([p[2], p[3]]));
        }
    }
    have.sort_unstable();
    assert_eq!(have, seqs, "{what}");
}

fn stats(c: &mut NgClient) -> (i64, i64, i64, i64) {
    let r = c.command("statistics").unwrap();
    (
        find_int(&r, "kernel_streams").unwrap_or(-1),
        find_int(&r, "kernel_forwarded").unwrap_or(-1),
        find_int(&r, "kernel_takebacks").unwrap_or(-1),
        find_int(&r, "kernel_reattached").unwrap_or(-1),
    )
}

/// The ids of the BPF links process `pid` holds, from its descriptors' `fdinfo` (a link's
/// has a `link_id:` line).
fn links_of(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

#[test]
fn the_kernel_program_detached_by_an_outsider_falls_back_to_user_space_and_is_attached_again() {
    let ng = relay(15650);
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", "127.0.0.1", "--listen-ng", &ng.to_string()])
        .args(["--port-min", "15660", "--port-max", "15699", "--no-sip"])
        .args(["--num-threads", "1", "--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let pid = child.id();
    let _relay = Relay::new(child, ng);
    let mut c = client(ng);
    c.wait_ready(Duration::from_secs(10)).expect("relay ready");
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let (to_a, to_b) = call(&mut c, "detach-1", &a, &b);
    let first: Vec<u16> = (1..=60).collect();
    round(&a, to_a, &b, &first, 0xa, "A->B before");
    round(&b, to_b, &a, &first, 0xb, "B->A before");
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    assert!(
        wait_for(Duration::from_secs(5), || stats(&mut c).0 == 2),
        "the call did not go to the kernel: {:?}",
        stats(&mut c)
    );
    let second: Vec<u16> = (61..=160).collect();
    round(&a, to_a, &b, &second, 0xa, "A->B in the kernel");
    round(&b, to_b, &a, &second, 0xb, "B->A in the kernel");
    // The kernel's counts are folded into the figures once a second.
    assert!(
        wait_for(Duration::from_secs(3), || stats(&mut c).1 >= 200),
        "the kernel did not relay the second round: {:?}",
        stats(&mut c)
    );
    assert_eq!(stats(&mut c).2, 0, "nothing went back to the worker yet");
    assert_eq!(stats(&mut c).3, 0, "nothing was detached yet");

    // The outsider: detach every link this relay holds.
    let links = links_of(pid);
    assert!(
        !links.is_empty(),
        "no BPF link held by the relay (pid {pid})"
    );
    for id in &links {
        let st = Command::new("bpftool")
            .args(["link", "detach", "id", &id.to_string()])
            .status()
            .expect("bpftool");
        assert!(st.success(), "bpftool link detach id {id}");
    }

    // Every packet still arrives: the worker takes the directions back and relays them.
    let third: Vec<u16> = (161..=360).collect();
    round(&a, to_a, &b, &third, 0xa, "A->B after the detach");
    round(&b, to_b, &a, &third, 0xb, "B->A after the detach");
    assert!(
        wait_for(Duration::from_secs(3), || stats(&mut c).2 >= 2),
        "the worker did not take the directions back: {:?}",
        stats(&mut c)
    );
    // Back to normal: the relay's watch attaches the program again within a few seconds,
    // and the workers hand the directions to the kernel again.
    assert!(
        wait_for(Duration::from_secs(5), || stats(&mut c).3 >= 1),
        "the program was not attached again: {:?}",
        stats(&mut c)
    );
    assert!(
        !links_of(pid).iter().all(|id| links.contains(id)),
        "no new link held by the relay after the re-attach: {:?} (detached: {links:?})",
        links_of(pid)
    );
    let before = stats(&mut c).1;
    let mut next = 361u16;
    let mut back = false;
    // Rounds of 50 per direction until the kernel relays them again (bounded: 20 rounds).
    for _ in 0..20 {
        let seqs: Vec<u16> = (next..next + 50).collect();
        round(&a, to_a, &b, &seqs, 0xa, "A->B after the re-attach");
        round(&b, to_b, &a, &seqs, 0xb, "B->A after the re-attach");
        next += 50;
        if wait_for(Duration::from_millis(1500), || {
            stats(&mut c).1 >= before + 100
        }) {
            back = true;
            break;
        }
    }
    assert!(
        back,
        "the kernel did not take the call back after the re-attach: {:?}",
        stats(&mut c)
    );
    let sent = i64::from(next - 1);
    // Each packet counted once, wherever it was relayed.
    let q = c
        .request(
            &Owned::dict()
                .with("call-id", "detach-1")
                .with("command", "query"),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || {
            let q = c
                .request(
                    &Owned::dict()
                        .with("call-id", "detach-1")
                        .with("command", "query"),
                )
                .unwrap();
            int_at(&q, &["totals", "RTP", "packets"]) == 2 * sent
        }),
        "{q}"
    );
}
