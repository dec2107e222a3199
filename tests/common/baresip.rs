//! baresip (Debian's 1.0) as a real phone in tests: a config directory of its own (`-f`)
//! in the test's temp dir, no sound card (a WAV tone as the source, `aubridge` as the
//! player), IPv4 only (`-4`: its dual-stack DNS socket fails to bind on some hosts),
//! loopback ports from the test's block, one account, commands given with `-e`,
//! and a run length with `-t` (it hangs up and unregisters when that ends).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::peers::{find_program, Peer};

pub fn baresip() -> PathBuf {
    // CI installs baresip (.ci/run); a missing one is a failure, not a skip.
    find_program("baresip").expect("baresip is required")
}

/// One phone's settings.
pub struct Phone<'a> {
    /// Config directory name under the test's temp dir.
    pub name: &'a str,
    /// `sip_listen` (UDP/TCP there; baresip takes TLS on the next port).
    pub sip_port: u16,
    pub rtp_ports: (u16, u16),
    /// The account line (`<sip:user@domain;transport=...>;auth_pass=...;...`).
    pub account: String,
    /// A CA file for verifying the proxy's TLS certificate.
    pub ca: Option<&'a Path>,
}

/// Writes an 8 kHz mono 16-bit WAV tone of `secs` seconds (baresip's aufile source stops
/// at the end of the file, so make it longer than the call).
pub fn write_tone(path: &Path, secs: u32) {
    let rate = 8000u32;
    let n = rate * secs;
    let mut w = Vec::with_capacity(44 + 2 * n as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        // 400 Hz at a quarter of full scale.
        let x = (f64::from(i) * 400.0 * std::f64::consts::TAU / f64::from(rate)).sin();
        w.extend_from_slice(&((x * 8000.0) as i16).to_le_bytes());
    }
    std::fs::write(path, w).expect("writing the tone");
}

impl Phone<'_> {
    /// Writes the config directory under `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let home = dir.join(self.name);
        std::fs::create_dir_all(&home).expect("baresip config dir");
        let tone = dir.join("tone.wav");
        if !tone.exists() {
            write_tone(&tone, 30);
        }
        let mut config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{sip}\n\
             net_interface 127.0.0.1\n\
             rtp_ports {lo}-{hi}\n\
             rtp_stats yes\n\
             audio_source aufile,{tone}\n\
             audio_player aubridge,{name}\n\
             audio_alert aubridge,{name}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module_app account.so\n\
             module_app menu.so\n",
            sip = self.sip_port,
            lo = self.rtp_ports.0,
            hi = self.rtp_ports.1,
            tone = tone.display(),
            name = self.name,
        );
        if let Some(ca) = self.ca {
            config.push_str(&format!("sip_cafile {}\n", ca.display()));
        }
        std::fs::write(home.join("config"), config).expect("baresip config");
        std::fs::write(home.join("accounts"), format!("{}\n", self.account))
            .expect("baresip accounts");
        std::fs::write(home.join("contacts"), "").expect("baresip contacts");
        home
    }

    /// Starts it for `secs` seconds with `commands` (`/dial URI`), SIP trace on, output to
    /// `<name>.log` in `dir`.
    pub fn spawn(&self, dir: &Path, secs: u32, commands: &[&str]) -> Peer {
        let home = self.write(dir);
        let mut cmd = Command::new(baresip());
        cmd.current_dir(dir)
            .arg("-f")
            .arg(&home)
            .args(["-4", "-s", "-t", &secs.to_string()]);
        for c in commands {
            cmd.args(["-e", c]);
        }
        Peer::spawn(self.name, &mut cmd, &dir.join(format!("{}.log", self.name))).expect("baresip")
    }
}
