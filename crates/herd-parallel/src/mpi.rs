//! [`Collectives`] over MPI (rsmpi on the system's Open MPI): the world of an `mpirun` job and
//! the layout's groups split from it. One process, one rank; `mpirun -n N herd …` starts N.
//!
//! MPI's errors are fatal by default (the job aborts with MPI's message), so what can be checked
//! before a call — lengths, peers — is checked here and returned as an error instead. Every call
//! is started non-blocking and polled under a [`Watchdog`]: one that does not complete in time
//! writes this rank's flight recorder and aborts the job, and the other ranks, ended by
//! `mpirun` while they wait, write theirs — so a lost rank or a mismatched call ends the job
//! with a record of where each rank stood instead of hanging it.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::mpi::collective::SystemOperation;
use ::mpi::environment::Universe;
use ::mpi::point_to_point::Status;
use ::mpi::request::{Request, Scope, StaticScope};
use ::mpi::topology::{Color, SimpleCommunicator};
use ::mpi::traits::*;

use crate::collectives::{check_lengths, Collectives};
use crate::error::{Error, Result};
use crate::layout::{Dim, Layout};
use crate::recorder::{dump_path, Recorder};

/// How long a collective may wait before the job is ended, and where each rank's flight
/// recorder goes then.
#[derive(Debug, Clone)]
pub struct Watchdog {
    /// The longest wait for one collective or message.
    pub timeout: Duration,
    /// The folder of the `flight-recorder-rank<R>.json` files.
    pub dump_dir: PathBuf,
}

/// Calls each rank's recorder keeps.
const RECORDER_CALLS: usize = 256;

/// The exit code of a rank whose collective timed out (it aborts the job with it).
pub const TIMEOUT_EXIT: i32 = 124;

/// The exit code of a rank ended while it waited (SIGTERM's 128 + 15).
pub const TERMINATED_EXIT: i32 = 143;

/// Set by SIGTERM, which `mpirun` sends to every rank once one has failed: a rank waiting in a
/// collective sees it, writes its recorder and exits.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_termination(_signal: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// What every group of a rank shares: the watchdog, the recorder, the rank's world number.
struct Shared {
    watchdog: Watchdog,
    recorder: RefCell<Recorder>,
    world_rank: usize,
}

/// The MPI environment of this process: initialised by [`MpiWorld::init`], finalised when
/// dropped (after every group made from it, which borrow it).
pub struct MpiWorld {
    shared: Rc<Shared>,
    universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI under `watchdog`. A process initialises it once: a second call is an
    /// error.
    pub fn init(watchdog: Watchdog) -> Result<MpiWorld> {
        let universe = ::mpi::initialize().ok_or_else(|| Error::Collective {
            op: "init",
            message: "MPI was already initialised in this process".into(),
        })?;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                note_termination as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        let world_rank = universe.world().rank() as usize;
        Ok(MpiWorld {
            shared: Rc::new(Shared {
                watchdog,
                recorder: RefCell::new(Recorder::new(RECORDER_CALLS)),
                world_rank,
            }),
            universe,
        })
    }

    /// Every rank of the job.
    pub fn world(&self) -> MpiGroup<'_> {
        MpiGroup {
            comm: self.universe.world(),
            name: "world",
            shared: self.shared.clone(),
            posted: RefCell::new(Vec::new()),
            _universe: PhantomData,
        }
    }
}

/// A group of ranks with its own MPI communicator; ranks are numbered within it. Every call
/// waits at most the watchdog's timeout.
pub struct MpiGroup<'u> {
    comm: SimpleCommunicator,
    name: &'static str,
    shared: Rc<Shared>,
    /// Sends posted and not yet waited for ([`Collectives::post_send`]).
    posted: RefCell<Vec<PostedSend>>,
    _universe: PhantomData<&'u Universe>,
}

/// A posted send: its request, the values it sends (owned until it completes) and its
/// recorder entry.
struct PostedSend {
    request: Request<'static, [f32], StaticScope>,
    values: *mut [f32],
    seq: u64,
}

impl Drop for MpiGroup<'_> {
    /// Sends still pending when a group ends (a run that stopped on an error mid-step) are left
    /// to MPI, their values leaked: completing them could wait forever on a peer that is gone.
    fn drop(&mut self) {
        for send in self.posted.get_mut().drain(..) {
            std::mem::forget(send.request);
        }
    }
}

impl<'u> MpiGroup<'u> {
    /// This rank's group in `dim` of `layout`, whose ranks are this group's. Every rank of this
    /// group calls it together (it is a collective); the new group numbers its ranks by their
    /// coordinate in `dim`, as [`Layout::group`] lists them.
    pub fn split(&self, layout: &Layout, dim: Dim) -> Result<MpiGroup<'u>> {
        self.split_over(layout, &[dim], dim.key())
    }

    /// This rank's group over several dimensions of `layout` ([`Layout::group_over`]), named
    /// `name` in flight recorders; a collective like [`MpiGroup::split`].
    pub fn split_over(
        &self,
        layout: &Layout,
        dims: &[Dim],
        name: &'static str,
    ) -> Result<MpiGroup<'u>> {
        if layout.world_size() != self.size() {
            return Err(Error::Layout(format!(
                "the layout has {} ranks, the group {}",
                layout.world_size(),
                self.size()
            )));
        }
        let rank = self.rank();
        let members = layout.group_over(rank, dims);
        let key = members.iter().position(|&r| r == rank).expect("a member");
        let color = Color::with_value(layout.group_id_over(rank, dims) as i32);
        let comm = self
            .comm
            .split_by_color_with_key(color, key as i32)
            .expect("every rank gives a colour, so every rank gets a group");
        Ok(MpiGroup {
            comm,
            name,
            shared: self.shared.clone(),
            posted: RefCell::new(Vec::new()),
            _universe: PhantomData,
        })
    }

    fn start(&self, op: &'static str, values: usize, peer: Option<(usize, u16)>) -> u64 {
        self.shared
            .recorder
            .borrow_mut()
            .start(self.name, op, values, peer)
    }

    /// Polls `request` until it completes; past the watchdog's timeout, or when `mpirun` ends
    /// the job meanwhile, the recorder is written and the process ends instead.
    fn complete<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        mut request: Request<'a, D, S>,
        seq: u64,
    ) -> Status {
        let started = Instant::now();
        let mut polls = 0u32;
        let status = loop {
            match request.test() {
                Ok(status) => break status,
                Err(pending) => request = pending,
            }
            if TERMINATED.load(Ordering::SeqCst) {
                self.dump(
                    "ended by mpirun while waiting (another rank failed)",
                    started,
                );
                // SAFETY: _exit ends the process at once; nothing of it runs afterwards.
                unsafe { libc::_exit(TERMINATED_EXIT) };
            }
            if started.elapsed() >= self.shared.watchdog.timeout {
                let path = self.dump("timeout", started);
                eprintln!(
                    "rank {}: a collective in group {} did not complete within {:?}; its flight \
                     recorder is {}; ending the job",
                    self.shared.world_rank,
                    self.name,
                    self.shared.watchdog.timeout,
                    path.display()
                );
                self.comm.abort(TIMEOUT_EXIT);
            }
            // Spin briefly for the fast case, then sleep so a waiting rank leaves its core to
            // the others (ranks share cores when oversubscribed).
            polls += 1;
            if polls < 1_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        };
        self.shared.recorder.borrow_mut().finish(seq);
        status
    }

    /// Writes the recorder; returns its path.
    fn dump(&self, reason: &str, started: Instant) -> PathBuf {
        let shared = &self.shared;
        let path = dump_path(&shared.watchdog.dump_dir, shared.world_rank);
        let json = shared
            .recorder
            .borrow()
            .to_json(shared.world_rank, reason, started.elapsed());
        if let Err(e) = herd_util::fs::write_atomic(&path, json.as_bytes()) {
            eprintln!("rank {}: {e}", shared.world_rank);
        }
        path
    }

    fn peer(&self, op: &'static str, peer: usize) -> Result<i32> {
        if peer >= self.size() {
            return Err(Error::Collective {
                op,
                message: format!("rank {peer} is not in a group of {}", self.size()),
            });
        }
        Ok(peer as i32)
    }
}

impl Collectives for MpiGroup<'_> {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        // rsmpi has no MPI_IN_PLACE: the sum is written over a copy of the input.
        let input = buf.to_vec();
        let seq = self.start("all_reduce_sum", buf.len(), None);
        ::mpi::request::scope(|scope| {
            let request =
                self.comm
                    .immediate_all_reduce_into(scope, &input[..], buf, SystemOperation::sum());
            self.complete(request, seq);
        });
        Ok(())
    }

    fn reduce_scatter_sum(&self, input: &[f32], shard: &mut [f32]) -> Result<()> {
        check_lengths("reduce_scatter_sum", input.len(), shard.len(), self.size())?;
        let seq = self.start("reduce_scatter_sum", input.len(), None);
        ::mpi::request::scope(|scope| {
            let request = self.comm.immediate_reduce_scatter_block_into(
                scope,
                input,
                shard,
                SystemOperation::sum(),
            );
            self.complete(request, seq);
        });
        Ok(())
    }

    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        check_lengths("all_gather", out.len(), shard.len(), self.size())?;
        let seq = self.start("all_gather", out.len(), None);
        ::mpi::request::scope(|scope| {
            let request = self.comm.immediate_all_gather_into(scope, shard, out);
            self.complete(request, seq);
        });
        Ok(())
    }

    fn send(&self, to: usize, buf: &[f32], tag: u16) -> Result<()> {
        let rank = self.peer("send", to)?;
        let seq = self.start("send", buf.len(), Some((to, tag)));
        ::mpi::request::scope(|scope| {
            let request =
                self.comm
                    .process_at_rank(rank)
                    .immediate_send_with_tag(scope, buf, i32::from(tag));
            self.complete(request, seq);
        });
        Ok(())
    }

    fn receive(&self, from: usize, buf: &mut [f32], tag: u16) -> Result<()> {
        let rank = self.peer("receive", from)?;
        let expected = buf.len();
        let seq = self.start("receive", expected, Some((from, tag)));
        let status = ::mpi::request::scope(|scope| {
            let request = self
                .comm
                .process_at_rank(rank)
                .immediate_receive_into_with_tag(scope, buf, i32::from(tag));
            self.complete(request, seq)
        });
        let got = status.count(f32::equivalent_datatype()) as usize;
        if got != expected {
            return Err(Error::Collective {
                op: "receive",
                message: format!(
                    "rank {from} sent {got} values with tag {tag}, {expected} were expected"
                ),
            });
        }
        Ok(())
    }

    fn post_send(&self, to: usize, buf: Vec<f32>, tag: u16) -> Result<()> {
        let rank = self.peer("post_send", to)?;
        let seq = self.start("send", buf.len(), Some((to, tag)));
        let values = Box::into_raw(buf.into_boxed_slice());
        // SAFETY: the values stay allocated until the send completes (`wait_sends` frees them
        // after its request completes; a group dropped with sends pending leaks them).
        let static_values: &'static [f32] = unsafe { &*values };
        let request = self.comm.process_at_rank(rank).immediate_send_with_tag(
            StaticScope,
            static_values,
            i32::from(tag),
        );
        self.posted.borrow_mut().push(PostedSend {
            request,
            values,
            seq,
        });
        Ok(())
    }

    fn wait_sends(&self) -> Result<()> {
        let posted = std::mem::take(&mut *self.posted.borrow_mut());
        for send in posted {
            self.complete(send.request, send.seq);
            // SAFETY: made by `Box::into_raw` in `post_send`; its send has completed.
            drop(unsafe { Box::from_raw(send.values) });
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let seq = self.start("barrier", 0, None);
        let request = self.comm.immediate_barrier();
        self.complete(request, seq);
        Ok(())
    }
}
