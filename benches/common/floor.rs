//! The floor: the same ring calls through the io-uring crate on the calling thread, with no loop,
//! no hand-off and no bookkeeping beyond an index per request. Every workload is driven by one
//! thread that pushes SQEs and waits in `io_uring_enter` for at least one completion.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

use super::hist::Hist;
use super::{leak_aligned, tcp_pair, timed, unix_pair, Bench, Env, Rng, Sample, Workload};
use super::{BLOCK, MSG, PING};

pub struct Floor {
    ring: IoUring,
    workload: Workload,
    /// Kept open for the SQEs that name them.
    fds: Vec<OwnedFd>,
    bufs: Vec<&'static mut [u8]>,
    starts: Vec<Instant>,
    blocks: u64,
    seed: u64,
    /// SQEs pushed whose CQE has not been reaped.
    outstanding: usize,
}

impl Floor {
    pub fn new(workload: Workload, env: &Env) -> Floor {
        let mut floor = Floor {
            ring: IoUring::new(256).expect("ring"),
            workload,
            fds: Vec::new(),
            bufs: Vec::new(),
            starts: vec![Instant::now(); 64],
            blocks: env.blocks(),
            seed: 7,
            outstanding: 0,
        };
        match workload {
            Workload::Nop { .. } => {}
            Workload::ReadAt { depth, direct } => {
                floor.fds.push(env.open(direct).into());
                floor.bufs = (0..depth).map(|_| leak_aligned(BLOCK)).collect();
            }
            Workload::PingPong { tcp } => {
                floor.sockets(tcp);
                floor.bufs = (0..4).map(|_| leak_aligned(PING)).collect();
            }
            Workload::Stream => {
                floor.sockets(true);
                floor.bufs = (0..2).map(|_| leak_aligned(MSG)).collect();
            }
        }
        floor
    }

    fn sockets(&mut self, tcp: bool) {
        if tcp {
            let (a, b) = tcp_pair();
            self.fds.push(a.into());
            self.fds.push(b.into());
        } else {
            let (a, b) = unix_pair();
            self.fds.push(a.into());
            self.fds.push(b.into());
        }
    }

    fn raw(&self, i: usize) -> RawFd {
        self.fds[i].as_raw_fd()
    }

    /// Pushes one SQE (the SQ has room: at most 64 + 2 are ever queued in 256 entries).
    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: every buffer and descriptor an SQE names lives in `self` (buffers are leaked
        // for the process) until its CQE is reaped by the same run.
        unsafe { self.ring.submission().push(sqe).expect("SQ room") };
        self.outstanding += 1;
    }

    /// The next CQE's `(user_data, result)`, if one is ready.
    fn reap(&mut self) -> Option<(u64, i32)> {
        let cqe = self.ring.completion().next()?;
        self.outstanding -= 1;
        Some((cqe.user_data(), cqe.result()))
    }

    /// Submits what is queued and waits for at least one completion.
    fn enter(&mut self) {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
        }
    }

    /// `depth` independent requests kept in flight (nop or read_at).
    fn pipelined(&mut self, ops: u64, depth: usize, hist: &mut Hist) {
        let mut rng = Rng::new(self.seed);
        self.seed += 1000;
        let read = matches!(self.workload, Workload::ReadAt { .. });
        let blocks = self.blocks;
        let fd = if read { self.raw(0) } else { -1 };
        let sqe = |floor: &mut Floor, i: usize, rng: &mut Rng| {
            if read {
                let buf = &mut floor.bufs[i];
                opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), BLOCK as u32)
                    .offset(rng.offset(blocks))
                    .build()
                    .user_data(i as u64)
            } else {
                opcode::Nop::new().build().user_data(i as u64)
            }
        };
        let mut issued = 0;
        let mut done = 0;
        let now = Instant::now();
        for i in 0..depth.min(ops as usize) {
            self.starts[i] = now;
            let entry = sqe(self, i, &mut rng);
            self.push(&entry);
            issued += 1;
        }
        let want = if read { BLOCK as i32 } else { 0 };
        while done < ops {
            self.enter();
            let now = Instant::now();
            while let Some((user_data, result)) = self.reap() {
                let i = user_data as usize;
                assert_eq!(result, want, "floor op failed");
                hist.record(now - self.starts[i]);
                done += 1;
                if issued < ops {
                    self.starts[i] = now;
                    let entry = sqe(self, i, &mut rng);
                    self.push(&entry);
                    issued += 1;
                }
            }
        }
    }

    /// Both ends on this ring: 0 = send on A, 1 = recv on B, 2 = send on B, 3 = recv on A.
    fn pingpong(&mut self, ops: u64, hist: &mut Hist) {
        let (a, b) = (self.raw(0), self.raw(1));
        let send = |fd: RawFd, buf: &[u8], ud: u64| {
            opcode::Send::new(types::Fd(fd), buf.as_ptr(), PING as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
                .build()
                .user_data(ud)
        };
        let recv = |fd: RawFd, buf: &mut [u8], ud: u64| {
            opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), PING as u32)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(ud)
        };
        let mut start = Instant::now();
        let mut done = 0;
        // Each send goes before the receive it feeds: a receive whose data is already there
        // completes at once, one that comes first arms a poll and waits for task work.
        let entry = send(a, self.bufs[0], 0);
        self.push(&entry);
        let entry = recv(b, self.bufs[1], 1);
        self.push(&entry);
        while done < ops {
            self.enter();
            while let Some((user_data, result)) = self.reap() {
                assert_eq!(result, PING as i32, "floor ping-pong op failed");
                match user_data {
                    1 => {
                        let entry = send(b, self.bufs[2], 2);
                        self.push(&entry);
                        let entry = recv(a, self.bufs[3], 3);
                        self.push(&entry);
                    }
                    3 => {
                        hist.record(start.elapsed());
                        done += 1;
                        if done < ops {
                            start = Instant::now();
                            let entry = send(a, self.bufs[0], 0);
                            self.push(&entry);
                            let entry = recv(b, self.bufs[1], 1);
                            self.push(&entry);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// One send (A) and one recv (B) of 16 KiB in flight; an op is a message received.
    fn stream(&mut self, ops: u64) {
        let (a, b) = (self.raw(0), self.raw(1));
        let send = |buf: &[u8]| {
            opcode::Send::new(types::Fd(a), buf.as_ptr(), MSG as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
                .build()
                .user_data(0)
        };
        let recv = |buf: &mut [u8]| {
            opcode::Recv::new(types::Fd(b), buf.as_mut_ptr(), MSG as u32)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(1)
        };
        let (mut sent, mut received) = (1, 0);
        let entry = send(self.bufs[0]);
        self.push(&entry);
        let entry = recv(self.bufs[1]);
        self.push(&entry);
        while received < ops {
            self.enter();
            while let Some((user_data, result)) = self.reap() {
                assert_eq!(result, MSG as i32, "floor stream op failed");
                if user_data == 0 {
                    if sent < ops {
                        sent += 1;
                        let entry = send(self.bufs[0]);
                        self.push(&entry);
                    }
                } else {
                    received += 1;
                    if received < ops {
                        let entry = recv(self.bufs[1]);
                        self.push(&entry);
                    }
                }
            }
        }
    }
}

impl Bench for Floor {
    fn run(&mut self, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let workload = self.workload;
        let ((), elapsed, alloc) = timed(|| match workload {
            Workload::Nop { depth, .. } | Workload::ReadAt { depth, .. } => {
                self.pipelined(ops, depth, &mut hist)
            }
            Workload::PingPong { .. } => self.pingpong(ops, &mut hist),
            Workload::Stream => self.stream(ops),
        });
        // A send's CQE can trail the recv that ended the run: collect it, untimed.
        while self.outstanding > 0 {
            self.enter();
            while let Some((_, result)) = self.reap() {
                assert!(result >= 0, "floor op failed");
            }
        }
        Sample::new(ops, elapsed, alloc, hist)
    }
}
