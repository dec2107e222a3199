//! The call record writer: a thread of its own that drains the manager's bounded record queue
//! and appends one JSON line per call to `--cdr-file` (or stdout for `-`). Reopens the file
//! when asked (SIGHUP, for logrotate's move-then-signal), so the relay never blocks on disk
//! while holding the session lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::session::record::CallRecord;

/// Records queued before the manager starts dropping (and counting) them: at 8,000 call
/// ends a second and ~1 KB a record, a few seconds of a stalled disk.
pub const RECORD_QUEUE: usize = 16_384;

/// How often an idle writer looks at the reopen flag.
const IDLE_CHECK: Duration = Duration::from_millis(200);

enum Sink {
    Stdout,
    File(PathBuf, Option<File>),
}

impl Sink {
    fn open(path: &Path) -> Option<File> {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open call record file");
                None
            }
        }
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()
            }
            Sink::File(path, file) => {
                if file.is_none() {
                    *file = Sink::open(path);
                }
                let Some(f) = file else {
                    return Err(io::Error::other("call record file not open"));
                };
                // One write per line: appends from one writer never interleave.
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                f.write_all(&buf)
            }
        }
    }

    fn reopen(&mut self) {
        if let Sink::File(path, file) = self {
            *file = Sink::open(path);
            tracing::info!(path = %path.display(), "call record file reopened");
        }
    }
}

/// The running writer.
pub struct CdrWriter {
    thread: JoinHandle<()>,
    reopen: Arc<AtomicBool>,
}

impl CdrWriter {
    /// Starts the writer for `target` (`-` = stdout). The file is opened (created, appended
    /// to) before this returns, so a bad path fails at start-up.
    pub fn start(target: &Path) -> io::Result<(SyncSender<CallRecord>, CdrWriter)> {
        let sink = if target == Path::new("-") {
            Sink::Stdout
        } else {
            let f = OpenOptions::new().create(true).append(true).open(target)?;
            Sink::File(target.to_path_buf(), Some(f))
        };
        let (tx, rx) = sync_channel(RECORD_QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let thread = std::thread::Builder::new()
            .name("rtpanchor-cdr".into())
            .spawn(move || run(sink, rx, flag))?;
        Ok((tx, CdrWriter { thread, reopen }))
    }

    /// Asks the writer to reopen its file before the next record.
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// The flag [`Self::request_reopen`] sets, for a signal handler to hold.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    /// Waits (at most `limit`) for the writer to write what is queued; the record senders
    /// must be dropped first.
    pub fn finish(self, limit: Duration) {
        // Bounded by a count of short sleeps (no clock read needed here).
        let step = Duration::from_millis(10);
        let mut left = limit.as_millis() / step.as_millis();
        while !self.thread.is_finished() && left > 0 {
            std::thread::sleep(step);
            left -= 1;
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!("call record writer still busy at exit");
        }
    }
}

fn run(mut sink: Sink, rx: Receiver<CallRecord>, reopen: Arc<AtomicBool>) {
    let mut failed: u64 = 0;
    loop {
        if reopen.swap(false, Ordering::Relaxed) {
            sink.reopen();
        }
        match rx.recv_timeout(IDLE_CHECK) {
            Ok(record) => {
                if let Err(e) = sink.write_line(&record.to_json_line()) {
                    failed += 1;
                    if failed.is_power_of_two() {
                        tracing::warn!(error = %e, failed, "call record not written");
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use std::time::Instant;

    #[test]
    fn writes_lines_and_reopens_after_a_move() {
        let dir = std::env::temp_dir().join(format!("rtpanchor-cdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdr.json");
        let (tx, w) = CdrWriter::start(&path).unwrap();
        let rec = |id: &str| CallRecord {
            call_id: id.into(),
            ..CallRecord::default()
        };
        tx.send(rec("one")).unwrap();
        let wait = |p: &Path, lines: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                if text.lines().count() >= lines || Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert!(wait(&path, 1).contains("\"call_id\":\"one\""));
        // logrotate: move the file away, then signal.
        let moved = dir.join("cdr.json.1");
        std::fs::rename(&path, &moved).unwrap();
        w.request_reopen();
        std::thread::sleep(IDLE_CHECK * 2);
        tx.send(rec("two")).unwrap();
        let fresh = wait(&path, 1);
        assert!(
            fresh.contains("\"two\"") && !fresh.contains("\"one\""),
            "{fresh}"
        );
        assert_eq!(std::fs::read_to_string(&moved).unwrap().lines().count(), 1);
        drop(tx);
        w.finish(Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_bad_path_fails_at_start() {
        assert!(CdrWriter::start(Path::new("/nonexistent-dir/x/cdr.json")).is_err());
    }
}
