//! Vectored I/O against the default path, and `sync_data` against `sync` (see `paired.rs`).
//!
//! One op is one logical message: two parts, sent or written as one copy, as one vectored
//! request, or as two requests. The caller runs one task on the benchmark's executor (the
//! default spin), so a message is one request outstanding (two for two `write_at`s, which go
//! out together, and with the socket's `recv`, which runs beside the sends).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use static_uring::{Config, Fd, IoBuf, IoBufMut, IoBufs};

use super::hist::Hist;
use super::paired::{filesystem, Counters, Group, WRITE_PART};
// Polls its first future before its second, so the first is submitted first.
use super::su::{SuIo, H};
use super::tasks::Started;
use super::{default_spin, exec, timed, unix_pair, Env, Rng, Sample, BLOCK};
use futures::future::join as join2;

/// Variant 0: the parts copied into one buffer, one request.
const COPY: usize = 0;
/// Variant 1: one vectored request of the parts.
const VECTORED: usize = 1;
/// Variant 2: one request per part.
const TWO: usize = 2;

/// Size of the vectored write row's file (in the page cache).
const WRITE_FILE_LEN: u64 = 4 << 20;
/// Size of the sync row's file (block 0 is rewritten).
const SYNC_FILE_LEN: u64 = 64 << 10;

/// A loop with the default config on its own thread.
fn start() -> Result<(Started<SuIo>, Duration), String> {
    let spin = default_spin();
    let config = Config {
        idle_spin: spin,
        ..Config::default()
    };
    let (handle, event_loop) =
        static_uring::new::<256, 128, 1024>(config).map_err(|e| format!("new failed: {e}"))?;
    exec::prepare();
    Ok((SuIo::spawn(handle, event_loop)?, spin))
}

/// Two owned parts of `len` bytes each, filled with distinct bytes.
fn parts(len: usize) -> IoBufs {
    (0..2u8).map(|i| IoBuf::from(vec![0xa0 + i; len])).collect()
}

/// The parts, in order, as one buffer (for checks).
fn concat(parts: &IoBufs) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// Copies the parts into `joined` (what a caller without vectored I/O does).
#[inline]
fn copy_into(joined: &mut IoBufMut, parts: &IoBufs) {
    joined.clear();
    for part in parts {
        let fits = joined.extend_from_slice(part);
        debug_assert!(fits);
    }
}

/// Runs `task` to completion on the benchmark's executor, timed.
fn run_timed<F: std::future::Future<Output = ()>>(
    task: F,
    spin: Duration,
) -> (Duration, super::alloc::AllocCount) {
    let tasks = pin!([task]);
    let ((), elapsed, alloc) = timed(|| exec::run(tasks, spin));
    (elapsed, alloc)
}

/// A file in the read_at file's directory, `len` bytes written and synced, open for writing.
fn scratch_file(env: &Env, name: &str, len: u64) -> Result<(PathBuf, std::fs::File), String> {
    let dir = env
        .path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let chunk = vec![0x5au8; 1 << 16];
    let mut at = 0;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        file.write_all_at(&chunk[..n], at)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        at += n as u64;
    }
    file.sync_all()
        .map_err(|e| format!("sync {}: {e}", path.display()))?;
    Ok((path, file))
}

// ---------------------------------------------------------------------------------------------
// send_vectored

/// The vectored send rows: a message of two parts from one end of a Unix socket pair, received
/// whole (`recv` with `exact`) on the other.
struct SendGroup {
    io: SuIo,
    /// Sending and receiving ends.
    a: Fd,
    b: Fd,
    parts: IoBufs,
    /// The contiguous buffer the copy variant fills.
    joined: Option<IoBufMut>,
    rbuf: Option<IoBufMut>,
    spin: Duration,
    /// Stops the loop thread; dropped last.
    _guard: Box<dyn Send>,
}

pub fn send(part: usize) -> Result<Box<dyn Group>, String> {
    let (Started { io, guard }, spin) = start()?;
    let (a, b) = unix_pair();
    let mut group = SendGroup {
        a: Fd::from(Arc::new(a)),
        b: Fd::from(Arc::new(b)),
        parts: parts(part),
        joined: Some(IoBufMut::with_capacity(2 * part)),
        rbuf: Some(IoBufMut::with_capacity(2 * part)),
        io,
        spin,
        _guard: guard,
    };
    let want = concat(&group.parts);
    for variant in [COPY, VECTORED, TWO] {
        group.rbuf.as_mut().unwrap().clear();
        group.run(variant, 2);
        if group.rbuf.as_deref() != Some(&want[..]) {
            return Err(format!("variant {variant}: the received bytes differ"));
        }
    }
    Ok(Box::new(group))
}

async fn send_task(
    h: &H,
    a: &Fd,
    b: &Fd,
    group: &mut (IoBufs, Option<IoBufMut>, Option<IoBufMut>),
    variant: usize,
    ops: u64,
    hist: &mut Hist,
) {
    let (parts, joined, rbuf) = group;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    for _ in 0..ops {
        let start = Instant::now();
        let recv = h.recv(b, rbuf.take().expect("buffer")).exact(total);
        let got = match variant {
            COPY => {
                let mut buf = joined.take().expect("buffer");
                copy_into(&mut buf, parts);
                let (sent, got) = join2(h.send(a, IoBuf::from(buf)), recv).await;
                let sent = sent.map_err(|e| e.error).expect("send");
                *joined = Some(sent.into_mut().expect("an owned buffer"));
                got
            }
            VECTORED => {
                let bufs = std::mem::take(parts);
                let (sent, got) = join2(h.send_vectored(a, bufs), recv).await;
                *parts = sent.map_err(|e| e.error).expect("send_vectored");
                got
            }
            _ => {
                // The second send goes out when the first is done: two sends outstanding on one
                // stream could be reordered by a short send's resubmission.
                let body = parts.pop().expect("two parts");
                let head = parts.pop().expect("two parts");
                let sends = async {
                    let head = h.send(a, head).await;
                    let body = h.send(a, body).await;
                    (head, body)
                };
                let ((head, body), got) = join2(sends, recv).await;
                parts.push(head.map_err(|e| e.error).expect("send"));
                parts.push(body.map_err(|e| e.error).expect("send"));
                got
            }
        };
        let (buf, filled) = got.map_err(|e| e.error).expect("recv");
        debug_assert_eq!(filled, total);
        *rbuf = Some(buf);
        hist.record(start.elapsed());
    }
}

impl Group for SendGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let h = &self.io.0;
        let mut state = (
            std::mem::take(&mut self.parts),
            self.joined.take(),
            self.rbuf.take(),
        );
        let before = Counters::now(h.metrics());
        let (elapsed, alloc) = run_timed(
            send_task(h, &self.a, &self.b, &mut state, variant, ops, &mut hist),
            self.spin,
        );
        let after = Counters::now(h.metrics());
        (self.parts, self.joined, self.rbuf) = state;
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        before.report(after, &mut sample);
        sample
    }
}

// ---------------------------------------------------------------------------------------------
// write_at_vectored

/// The vectored write rows: two 2 KiB parts at a random 4 KiB block of a 4 MiB file.
struct WriteGroup {
    io: SuIo,
    fd: Fd,
    file: std::fs::File,
    fs: String,
    parts: IoBufs,
    joined: Option<IoBufMut>,
    rng: Rng,
    spin: Duration,
    _guard: Box<dyn Send>,
}

pub fn write(env: &Env) -> Result<Box<dyn Group>, String> {
    let (path, file) = scratch_file(env, "write-4m.dat", WRITE_FILE_LEN)?;
    let (Started { io, guard }, spin) = start()?;
    let fd = Fd::from(file.try_clone().map_err(|e| format!("dup: {e}"))?);
    let mut group = WriteGroup {
        io,
        fd,
        file,
        fs: filesystem(&path),
        parts: parts(WRITE_PART),
        joined: Some(IoBufMut::with_capacity(2 * WRITE_PART)),
        rng: Rng::new(7),
        spin,
        _guard: guard,
    };
    for variant in [COPY, VECTORED, TWO] {
        // One op, at the block the generator names next: zeroed first, the message after.
        let mut probe = group.rng;
        let block = probe.offset(WRITE_FILE_LEN / BLOCK as u64);
        group.file.write_all_at(&[0; BLOCK], block).unwrap();
        group.run(variant, 1);
        let mut got = vec![0u8; BLOCK];
        group.file.read_exact_at(&mut got, block).unwrap();
        if got != concat(&group.parts) {
            return Err(format!("variant {variant}: the file holds other bytes"));
        }
    }
    Ok(Box::new(group))
}

async fn write_task(
    h: &H,
    fd: &Fd,
    state: &mut (IoBufs, Option<IoBufMut>, Rng),
    variant: usize,
    ops: u64,
    hist: &mut Hist,
) {
    let (parts, joined, rng) = state;
    let blocks = WRITE_FILE_LEN / BLOCK as u64;
    for _ in 0..ops {
        let at = rng.offset(blocks);
        let start = Instant::now();
        match variant {
            COPY => {
                let mut buf = joined.take().expect("buffer");
                copy_into(&mut buf, parts);
                let done = h.write_at(fd, at, IoBuf::from(buf)).await;
                let done = done.map_err(|e| e.error).expect("write_at");
                *joined = Some(done.into_mut().expect("an owned buffer"));
            }
            VECTORED => {
                let bufs = std::mem::take(parts);
                let done = h.write_at_vectored(fd, at, bufs).await;
                *parts = done.map_err(|e| e.error).expect("write_at_vectored");
            }
            _ => {
                // Two writes to disjoint ranges: both outstanding at once.
                let body = parts.pop().expect("two parts");
                let head = parts.pop().expect("two parts");
                let (head, body) = join2(
                    h.write_at(fd, at, head),
                    h.write_at(fd, at + WRITE_PART as u64, body),
                )
                .await;
                parts.push(head.map_err(|e| e.error).expect("write_at"));
                parts.push(body.map_err(|e| e.error).expect("write_at"));
            }
        }
        hist.record(start.elapsed());
    }
}

impl Group for WriteGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let h = &self.io.0;
        let mut state = (
            std::mem::take(&mut self.parts),
            self.joined.take(),
            self.rng,
        );
        let before = Counters::now(h.metrics());
        let (elapsed, alloc) = run_timed(
            write_task(h, &self.fd, &mut state, variant, ops, &mut hist),
            self.spin,
        );
        let after = Counters::now(h.metrics());
        (self.parts, self.joined, self.rng) = state;
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        before.report(after, &mut sample);
        sample
    }

    fn extra(&self) -> String {
        format!(", \"fs\": \"{}\"", self.fs)
    }
}

// ---------------------------------------------------------------------------------------------
// sync_data vs sync

/// The sync rows: 4 KiB over block 0 of a 64 KiB file, then `sync` or `sync_data`.
struct SyncGroup {
    io: SuIo,
    fd: Fd,
    fs: String,
    buf: Option<IoBuf>,
    spin: Duration,
    _guard: Box<dyn Send>,
}

pub fn sync(env: &Env) -> Result<Box<dyn Group>, String> {
    let (path, file) = scratch_file(env, "sync-64k.dat", SYNC_FILE_LEN)?;
    let (Started { io, guard }, spin) = start()?;
    Ok(Box::new(SyncGroup {
        io,
        fd: Fd::from(file),
        fs: filesystem(&path),
        buf: Some(IoBuf::from(vec![0xc3u8; BLOCK])),
        spin,
        _guard: guard,
    }))
}

async fn sync_task(
    h: &H,
    fd: &Fd,
    buf: &mut Option<IoBuf>,
    data_only: bool,
    ops: u64,
    hist: &mut Hist,
) {
    for _ in 0..ops {
        let start = Instant::now();
        let done = h.write_at(fd, 0, buf.take().expect("buffer")).await;
        *buf = Some(done.map_err(|e| e.error).expect("write_at"));
        if data_only {
            h.sync_data(fd).await.expect("sync_data");
        } else {
            h.sync(fd).await.expect("sync");
        }
        hist.record(start.elapsed());
    }
}

impl Group for SyncGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let h = &self.io.0;
        let mut buf = self.buf.take();
        let before = Counters::now(h.metrics());
        let (elapsed, alloc) = run_timed(
            sync_task(h, &self.fd, &mut buf, variant == 1, ops, &mut hist),
            self.spin,
        );
        let after = Counters::now(h.metrics());
        self.buf = buf;
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        before.report(after, &mut sample);
        sample
    }

    fn extra(&self) -> String {
        format!(", \"fs\": \"{}\"", self.fs)
    }
}
