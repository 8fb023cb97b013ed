//! The flight recorder (PyTorch's habit for NCCL): the last collectives this rank started, in
//! which group, on how many values, with whom, when, and how long each took — the one still
//! waiting has no duration. When a collective hangs, every rank writes its recorder to
//! `flight-recorder-rank<R>.json` before the job ends, so the files say which rank stopped
//! calling what: a hang becomes an exit with its cause on disk.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One collective or point-to-point call.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Calls made by this rank before it, over every group.
    pub seq: u64,
    /// The group (`world`, `tp`, `cp`, `pp`, `dp`).
    pub group: &'static str,
    /// The operation (`all_reduce_sum`, `receive`, …).
    pub op: &'static str,
    /// f32 values this rank contributes or receives.
    pub values: usize,
    /// The other rank of a send or receive (its number in the group).
    pub peer: Option<usize>,
    /// The tag of a send or receive.
    pub tag: Option<u16>,
    /// Seconds from the recorder's start to the call.
    pub started_s: f64,
    /// Seconds the call took; `None` while it waits.
    pub took_s: Option<f64>,
}

/// The last `capacity` calls of one rank.
#[derive(Debug)]
pub struct Recorder {
    capacity: usize,
    entries: VecDeque<Entry>,
    next_seq: u64,
    epoch: Instant,
}

/// The file a rank's recorder goes to in `dir`.
pub fn dump_path(dir: &Path, world_rank: usize) -> PathBuf {
    dir.join(format!("flight-recorder-rank{world_rank}.json"))
}

impl Recorder {
    /// An empty recorder keeping the last `capacity` calls.
    pub fn new(capacity: usize) -> Recorder {
        Recorder {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
            next_seq: 0,
            epoch: Instant::now(),
        }
    }

    /// Notes the start of a call; returns its sequence number for [`Recorder::finish`].
    pub fn start(
        &mut self,
        group: &'static str,
        op: &'static str,
        values: usize,
        peer: Option<(usize, u16)>,
    ) -> u64 {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            group,
            op,
            values,
            peer: peer.map(|(rank, _)| rank),
            tag: peer.map(|(_, tag)| tag),
            started_s: self.epoch.elapsed().as_secs_f64(),
            took_s: None,
        });
        seq
    }

    /// Notes that call `seq` completed.
    pub fn finish(&mut self, seq: u64) {
        let now = self.epoch.elapsed().as_secs_f64();
        if let Some(entry) = self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            entry.took_s = Some(now - entry.started_s);
        }
    }

    /// The calls kept, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The recorder as the JSON a rank writes: its world rank, why it wrote, and the calls.
    pub fn to_json(&self, world_rank: usize, reason: &str, waited: Duration) -> String {
        let value = serde_json::json!({
            "rank": world_rank,
            "reason": reason,
            "waited_s": waited.as_secs_f64(),
            "calls": self.entries.iter().collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&value).expect("plain values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_calls_and_marks_the_waiting_one() {
        let mut recorder = Recorder::new(3);
        for i in 0..4 {
            let seq = recorder.start("dp", "all_reduce_sum", 10 + i, None);
            recorder.finish(seq);
        }
        let waiting = recorder.start("pp", "receive", 5, Some((1, 9)));
        let calls: Vec<&Entry> = recorder.entries().collect();
        assert_eq!(calls.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(calls[..2].iter().all(|e| e.took_s.is_some()));
        assert_eq!((calls[2].seq, calls[2].took_s), (waiting, None));
        let json: serde_json::Value =
            serde_json::from_str(&recorder.to_json(3, "timeout", Duration::from_secs(2))).unwrap();
        assert_eq!(json["rank"], 3);
        assert_eq!(json["calls"][2]["op"], "receive");
        assert_eq!(json["calls"][2]["peer"], 1);
        assert_eq!(json["calls"][2]["tag"], 9);
        assert!(json["calls"][2]["took_s"].is_null());
    }
}
