//! Plain blocking syscalls on the calling thread: pread for read_at; send/recv of both ends of a
//! socket pair in turn for ping-pong and streaming (the data is always there, so nothing ever
//! sleeps: this is the syscall cost alone).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::hist::Hist;
use super::{leak_aligned, tcp_pair, timed, unix_pair, Bench, Env, Rng, Sample, Workload};
use super::{BLOCK, MSG, PING};

pub struct Blocking {
    workload: Workload,
    fds: Vec<OwnedFd>,
    buf: &'static mut [u8],
    blocks: u64,
    seed: u64,
}

impl Blocking {
    pub fn new(workload: Workload, env: &Env) -> Blocking {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let len = match workload {
            Workload::ReadAt { direct, .. } => {
                fds.push(env.open(direct).into());
                BLOCK
            }
            Workload::PingPong { tcp: true } | Workload::Stream => {
                let (a, b) = tcp_pair();
                fds.push(a.into());
                fds.push(b.into());
                if workload == Workload::Stream {
                    MSG
                } else {
                    PING
                }
            }
            Workload::PingPong { tcp: false } => {
                let (a, b) = unix_pair();
                fds.push(a.into());
                fds.push(b.into());
                PING
            }
            Workload::Nop { .. } => 0,
        };
        Blocking {
            workload,
            fds,
            buf: leak_aligned(len),
            blocks: env.blocks(),
            seed: 11,
        }
    }
}

fn send_all(fd: RawFd, buf: &[u8]) {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: sends from a valid slice.
        let n = unsafe {
            libc::send(
                fd,
                buf[at..].as_ptr().cast(),
                buf.len() - at,
                libc::MSG_NOSIGNAL,
            )
        };
        assert!(n > 0, "send: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
}

fn recv_all(fd: RawFd, buf: &mut [u8]) {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: receives into a valid, writable slice.
        let n = unsafe {
            libc::recv(
                fd,
                buf[at..].as_mut_ptr().cast(),
                buf.len() - at,
                libc::MSG_WAITALL,
            )
        };
        assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
}

impl Bench for Blocking {
    fn run(&mut self, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let mut rng = Rng::new(self.seed);
        self.seed += 1000;
        let blocks = self.blocks;
        let fds: Vec<RawFd> = self.fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let buf = &mut *self.buf;
        let workload = self.workload;
        let ((), elapsed, alloc) = timed(|| match workload {
            Workload::ReadAt { .. } => {
                for _ in 0..ops {
                    let start = Instant::now();
                    let offset = rng.offset(blocks);
                    // SAFETY: reads into a valid, writable, 4096-aligned buffer of BLOCK bytes.
                    let n = unsafe {
                        libc::pread(
                            fds[0],
                            buf.as_mut_ptr().cast(),
                            BLOCK,
                            offset as libc::off_t,
                        )
                    };
                    assert_eq!(n, BLOCK as isize, "pread");
                    hist.record(start.elapsed());
                }
            }
            Workload::PingPong { .. } => {
                for _ in 0..ops {
                    let start = Instant::now();
                    send_all(fds[0], buf);
                    recv_all(fds[1], buf);
                    send_all(fds[1], buf);
                    recv_all(fds[0], buf);
                    hist.record(start.elapsed());
                }
            }
            Workload::Stream => {
                for _ in 0..ops {
                    send_all(fds[0], buf);
                    recv_all(fds[1], buf);
                }
            }
            Workload::Nop { .. } => unreachable!("no blocking nop"),
        });
        Sample::new(ops, elapsed, alloc, hist)
    }
}
