#![cfg(feature = "fault-injection")]
//! The fault matrix: every row of the per-operation completion tables (`src/event_loop/request.rs`,
//! docs/behaviour.md section 2; the model's rules B 2.5-2.9 with A5, A6, A10, A13) driven end to
//! end through the public API, for every operation (`OpKind::ALL`, so an operation added to the
//! crate is driven by every row that loops over the kinds; the fixture's exhaustive matches do not
//! compile until it has a fixture) where the row applies. Real triggers are used where the kernel can be made to produce the result on
//! demand; the `fault-injection` hook (`Handle::inject_fault`) where it cannot.
//!
//! Run with `cargo test --features fault-injection --test faults`.
//!
//! | fault (row) | how triggered | what the caller sees | test |
//! |---|---|---|---|
//! | `-EAGAIN`/`-EINTR`, no cancel requested (every kind) | injected `Fault::Result` | resubmitted, then `Ok` with the right bytes and effect; `requeued` +1 per retry | `retry_results_are_resubmitted_until_the_request_succeeds` |
//! | `-EAGAIN`/`-EINTR`, then the deadline fires (every kind) | injected `Fault::Result`, `Stall` ordering | `Timeout`, buffer back, no AsyncCancel (it waited in the ready queue), no I/O | `retry_after_the_deadline_fired_is_timeout` |
//! | `-EAGAIN`/`-EINTR` while a cancel is requested and the SQE is in the kernel | n/a end to end (an injected result completes at submission; CQEs are drained before the wheel advances) | `Timeout` | unit `event_loop::request::tests::retryable_codes_requeue_unless_cancel_requested` |
//! | `-ECANCELED`, cancel requested (recv, send, read_at, write_at) | real: deadline while waiting in the kernel (silent socket, full socket, empty pipe, full pipe) -> AsyncCancel | `Timeout`, buffer back, `cancel_sqes` +1; sync, nop: n/a (cannot be held in the kernel) | `deadline_while_in_the_kernel_is_timeout_through_async_cancel` |
//! | `-ECANCELED`, no cancel requested (every kind) | injected | `Os(ECANCELED)`, buffer back | `ecanceled_without_a_deadline_is_an_os_error` |
//! | other negative: `EBADF`, `ECONNRESET`, `EPIPE`, `EIO` (every kind) | injected | `Os(errno)`, buffer back; send and send_vectored `EPIPE`: `UnexpectedEof` | `injected_errors_are_os_errors_and_epipe_on_send_is_eof` |
//! | other negative: `EBADF`, `EISDIR`, `EINVAL`, `ENOTSOCK` | real: read_at on a write-only / `O_PATH` fd, write_at on a read-only fd, sync on `O_PATH`, read_at on a directory, sync on a socket, send/recv on a file | `Os(errno)`, buffer back | `real_descriptor_errors_are_os_errors` |
//! | `ECONNRESET` | real: TCP loopback peer closed with `SO_LINGER` 0 while a recv is in flight | recv `Os(ECONNRESET)`; afterwards recv `UnexpectedEof`, send `UnexpectedEof` (`EPIPE`) | `connection_reset_is_an_os_error` |
//! | peer closed: recv `0`, send `EPIPE` | real: the peer's last handle dropped | `UnexpectedEof` (recv also after partial progress of an exact recv) | `closed_peer_is_eof_for_recv_and_send` |
//! | `0` for a stream transfer (send, recv, read_at, write_at and the vectored forms) | injected | `UnexpectedEof`, buffer back, nothing transferred | `zero_result_is_eof_for_transfers` |
//! | read_at `0` at end of file, also after a short read | real: truncated file | `UnexpectedEof`, buffer back | `truncated_file_read_is_eof_also_after_partial_progress` |
//! | `0` or positive for sync / nop / connect | injected | `Ok` | `zero_or_positive_result_is_ok_for_sync_and_nop` |
//! | positive, short (the stream transfers) | injected `Fault::Short` | resubmitted at the cursor until whole, bytes correct, `requeued` +1 per short; sync/nop: n/a (limit ignored) | `short_transfers_are_resubmitted_until_whole` |
//! | send positive, short | real: `SO_SNDBUF` 4 KiB, 256 KiB send, peer reading | resubmitted until whole, every byte in order | `tiny_send_buffer_gives_short_sends_resubmitted_until_whole` |
//! | recv positive, short, not exact | injected `Fault::Short` | `Ok(offset + n)` at once, the rest stays readable | `short_non_exact_recv_completes_on_the_first_bytes` |
//! | positive larger than asked (every transfer, datagrams included), also after progress | injected `Fault::Result` (recv also after 3 real bytes) | `Os(EIO)`, buffer back, no panic, the loop carries on | `over_reported_byte_count_is_eio_not_a_panic` |
//! | after the deadline was processed: whole / short / `0` (recv on a socket, read_at on a pipe) | real, `Stall` ordering | whole: `Ok` (success wins); short: `Timeout`; `0`: `UnexpectedEof` (the kernel's answer wins) | `results_after_a_requested_cancel` |
//! | `io_uring_enter` `EBUSY` (CQ overflow) / `EINTR` / `EAGAIN` | injected `Fault::Enter` | nothing: in-flight and new requests complete | `transient_enter_errors_let_the_loop_carry_on` |
//! | `io_uring_enter` `EFAULT` / `EINVAL` while serving | injected `Fault::Enter` | `run` is `Err(Os(errno))`; in the kernel (thread `.wait()`, async, `try_*`, admitted in the failing pass): `Abandoned`; already completed: `Ok`; queued, waiting for a slot, later calls: `Closed` | `unexpected_enter_error_stops_the_loop_and_wakes_every_caller` |
//! | `io_uring_enter` `EFAULT`, or a panic on the loop thread, while timers wait (`sleep`: no kernel request, no SQE or CQE to inject into) | injected `Fault::Enter`, `Fault::Panic { op: Nop }` | the waiting timers (thread `.wait()`, async) end `Abandoned` at once, never `Ok` early; later timers `Closed` | `timers_waiting_when_the_loop_stops_on_a_fault_end_abandoned` |
//! | `io_uring_enter` `EFAULT` during the drain | injected `Fault::Enter` | `run` is `Err(Os(EFAULT))` at once; the recv in the kernel `Abandoned` | `unexpected_enter_error_during_the_drain_ends_it` |
//! | terminal CQE during the abandonment (`shutdown_timeout: Some(0)`) | real (`ENOTSOCK`, `EBADF`, `EPIPE`, `0`, data, EOF) and injected (`EIO` for recv and sync) | the kernel's answer is kept; stopped by the shutdown (cancelled, short): `Abandoned` (bug regression a) | `kernel_answers_during_the_abandonment_are_kept` |
//! | error CQE of a request resubmitted in the disconnect pass, during the abandonment | injected `EIO` after a real short exact recv, `Stall` ordering | `Os(EIO)`, not `Abandoned` (bug regression a) | `a_resubmitted_request_failing_during_the_abandonment_keeps_its_error` |
//! | panic on the loop thread (heap storage) | injected `Fault::Panic { op: Nop }` | join `Err`; in the kernel: `Abandoned`; queued, waiting for a slot: `Closed`; the slot whose CQE died with the thread parked, its descriptor owner leaked on purpose (bug regression b) | `a_loop_thread_panic_wakes_every_caller_and_frees_no_kernel_owned_memory` |
//! | panic on the loop thread (static storage) | injected `Fault::Panic { op: Nop }` | as above; the storage is claimable again, `parked` still counted, every other slot works (bug regression b) | `a_static_storage_after_a_loop_panic_is_claimable_and_keeps_counting_parked_slots` |
//!
//! The zero-copy sends (`send_zc`, `send_vectored_zc`) ride every row that loops over the kinds,
//! on a TCP loopback pair (a Unix socket cannot send zero-copy): an injected result replaces
//! their SQE by a NOP, whose single CQE carries no `F_MORE`, so it is applied at once; a real SQE
//! is applied at its notification. Their own rows (the notification, deadlines, orphans, the
//! abandonment) are in `tests/send_zc.rs`.
//!
//! Injection notes: a `Fault::Result` replaces the SQE by a NOP (the kernel does nothing), so its
//! effect is checked too (nothing sent, received or written). A `Short` and a `Result` pending for
//! the same op both apply to the same (next) SQE.

mod common;
#[path = "../examples/common/mod.rs"]
mod net;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::fault::{Fault, FaultOp};
use static_uring::op::{OpKind, Readiness};
use static_uring::BufError;
use static_uring::IoBufs;
use static_uring::{
    op, Config, Error, EventLoop, Fd, Handle, IoBuf, IoBufMut, Metrics, Op, OpResult, Storage,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How the rows of the matrix apply to an operation.
#[derive(Debug, Clone, Copy)]
struct Traits {
    /// Moves bytes through a buffer, and hands it back on error.
    transfers: bool,
    /// Moves a stream of bytes with a cursor: a zero result is the end of the stream and a
    /// short one is resubmitted (a datagram goes whole or not at all; an empty one is a datagram
    /// too).
    streams: bool,
    /// Any non-negative result completes it with `Ok` (nothing to count, and no descriptor or
    /// event mask to read from the result).
    any_result_is_ok: bool,
    /// `EPIPE` means the peer closed (`UnexpectedEof`) rather than an errno.
    epipe_is_eof: bool,
}

/// The traits of every operation: one row each, in an exhaustive match.
fn traits(kind: OpKind) -> Traits {
    let t = |transfers, streams, any_result_is_ok, epipe_is_eof| Traits {
        transfers,
        streams,
        any_result_is_ok,
        epipe_is_eof,
    };
    match kind {
        OpKind::Send | OpKind::SendVectored | OpKind::SendZc | OpKind::SendVectoredZc => {
            t(true, true, false, true)
        }
        OpKind::Recv | OpKind::ReadAt | OpKind::WriteAt | OpKind::WriteAtVectored => {
            t(true, true, false, false)
        }
        OpKind::SendTo | OpKind::RecvFrom => t(true, false, false, false),
        OpKind::Nop | OpKind::Sync | OpKind::Connect => t(false, false, true, false),
        OpKind::Accept | OpKind::Poll | OpKind::Sleep => t(false, false, false, false),
        OpKind::AcceptMulti | OpKind::RecvMulti | OpKind::Next => t(false, false, false, false),
        OpKind::Post | OpKind::RecvMessage => t(false, false, false, false),
    }
}

/// The operations whose requests reach the kernel: every kind but the timer, which lives in the
/// loop's wheel (no SQE, no CQE), so no injected result, short transfer or CQE reaches it, and
/// the messages (a waiting `recv_message` is held like the timer; `post` needs a second loop's
/// mailbox, and tests/messages.rs covers it).
fn kernel_kinds() -> impl Iterator<Item = OpKind> {
    kinds().filter(|&k| k != OpKind::Sleep)
}

/// Every single-shot operation: the matrix's rows. A multishot stream (its request and its
/// `next`) yields many results and has rows of its own (`stream_*` tests below); messages need
/// a second loop's mailbox (tests/messages.rs).
fn kinds() -> impl Iterator<Item = OpKind> {
    OpKind::ALL.iter().copied().filter(|k| {
        !matches!(
            k,
            OpKind::AcceptMulti
                | OpKind::RecvMulti
                | OpKind::Next
                | OpKind::Post
                | OpKind::RecvMessage
        )
    })
}

fn transfers(kind: OpKind) -> bool {
    traits(kind).transfers
}

fn streams(kind: OpKind) -> bool {
    traits(kind).streams
}

fn any_result_is_ok(kind: OpKind) -> bool {
    traits(kind).any_result_is_ok
}

fn epipe_is_eof(kind: OpKind) -> bool {
    traits(kind).epipe_is_eof
}

/// The operations that move a stream of bytes.
fn stream_kinds() -> impl Iterator<Item = OpKind> {
    kinds().filter(|&k| streams(k))
}

/// The file read_at reads from.
const FILE: &[u8] = b"0123456789abcdef";
/// Where read_at reads: `FILE[AT..AT + 8]`.
const AT: u64 = 4;
/// What every transfer moves (8 bytes: every transfer asks for 8); the vectored forms split it
/// in two buffers.
const MSG: &[u8] = b"payload!";
/// What `poll` waits for: a byte on its own socket pair, never consumed.
const READY: &[u8] = b"!";

/// Everything the operations of a matrix run use.
struct Fixture {
    /// Send side of the socket pair.
    a: Arc<UnixStream>,
    /// Receive side.
    b: Arc<UnixStream>,
    read: TempFile,
    write: TempFile,
    /// `accept`'s listener, and the clients connected to it.
    listener: Arc<TcpListener>,
    clients: std::sync::Mutex<Vec<TcpStream>>,
    /// What `connect` connects to.
    target: TcpListener,
    /// `send_to` sends from `udp` to `udp_peer`; `recv_from` receives on `udp` from it.
    udp: Arc<UdpSocket>,
    udp_peer: UdpSocket,
    /// `poll` waits on `polled.1` for the byte written on `polled.0`.
    polled: (Arc<UnixStream>, Arc<UnixStream>),
    /// The zero-copy sends go from `zc.0` to `zc.1`, a TCP loopback pair (a Unix socket cannot
    /// send zero-copy).
    zc: (Arc<TcpStream>, TcpStream),
}

impl Fixture {
    fn new() -> Self {
        let (a, b) = socket_pair();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(udp_peer.local_addr().unwrap()).unwrap();
        udp_peer.connect(udp.local_addr().unwrap()).unwrap();
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        target.set_nonblocking(true).unwrap();
        Fixture {
            a,
            b,
            read: TempFile::with_contents(FILE),
            write: TempFile::new(),
            listener: Arc::new(TcpListener::bind("127.0.0.1:0").unwrap()),
            clients: std::sync::Mutex::new(Vec::new()),
            target,
            udp: Arc::new(udp),
            udp_peer,
            polled: socket_pair(),
            zc: {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                out.set_nodelay(true).unwrap();
                (Arc::new(out), listener.accept().unwrap().0)
            },
        }
    }

    /// Everything readable on the zero-copy pair's receiving end now.
    fn zc_received(&self) -> Vec<u8> {
        drain_socket(&self.zc.1)
    }

    /// The datagrams waiting at `socket`, concatenated.
    fn datagrams(socket: &UdpSocket) -> Vec<u8> {
        socket.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut datagram = [0u8; 64];
        while let Ok(n) = socket.recv(&mut datagram) {
            out.extend_from_slice(&datagram[..n]);
        }
        socket.set_nonblocking(false).unwrap();
        out
    }

    /// `b"connected"` for each connection `connect` made to the target.
    fn connections(&self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.target.accept().is_ok() {
            out.extend_from_slice(b"connected");
        }
        out
    }
}

fn zeroed(len: usize) -> IoBufMut {
    IoBufMut::from(vec![0u8; len])
}

/// `MSG` in two buffers.
fn msg_bufs() -> IoBufs {
    [IoBuf::from(&MSG[..3]), IoBuf::from(&MSG[3..])]
        .into_iter()
        .collect()
}

/// The side effect of a fixture request, read after it ended: bytes that reached the peer
/// (sends), bytes or datagrams left unread (receives), the written file (writes), a connection
/// made (connect), the byte polled for (never consumed); nothing for the others.
fn effect(kind: OpKind, fx: &Fixture) -> Vec<u8> {
    match kind {
        OpKind::Send | OpKind::Recv | OpKind::SendVectored => drain_socket(&fx.b),
        OpKind::SendZc | OpKind::SendVectoredZc => fx.zc_received(),
        OpKind::WriteAt | OpKind::WriteAtVectored => fx.write.contents(),
        OpKind::SendTo => Fixture::datagrams(&fx.udp_peer),
        OpKind::RecvFrom => Fixture::datagrams(&fx.udp),
        OpKind::Connect => fx.connections(),
        OpKind::Poll => drain_socket(&fx.polled.1),
        OpKind::ReadAt | OpKind::Sync | OpKind::Nop | OpKind::Accept | OpKind::Sleep => Vec::new(),
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    }
}

/// Prepares the fixture for `kind`: data to receive, an empty file to write, a connection to
/// accept, a byte to poll for.
fn prepare(kind: OpKind, fx: &Fixture) {
    match kind {
        OpKind::Recv => (&*fx.a).write_all(MSG).unwrap(),
        OpKind::WriteAt | OpKind::WriteAtVectored => fx.write.file.set_len(0).unwrap(),
        OpKind::RecvFrom => assert_eq!(fx.udp_peer.send(MSG).unwrap(), MSG.len()),
        OpKind::Accept => {
            let client = TcpStream::connect(fx.listener.local_addr().unwrap()).unwrap();
            fx.clients.lock().unwrap().push(client);
        }
        OpKind::Poll => (&*fx.polled.0).write_all(READY).unwrap(),
        OpKind::Send
        | OpKind::ReadAt
        | OpKind::Sync
        | OpKind::Nop
        | OpKind::Connect
        | OpKind::SendTo
        | OpKind::SendVectored
        | OpKind::SendZc
        | OpKind::SendVectoredZc
        | OpKind::Sleep => {}
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    }
}

/// Runs the fixture's `kind` request to its end: what the caller got, and its side effect.
fn exercise<const S: usize, const R: usize, const W: usize>(
    h: &Handle<S, R, W>,
    kind: OpKind,
    fx: &Fixture,
) -> (Got, Vec<u8>) {
    prepare(kind, fx);
    let got = submit(h, kind, fx, None).wait();
    (got, effect(kind, fx))
}

/// What a fixture request that succeeded yields, and its side effect.
fn done(kind: OpKind) -> (Got, Vec<u8>) {
    let bytes = match kind {
        OpKind::Send
        | OpKind::Recv
        | OpKind::WriteAt
        | OpKind::SendTo
        | OpKind::RecvFrom
        | OpKind::SendVectored
        | OpKind::SendZc
        | OpKind::SendVectoredZc
        | OpKind::WriteAtVectored => MSG.to_vec(),
        OpKind::ReadAt => FILE[AT as usize..AT as usize + 8].to_vec(),
        OpKind::Poll => b"readable".to_vec(),
        OpKind::Sync | OpKind::Nop | OpKind::Accept | OpKind::Connect | OpKind::Sleep => Vec::new(),
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    };
    let effect = match kind {
        OpKind::Send
        | OpKind::WriteAt
        | OpKind::SendTo
        | OpKind::SendVectored
        | OpKind::SendZc
        | OpKind::SendVectoredZc
        | OpKind::WriteAtVectored => MSG.to_vec(),
        OpKind::Connect => b"connected".to_vec(),
        OpKind::Poll => READY.to_vec(),
        OpKind::Recv
        | OpKind::ReadAt
        | OpKind::RecvFrom
        | OpKind::Sync
        | OpKind::Nop
        | OpKind::Accept
        | OpKind::Sleep => Vec::new(),
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    };
    (Ok(bytes), effect)
}

/// What a fixture request that failed with `e` without any I/O yields: the error, the whole
/// buffer back, nothing done (what was to be received is still unread).
fn failed(kind: OpKind, e: Error) -> (Got, Vec<u8>) {
    let returned = if transfers(kind) { 8 } else { 0 };
    let effect = match kind {
        OpKind::Recv | OpKind::RecvFrom => MSG.to_vec(),
        OpKind::Poll => READY.to_vec(),
        OpKind::Send
        | OpKind::ReadAt
        | OpKind::WriteAt
        | OpKind::SendTo
        | OpKind::SendVectored
        | OpKind::SendZc
        | OpKind::SendVectoredZc
        | OpKind::WriteAtVectored
        | OpKind::Sync
        | OpKind::Nop
        | OpKind::Accept
        | OpKind::Connect
        | OpKind::Sleep => Vec::new(),
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    };
    (Err((e, returned)), effect)
}

/// What a caller got: the bytes (sent, received, read or written; `b"readable"` for a poll;
/// none for the others), or the error with the size of the buffer handed back beside it (0:
/// none came back).
type Got = Result<Vec<u8>, (Error, usize)>;

/// An operation of any kind in flight, with how to read its result as a `Got`.
struct Pending(Box<dyn FnOnce() -> Got + Send>);

impl Pending {
    fn new<O: op::Operation, const S: usize, const R: usize, const W: usize>(
        op: Op<O, S, R, W>,
        got: fn(OpResult<O>) -> Got,
    ) -> Self {
        Pending(Box::new(move || got(op.wait())))
    }

    /// Waits (bounded by `HANG`) for the result.
    fn wait(self) -> Got {
        with_timeout(HANG, self.0)
    }
}

/// What a caller of a send or a write got.
fn written(result: Result<IoBuf, BufError<IoBuf>>) -> Got {
    result
        .map(|b| b.to_vec())
        .map_err(|e| (e.error, e.buf.len()))
}

/// What a caller of a recv got: the bytes received.
fn received(result: Result<(IoBufMut, usize), BufError<IoBufMut>>) -> Got {
    result
        .map(|(b, n)| b[..n].to_vec())
        .map_err(|e| (e.error, e.buf.capacity()))
}

/// What a caller of a read got.
fn read(result: Result<IoBufMut, BufError<IoBufMut>>) -> Got {
    result
        .map(|b| b.to_vec())
        .map_err(|e| (e.error, e.buf.capacity()))
}

/// What a caller of an operation without a buffer got.
fn unit<T>(result: Result<T, Error>) -> Got {
    result.map(|_| Vec::new()).map_err(|e| (e, 0))
}

/// Waits for one operation, bounded by `HANG`.
fn wait<O: op::Operation, const S: usize, const R: usize, const W: usize>(
    op: Op<O, S, R, W>,
) -> OpResult<O>
where
    OpResult<O>: Send,
{
    with_timeout(HANG, move || op.wait())
}

/// Submits the fixture's `kind` request now (`try_submit`): send `MSG` on `a`, exact recv of 8
/// on `b`, read_at of 8 at `AT`, write_at of `MSG` at 0, sync of the read file, nop, accept on
/// the listener, connect to the target, `MSG` as a datagram each way, `MSG` in two buffers each
/// way, and a readable poll.
fn submit<const S: usize, const R: usize, const W: usize>(
    h: &Handle<S, R, W>,
    kind: OpKind,
    fx: &Fixture,
    deadline: Option<Instant>,
) -> Pending {
    match kind {
        OpKind::Send => Pending::new(
            h.send(fx.a.clone(), IoBuf::from(MSG))
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            written,
        ),
        OpKind::Recv => Pending::new(
            h.recv(fx.b.clone(), zeroed(8))
                .exact(8)
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            received,
        ),
        OpKind::ReadAt => Pending::new(
            h.read_at(fx.read.file.clone(), AT, zeroed(8))
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            read,
        ),
        OpKind::WriteAt => Pending::new(
            h.write_at(fx.write.file.clone(), 0, IoBuf::from(MSG))
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            written,
        ),
        OpKind::Sync => Pending::new(
            h.sync(fx.read.file.clone())
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            unit,
        ),
        OpKind::Nop => Pending::new(h.nop().deadline(deadline).try_submit().unwrap(), unit),
        OpKind::Accept => Pending::new(
            h.accept(fx.listener.clone())
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            unit,
        ),
        OpKind::Connect => {
            let target = fx.target.local_addr().unwrap();
            Pending::new(
                h.connect(net::tcp_socket(target), target)
                    .deadline(deadline)
                    .try_submit()
                    .unwrap(),
                unit,
            )
        }
        OpKind::SendTo => Pending::new(
            h.send_to(
                fx.udp.clone(),
                IoBuf::from(MSG),
                fx.udp_peer.local_addr().unwrap(),
            )
            .deadline(deadline)
            .try_submit()
            .unwrap(),
            written,
        ),
        OpKind::RecvFrom => Pending::new(
            h.recv_from(fx.udp.clone(), zeroed(8))
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            |r| {
                r.map(|(b, _, _)| b.to_vec())
                    .map_err(|e| (e.error, e.buf.capacity()))
            },
        ),
        OpKind::SendVectored => Pending::new(
            h.send_vectored(fx.a.clone(), msg_bufs())
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            vectored,
        ),
        OpKind::WriteAtVectored => Pending::new(
            h.write_at_vectored(fx.write.file.clone(), 0, msg_bufs())
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            vectored,
        ),
        OpKind::Poll => Pending::new(
            h.poll(fx.polled.1.clone(), Readiness::READABLE)
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            |r| {
                r.map(|ready| {
                    assert!(ready.is_readable(), "{ready:?}");
                    b"readable".to_vec()
                })
                .map_err(|e| (e, 0))
            },
        ),
        OpKind::SendZc => Pending::new(
            h.send_zc(fx.zc.0.clone(), IoBuf::from(MSG))
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            written,
        ),
        OpKind::SendVectoredZc => Pending::new(
            h.send_vectored_zc(fx.zc.0.clone(), msg_bufs())
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            vectored,
        ),
        // A timer whose deadline, if any, is its end.
        OpKind::Sleep => Pending::new(
            h.sleep(Duration::from_millis(1))
                .deadline(deadline.or(Some(Instant::now() + Duration::from_millis(1))))
                .try_submit()
                .unwrap(),
            unit,
        ),
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage => unreachable!("not in kinds()"),
    }
}

/// What a caller of a vectored operation got: the buffers' bytes, or the error and their total.
fn vectored(result: Result<IoBufs, BufError<IoBufs>>) -> Got {
    let bytes = |bufs: &IoBufs| bufs.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
    result
        .map(|bufs| bytes(&bufs))
        .map_err(|e| (e.error, bytes(&e.buf).len()))
}

/// Counter growth between two snapshots (`Metrics` is non-exhaustive: start from `after`).
fn delta(before: Metrics, after: Metrics) -> Metrics {
    let mut d = after;
    d.submitted -= before.submitted;
    d.completed -= before.completed;
    d.timed_out -= before.timed_out;
    d.capped_deadlines -= before.capped_deadlines;
    d.cancel_sqes -= before.cancel_sqes;
    d.orphaned -= before.orphaned;
    d.requeued -= before.requeued;
    d.abandoned -= before.abandoned;
    d.parked -= before.parked;
    d.enters -= before.enters;
    d.wakeups -= before.wakeups;
    d.user_panics -= before.user_panics;
    d.fixed_files -= before.fixed_files;
    d.fixed_buffers -= before.fixed_buffers;
    d.zero_copy_notifications -= before.zero_copy_notifications;
    d.zero_copy_copied -= before.zero_copy_copied;
    d
}

/// The loop still serves requests.
fn still_serves<const S: usize, const R: usize, const W: usize>(h: &Handle<S, R, W>) {
    assert_eq!(wait(h.nop()), Ok(()), "the loop carries on");
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

fn set_int_option(fd: &impl AsRawFd, level: i32, name: i32, value: libc::c_int) {
    // SAFETY: a valid descriptor and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// `SO_LINGER` on with a zero timeout: closing the socket sends a RST.
fn linger_zero(fd: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a `linger` value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// A pipe: (read end, write end).
fn pipe() -> (Arc<OwnedFd>, File) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both descriptors; each is owned once.
    unsafe {
        (
            Arc::new(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// Writes to `w` (non-blocking) until its buffer is full.
fn fill(w: &impl AsRawFd) {
    let fd = w.as_raw_fd();
    // SAFETY: fcntl on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let chunk = [0u8; 4096];
    for len in [chunk.len(), 1] {
        // SAFETY: writes from a valid buffer of at least `len` bytes.
        while unsafe { libc::write(fd, chunk.as_ptr().cast(), len) } > 0 {}
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
}

type Pair = (Arc<UnixStream>, Arc<UnixStream>);

/// A recv in flight, polled with a `Stall` waker: once `hold` sends it a byte, the loop thread is
/// held inside its CQE drain, delivering it, until `stall.release()`.
struct Held<const S: usize, const R: usize, const W: usize> {
    stall: Arc<Stall>,
    op: Pin<Box<Op<op::Recv, S, R, W>>>,
    pair: Pair,
}

impl<const S: usize, const R: usize, const W: usize> Held<S, R, W> {
    /// Submits the recv and waits until the loop has staged it.
    fn new(h: &Handle<S, R, W>) -> Self {
        let pair = socket_pair();
        let stall = Stall::new();
        let before = h.metrics().submitted;
        let mut op = Box::pin(h.recv(pair.1.clone(), zeroed(1)).limit(1));
        assert!(poll_with(op.as_mut(), &stall.waker()).is_none());
        wait_until(HANG, "held recv staged", || h.metrics().submitted > before);
        Held { stall, op, pair }
    }

    /// Completes the recv and waits until the loop thread is held delivering it.
    fn hold(&self) {
        (&*self.pair.0).write_all(b"!").unwrap();
        self.stall.wait_entered();
    }

    /// The held recv got its byte.
    fn check(self) {
        assert_eq!(block_on(HANG, self.op).unwrap().1, 1);
    }
}

/// Call while the loop is held elsewhere: in its next staging pass the loop admits an
/// already-expired nop and is held delivering its Timeout, until released.
fn stall_in_stage<const S: usize, const R: usize, const W: usize>(
    h: &Handle<S, R, W>,
) -> (Arc<Stall>, Pin<Box<Op<op::Nop, S, R, W>>>) {
    let stall = Stall::new();
    let past = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    let mut op = Box::pin(h.nop().deadline(past));
    assert!(poll_with(op.as_mut(), &stall.waker()).is_none());
    (stall, op)
}

// ---------------------------------------------------------------------------------------------
// Retry rows: -EAGAIN (= -EWOULDBLOCK) and -EINTR
// ---------------------------------------------------------------------------------------------

/// Row "Retry (`-EAGAIN`/`-EINTR`), no cancel requested -> requeue" for every kind: each retry
/// result puts the request back in the ready queue, the next SQE is the real one, and the
/// request succeeds with exactly the bytes and side effect of an undisturbed run.
#[test]
fn retry_results_are_resubmitted_until_the_request_succeeds() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in kernel_kinds() {
        let before = h.metrics();
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: -libc::EAGAIN,
        });
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: -libc::EINTR,
        });
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
        let m = delta(before, h.metrics());
        assert_eq!((m.requeued, m.submitted), (2, 3), "{kind:?}: {m:?}");
    }
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "Retry, then the deadline fires while the request waits in the ready queue -> Timeout"
/// (2.9: no AsyncCancel, Timeout at staging) for every kind, with `-EAGAIN`, and `-EINTR` for
/// recv. The loop is held (a `Stall` waker) so that the retry CQE is drained in the iteration
/// whose wheel advance then expires the deadline. The request is not resubmitted: no I/O at all.
///
/// The other form of this row (the deadline processed while the retrying SQE is still in the
/// kernel) cannot be produced through the API: an injected result completes at submission, and
/// the loop drains CQEs before it advances the wheel. `event_loop::request::tests` pins it.
#[test]
fn retry_after_the_deadline_fired_is_timeout() {
    let runs = kernel_kinds()
        .map(|k| (k, libc::EAGAIN))
        .chain([(OpKind::Recv, libc::EINTR)]);
    for (kind, errno) in runs {
        let (h, lp) = start::<8, 8, 64>(config());
        let fx = Fixture::new();
        let held = Held::new(&h);
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: -errno,
        });
        held.hold();
        let before = h.metrics();
        let deadline = Instant::now() + Duration::from_millis(100);
        let x = submit(&h, kind, &fx, Some(deadline));
        let (stage, expired) = stall_in_stage(&h);
        held.stall.release();
        // The loop staged `x` (its SQE now an injected NOP) and is held admitting the nop.
        stage.wait_entered();
        assert!(
            Instant::now() < deadline,
            "setup too slow: the deadline passed before the loop was held"
        );
        sleep_until(deadline + Duration::from_millis(20));
        stage.release();
        let got = x.wait();
        let returned = if transfers(kind) { 8 } else { 0 };
        assert_eq!(got, Err((Error::Timeout, returned)), "{kind:?} {errno}");
        assert_eq!(block_on(HANG, expired), Err(Error::Timeout));
        held.check();
        wait_until(HANG, "idle", || h.metrics().pending_operations == 0);
        let m = delta(before, h.metrics());
        assert_eq!(
            (m.submitted, m.requeued, m.cancel_sqes, m.timed_out),
            (1, 1, 0, 2),
            "{kind:?}: one SQE, one retry, no AsyncCancel: {m:?}"
        );
        assert_eq!(
            effect(kind, &fx),
            Vec::<u8>::new(),
            "{kind:?}: no I/O at all"
        );
        drop(h);
        lp.join(HANG).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Cancelled rows
// ---------------------------------------------------------------------------------------------

/// Row "`-ECANCELED`, cancel requested -> Timeout", with real kernel cancels: the deadline fires
/// while the request waits in the kernel, the loop sends an AsyncCancel, the kernel answers the
/// request with `-ECANCELED`. recv on a silent socket, send on a socket whose buffer is full,
/// read_at on an empty pipe, write_at on a full pipe. (sync and nop cannot be held in the
/// kernel on demand: n/a.)
#[test]
fn deadline_while_in_the_kernel_is_timeout_through_async_cancel() {
    let (h, lp) = start::<8, 8, 64>(config());
    let soon = || Some(Instant::now() + Duration::from_millis(30));
    let (_silent, b) = socket_pair();
    let (a, _full) = socket_pair();
    let (pipe_r, mut pipe_w) = pipe();
    let (full_r, full_w) = pipe();
    fill(&full_w);
    fill(&*a);
    let full_w = Arc::new(full_w);

    let before = h.metrics();
    let recv = h
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .deadline(soon())
        .try_submit()
        .unwrap();
    let (buf, e) = wait(recv).unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 8), "recv");

    let send = h
        .send(a.clone(), IoBuf::from(MSG))
        .deadline(soon())
        .try_submit()
        .unwrap();
    let (buf, e) = wait(send).unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Timeout, MSG), "send");

    let read = h
        .read_at(pipe_r.clone(), 0, zeroed(8))
        .limit(8)
        .deadline(soon())
        .try_submit()
        .unwrap();
    let (buf, e) = wait(read).unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 8), "read_at");

    let write = h
        .write_at(full_w.clone(), 0, IoBuf::from(MSG))
        .deadline(soon())
        .try_submit()
        .unwrap();
    let (buf, e) = wait(write).unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Timeout, MSG), "write_at");

    let m = delta(before, h.metrics());
    assert_eq!(
        (m.submitted, m.cancel_sqes, m.timed_out, m.requeued),
        (4, 4, 4, 0),
        "{m:?}"
    );
    // Nothing was consumed by the cancelled read: the pipe still delivers what comes next.
    pipe_w.write_all(b"next").unwrap();
    let buf = wait(h.read_at(pipe_r, 0, zeroed(4)).limit(4)).unwrap();
    assert_eq!(&buf[..], b"next");
    drop(h);
    lp.join(HANG).unwrap();
    drop(full_r);
}

/// Row "`-ECANCELED` without a cancel request -> `Os(ECANCELED)`" for every kind: a cancel the
/// loop did not ask for is an error like any other, not a Timeout.
#[test]
fn ecanceled_without_a_deadline_is_an_os_error() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in kernel_kinds() {
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: -libc::ECANCELED,
        });
        assert_eq!(
            exercise(&h, kind, &fx),
            failed(kind, Error::Os(libc::ECANCELED)),
            "{kind:?}"
        );
        assert_eq!(h.metrics().timed_out, 0);
    }
    still_serves(&h);
    drop(h);
    lp.join(HANG).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Error rows
// ---------------------------------------------------------------------------------------------

/// Row "other negative -> `Os(errno)`; send: `EPIPE` is `UnexpectedEof`" (A6) for every kind,
/// with `EBADF`, `ECONNRESET`, `EPIPE` and `EIO` injected: the kernel's errno, the buffer handed
/// back, and the loop carries on.
#[test]
fn injected_errors_are_os_errors_and_epipe_on_send_is_eof() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for errno in [libc::EBADF, libc::ECONNRESET, libc::EPIPE, libc::EIO] {
        for kind in kernel_kinds() {
            h.inject_fault(Fault::Result {
                op: kind.into(),
                result: -errno,
            });
            let expected = if epipe_is_eof(kind) && errno == libc::EPIPE {
                Error::UnexpectedEof
            } else {
                Error::Os(errno)
            };
            assert_eq!(
                exercise(&h, kind, &fx),
                failed(kind, expected),
                "{kind:?} {errno}"
            );
        }
    }
    // Every request after the faults is undisturbed.
    for kind in kernel_kinds() {
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
    }
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "other negative -> `Os(errno)`" with real kernel errors: `EBADF` (read_at on a write-only
/// or an `O_PATH` descriptor, write_at on a read-only one, sync on an `O_PATH` one), `EISDIR`
/// (read_at on a directory), `EINVAL` (sync on a socket), `ENOTSOCK` (send and recv on a file).
#[test]
fn real_descriptor_errors_are_os_errors() {
    let (h, lp) = start::<8, 8, 64>(config());
    let file = TempFile::with_contents(FILE);
    let write_only = Arc::new(OpenOptions::new().write(true).open(&file.path).unwrap());
    let read_only = file.read_only();
    let o_path = Arc::new(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&file.path)
            .unwrap(),
    );
    let dir = Arc::new(File::open(std::env::temp_dir()).unwrap());
    let (a, _b) = socket_pair();

    let read_err = |fd: Fd| {
        let (buf, e) = wait(h.read_at(fd, 0, zeroed(4)).limit(4))
            .unwrap_err()
            .into_parts();
        (e, buf.capacity())
    };
    assert_eq!(read_err(write_only.into()), (Error::Os(libc::EBADF), 4));
    assert_eq!(read_err(o_path.clone().into()), (Error::Os(libc::EBADF), 4));
    assert_eq!(read_err(dir.into()), (Error::Os(libc::EISDIR), 4));

    let (buf, e) = wait(h.write_at(read_only.clone(), 0, IoBuf::from(MSG)))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Os(libc::EBADF), MSG));
    assert_eq!(file.contents(), FILE, "nothing written");

    assert_eq!(wait(h.sync(o_path)), Err(Error::Os(libc::EBADF)));
    assert_eq!(wait(h.sync(a)), Err(Error::Os(libc::EINVAL)));

    let (buf, e) = wait(h.send(read_only.clone(), IoBuf::from(MSG)))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Os(libc::ENOTSOCK), MSG));
    let (buf, e) = wait(h.recv(read_only, zeroed(4)).limit(4))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::Os(libc::ENOTSOCK), 4));

    still_serves(&h);
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "other negative -> `Os(errno)`" for a connection reset, for real: a TCP loopback peer
/// closes with `SO_LINGER` 0 (a RST) while a recv is in flight: `Os(ECONNRESET)`. The socket then
/// reads end of file (recv `UnexpectedEof`) and refuses sends with `EPIPE` (send
/// `UnexpectedEof`, A6).
#[test]
fn connection_reset_is_an_os_error() {
    let (h, lp) = start::<8, 8, 64>(config());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Arc::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    let (server, _) = listener.accept().unwrap();
    let recv = h
        .recv(client.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    wait_until(HANG, "recv staged", || h.metrics().submitted == 1);
    thread::sleep(Duration::from_millis(10));
    linger_zero(&server);
    drop(server);
    let (buf, e) = wait(recv).unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::Os(libc::ECONNRESET), 8));

    let (buf, e) = wait(h.recv(client.clone(), zeroed(8)).limit(8))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 8));
    let (buf, e) = wait(h.send(client, IoBuf::from(MSG)))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::UnexpectedEof, MSG));
    drop(h);
    lp.join(HANG).unwrap();
}

/// Rows "recv: Zero (peer closed) -> `UnexpectedEof`", also after partial progress of an exact
/// recv, and "send: `EPIPE` -> `UnexpectedEof`" (A6), for real: the peer's last handle is dropped.
#[test]
fn closed_peer_is_eof_for_recv_and_send() {
    let (h, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let in_flight = h.recv(b.clone(), zeroed(8)).limit(8).try_submit().unwrap();
    wait_until(HANG, "recv staged", || h.metrics().submitted == 1);
    let (c, d) = socket_pair();
    let exact = h.recv(d.clone(), zeroed(8)).exact(8).try_submit().unwrap();
    (&*c).write_all(b"half").unwrap();
    wait_until(HANG, "short recv requeued", || h.metrics().requeued == 1);
    drop((a, c));
    let (buf, e) = wait(in_flight).unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 8));
    let (buf, e) = wait(exact).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::UnexpectedEof, 8),
        "after 4 bytes"
    );

    let (buf, e) = wait(h.send(b, IoBuf::from(MSG))).unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::UnexpectedEof, MSG));
    drop(h);
    lp.join(HANG).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Zero and positive rows
// ---------------------------------------------------------------------------------------------

/// Row "0 -> `UnexpectedEof`" for the stream transfers (injected: a 0 the kernel could return for
/// a write only in odd cases): buffer back, nothing transferred.
#[test]
fn zero_result_is_eof_for_transfers() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in stream_kinds() {
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: 0,
        });
        assert_eq!(
            exercise(&h, kind, &fx),
            failed(kind, Error::UnexpectedEof),
            "{kind:?}"
        );
    }
    still_serves(&h);
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "read_at: Zero (end of file), even after partial progress -> `UnexpectedEof`", for real:
/// a file truncated under its readers. A read of 16 bytes of a file cut to 6 gets 6 (short,
/// resubmitted at the cursor), then 0; a read starting past the end gets 0 at once; a read that
/// fits is `Ok`.
#[test]
fn truncated_file_read_is_eof_also_after_partial_progress() {
    let (h, lp) = start::<8, 8, 64>(config());
    let file = TempFile::with_contents(FILE);
    file.file.set_len(6).unwrap();

    let before = h.metrics();
    let (buf, e) = wait(h.read_at(file.file.clone(), 0, zeroed(16)).limit(16))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 16));
    let m = delta(before, h.metrics());
    assert_eq!((m.submitted, m.requeued), (2, 1), "6 bytes, then 0: {m:?}");

    let before = h.metrics();
    let (buf, e) = wait(h.read_at(file.file.clone(), 8, zeroed(4)).limit(4))
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 4));
    let m = delta(before, h.metrics());
    assert_eq!((m.submitted, m.requeued), (1, 0), "{m:?}");

    let buf = wait(h.read_at(file.file.clone(), 2, zeroed(4)).limit(4)).unwrap();
    assert_eq!(&buf[..], b"2345");
    drop(h);
    lp.join(HANG).unwrap();
}

/// Rows "sync: Zero / Positive -> `Ok`" and the same for nop and connect (A6): whatever
/// non-negative value the CQE carries, the caller gets `Ok(())`. (An injected result replaces
/// the SQE, so connect's side effect, a connection, does not happen: the results are compared.)
#[test]
fn zero_or_positive_result_is_ok_for_sync_and_nop() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in kinds().filter(|&k| any_result_is_ok(k)) {
        for result in [0, 1, 4096, i32::MAX] {
            h.inject_fault(Fault::Result {
                op: kind.into(),
                result,
            });
            assert_eq!(exercise(&h, kind, &fx).0, done(kind).0, "{kind:?} {result}");
        }
    }
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "positive, still short -> advance; requeue" for the stream transfers, with real short
/// transfers (`Fault::Short` caps the SQE's length): two short SQEs, then the rest; the request
/// resumes at its cursor and the bytes are whole and in order.
#[test]
fn short_transfers_are_resubmitted_until_whole() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in stream_kinds() {
        let before = h.metrics();
        h.inject_fault(Fault::Short {
            op: kind.into(),
            max: 3,
        });
        h.inject_fault(Fault::Short {
            op: kind.into(),
            max: 2,
        });
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
        let m = delta(before, h.metrics());
        assert_eq!((m.submitted, m.requeued), (3, 2), "{kind:?}: {m:?}");
    }
    // A byte limit on sync and nop (nothing to transfer) changes nothing.
    for kind in kinds().filter(|&k| any_result_is_ok(k)) {
        h.inject_fault(Fault::Short {
            op: kind.into(),
            max: 1,
        });
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
    }
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "recv: Positive n and not exact -> done(Ok(offset + n))": a short result completes a
/// non-exact recv at once (no requeue); the rest stays readable.
#[test]
fn short_non_exact_recv_completes_on_the_first_bytes() {
    let (h, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(MSG).unwrap();
    h.inject_fault(Fault::Short {
        op: FaultOp::Recv,
        max: 3,
    });
    let (buf, received) = wait(h.recv(b.clone(), zeroed(10)).offset(2).limit(10)).unwrap();
    assert_eq!((received, buf.len()), (3, 5), "offset 2 + 3 bytes");
    assert_eq!(&buf[..], b"\0\0pay");
    assert_eq!(h.metrics().requeued, 0);
    assert_eq!(drain_socket(&b), b"load!");
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "send: positive, bytes remain -> advance; requeue", for real: with `SO_SNDBUF` at 4 KiB a
/// 256 KiB send is accepted in many short pieces while the peer reads; each is resubmitted from
/// the cursor until the whole buffer is sent, and the peer gets every byte in order.
#[test]
fn tiny_send_buffer_gives_short_sends_resubmitted_until_whole() {
    let (h, lp) = start::<8, 8, 64>(config());
    let (a, b) = UnixStream::pair().unwrap();
    set_int_option(&a, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096);
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let reader = Background::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        (&b).read_exact(&mut got).unwrap();
        got == expected
    });
    let before = h.metrics();
    let sent = wait(h.send(Arc::new(a), IoBuf::from(payload))).unwrap();
    assert_eq!(sent.len(), 256 * 1024, "the whole buffer comes back");
    assert!(reader.join(HANG), "every byte arrives, in order");
    let m = delta(before, h.metrics());
    assert!(m.requeued >= 1, "short sends were resubmitted: {m:?}");
    assert_eq!(m.submitted, m.requeued + 1, "{m:?}");
    drop(h);
    lp.join(HANG).unwrap();
}

/// Row "positive result larger than what was asked -> `Os(EIO)`, no panic" (A13) for every
/// transfer: at the first SQE (9 bytes reported for 8 asked; for a datagram, 9 bytes reported
/// for an 8-byte datagram or buffer), and for the streams after progress (3 bytes, then 6
/// reported for the 5 left; and for recv after 3 bytes really received). The loop carries on.
#[test]
fn over_reported_byte_count_is_eio_not_a_panic() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    for kind in kinds().filter(|&k| transfers(k)) {
        h.inject_fault(Fault::Result {
            op: kind.into(),
            result: 9,
        });
        assert_eq!(
            exercise(&h, kind, &fx),
            failed(kind, Error::Os(libc::EIO)),
            "{kind:?}"
        );
    }
    for kind in stream_kinds() {
        for result in [3, 6] {
            h.inject_fault(Fault::Result {
                op: kind.into(),
                result,
            });
        }
        let before = h.metrics();
        assert_eq!(
            exercise(&h, kind, &fx),
            failed(kind, Error::Os(libc::EIO)),
            "{kind:?} after progress"
        );
        assert_eq!(delta(before, h.metrics()).requeued, 1, "{kind:?}");
    }
    // After real progress. (A `Short` and a `Result` pending for one op both apply to its next
    // SQE, so the `Result` is injected once the first SQE is in the kernel.)
    let (a, b) = socket_pair();
    let before = h.metrics();
    let recv = h.recv(b.clone(), zeroed(8)).exact(8).try_submit().unwrap();
    wait_until(HANG, "recv staged", || {
        h.metrics().submitted == before.submitted + 1
    });
    h.inject_fault(Fault::Result {
        op: FaultOp::Recv,
        result: 6,
    });
    (&*a).write_all(b"pay").unwrap();
    let (buf, e) = wait(recv).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Os(libc::EIO), 8),
        "after 3 real bytes"
    );
    assert_eq!(delta(before, h.metrics()).requeued, 1);
    for kind in kinds() {
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
    }
    drop(h);
    lp.join(HANG).unwrap();
}

// ---------------------------------------------------------------------------------------------
// CQEs after a requested cancel (2.9)
// ---------------------------------------------------------------------------------------------

/// What reaches the request after its deadline was processed.
#[derive(Debug, Clone, Copy)]
enum Event {
    Whole,
    Part,
    Close,
}

/// An exact 4-byte recv (socket) or read_at (pipe) whose deadline is processed first (its
/// AsyncCancel staged but not yet submitted), after which `event` reaches its source.
fn deadline_then_event(kind: OpKind, event: Event) -> (Got, Metrics) {
    let (h, lp) = start::<8, 8, 64>(config());
    let (fd, writer): (Fd, Box<dyn Write + Send>) = match kind {
        OpKind::Recv => {
            let (w, r) = UnixStream::pair().unwrap();
            (Arc::new(r).into(), Box::new(w))
        }
        OpKind::ReadAt => {
            let (r, w) = pipe();
            (r.into(), Box::new(w))
        }
        _ => unreachable!("recv or read_at"),
    };
    let mut writer = Some(writer);
    let deadline = Instant::now() + Duration::from_millis(100);
    let x = match kind {
        OpKind::Recv => Pending::new(
            h.recv(fd, zeroed(4))
                .exact(4)
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            received,
        ),
        _ => Pending::new(
            h.read_at(fd, 0, zeroed(4))
                .limit(4)
                .deadline(deadline)
                .try_submit()
                .unwrap(),
            read,
        ),
    };
    wait_until(HANG, "staged", || h.metrics().submitted == 1);
    let held = Held::new(&h);
    held.hold();
    let (stage, expired) = stall_in_stage(&h);
    sleep_until(deadline + Duration::from_millis(20));
    // Next: the deadline is processed (cancel requested and staged), then the loop is held
    // admitting the expired nop, before it submits the cancel.
    held.stall.release();
    stage.wait_entered();
    assert_eq!(h.metrics().cancel_sqes, 1, "the cancel was staged");
    match event {
        Event::Whole => writer.as_mut().unwrap().write_all(b"data").unwrap(),
        Event::Part => writer.as_mut().unwrap().write_all(b"da").unwrap(),
        Event::Close => drop(writer.take()),
    }
    thread::sleep(Duration::from_millis(20));
    stage.release();
    let got = x.wait();
    assert_eq!(block_on(HANG, expired), Err(Error::Timeout));
    held.check();
    for _ in 0..4 {
        still_serves(&h);
    }
    wait_until(HANG, "idle", || h.metrics().pending_operations == 0);
    let metrics = h.metrics();
    drop(h);
    lp.join(HANG).unwrap();
    drop(writer);
    (got, metrics)
}

/// Rows of 2.9 after the deadline was processed (AsyncCancel requested), for recv on a socket
/// and read_at on a pipe: "positive, request complete -> `Ok` (success wins)", "positive, still
/// short -> Timeout" and "0 -> `UnexpectedEof` (the kernel's answer wins over Timeout)".
#[test]
fn results_after_a_requested_cancel() {
    for kind in [OpKind::Recv, OpKind::ReadAt] {
        let (got, m) = deadline_then_event(kind, Event::Whole);
        assert_eq!(got, Ok(b"data".to_vec()), "{kind:?} whole");
        assert_eq!((m.cancel_sqes, m.timed_out), (1, 1), "{kind:?}: {m:?}");

        let (got, m) = deadline_then_event(kind, Event::Part);
        assert_eq!(got, Err((Error::Timeout, 4)), "{kind:?} part");
        assert_eq!((m.cancel_sqes, m.timed_out), (1, 2), "{kind:?}: {m:?}");

        let (got, m) = deadline_then_event(kind, Event::Close);
        assert_eq!(got, Err((Error::UnexpectedEof, 4)), "{kind:?} closed");
        assert_eq!((m.cancel_sqes, m.timed_out), (1, 1), "{kind:?}: {m:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// io_uring_enter failures
// ---------------------------------------------------------------------------------------------

/// Rows "`io_uring_enter` fails with `EBUSY` (completion queue overflow), `EINTR` or `EAGAIN`":
/// transient, the loop drains and enters again. A request in flight across the failed enter and
/// the request whose submission it delayed both complete. (A request's completion proves the
/// fault was consumed: its SQE only reaches the kernel through an enter, and every enter takes
/// the oldest pending enter fault first.)
#[test]
fn transient_enter_errors_let_the_loop_carry_on() {
    let (h, lp) = start::<8, 8, 64>(config());
    let fx = Fixture::new();
    let (a, b) = socket_pair();
    for errno in [libc::EBUSY, libc::EINTR, libc::EAGAIN] {
        let in_flight = h.recv(b.clone(), zeroed(8)).limit(8).try_submit().unwrap();
        thread::sleep(Duration::from_millis(5));
        let before = h.metrics();
        h.inject_fault(Fault::Enter { errno });
        assert_eq!(exercise(&h, OpKind::Nop, &fx), done(OpKind::Nop), "{errno}");
        assert!(
            h.metrics().enters >= before.enters + 2,
            "a failed enter and the one that submitted"
        );
        (&*a).write_all(b"inflight").unwrap();
        let (buf, n) = wait(in_flight).unwrap();
        assert_eq!(&buf[..n], b"inflight");
    }
    // Several at once, then every operation.
    for errno in [libc::EBUSY, libc::EINTR, libc::EAGAIN, libc::EBUSY] {
        h.inject_fault(Fault::Enter { errno });
    }
    for kind in kinds() {
        assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
    }
    drop(h);
    assert_eq!(lp.join(HANG), Ok(()));
}

/// Row "`io_uring_enter` fails with an unexpected errno (`EFAULT`, `EINVAL`)" (A13): `run`
/// returns `Err(Os(errno))` and every waiting caller is woken, none hangs: the requests in the
/// kernel (a recv waited on by another thread, an async recv, a `try_recv`, and the recv admitted
/// in the pass that failed) are cancelled and answered `Abandoned`; a request the kernel had
/// already completed keeps its `Ok`; requests queued behind the full table and a caller waiting
/// for a free slot get `Closed`, and so does every later call.
#[test]
fn unexpected_enter_error_stops_the_loop_and_wakes_every_caller() {
    for errno in [libc::EFAULT, libc::EINVAL] {
        let (h, event_loop) = static_uring::new::<8, 4, 64>(config()).unwrap();
        let reader = event_loop.metrics_reader();
        let lp = LoopThread::spawn(event_loop);
        let pairs: Vec<Pair> = (0..5).map(|_| socket_pair()).collect();
        let submitted = |n| wait_until(HANG, "staged", || h.metrics().submitted == n);

        // Four requests in the kernel: the table (RING = 4) is full.
        let op = h.recv(pairs[0].1.clone(), zeroed(8)).limit(8);
        let waiting = Background::spawn(move || op.wait().map(|(_, n)| n).map_err(|e| e.error));
        submitted(1);
        let mut polled = Box::pin(h.recv(pairs[1].1.clone(), zeroed(8)).limit(8));
        assert!(poll_once(polled.as_mut()).is_none());
        submitted(2);
        let held = h
            .recv(pairs[2].1.clone(), zeroed(8))
            .limit(8)
            .try_submit()
            .unwrap();
        let trigger = h
            .recv(pairs[3].1.clone(), zeroed(8))
            .limit(8)
            .try_submit()
            .unwrap();
        submitted(4);
        thread::sleep(Duration::from_millis(10));
        // Queued behind the full table (the loop sleeps until a completion), then every slot
        // taken and one caller waiting for a slot.
        let admitted_last = h
            .recv(pairs[4].1.clone(), zeroed(8))
            .limit(8)
            .try_submit()
            .unwrap();
        let file = TempFile::with_contents(FILE);
        let queued_read = h
            .read_at(file.file.clone(), 0, zeroed(4))
            .limit(4)
            .try_submit()
            .unwrap();
        let queued_nops = [h.nop().try_submit().unwrap(), h.nop().try_submit().unwrap()];
        let op = h.nop();
        let blocked = Background::spawn(move || op.wait());
        thread::sleep(Duration::from_millis(10));
        assert!(!blocked.is_finished(), "no free slot: the caller waits");

        h.inject_fault(Fault::Enter { errno });
        // A completion: the loop delivers it, admits the queued recv (the table is full again),
        // and its next enter fails.
        (&*pairs[3].0).write_all(b"trigger").unwrap();
        assert_eq!(
            lp.join(HANG),
            Err(Error::Os(errno)),
            "run reports the failure"
        );

        assert_eq!(waiting.join(HANG), Err(Error::Abandoned), "thread .wait()");
        assert_eq!(err(block_on(HANG, polled)).error, Error::Abandoned, "async");
        assert_eq!(
            wait(held).unwrap_err().error,
            Error::Abandoned,
            "recv().try_submit()"
        );
        assert_eq!(
            wait(admitted_last).unwrap_err().error,
            Error::Abandoned,
            "admitted in the failing pass"
        );
        let (buf, n) = wait(trigger).unwrap();
        assert_eq!(
            &buf[..n],
            b"trigger",
            "a completed request keeps its result"
        );
        let (buf, e) = wait(queued_read).unwrap_err().into_parts();
        assert_eq!((e, buf.capacity()), (Error::Closed, 4), "never admitted");
        for q in queued_nops {
            assert_eq!(wait(q), Err(Error::Closed), "never admitted");
        }
        assert_eq!(blocked.join(HANG), Err(Error::Closed), "waiting for a slot");
        assert_eq!(err(h.nop().try_submit()), Error::Closed);
        assert_eq!(wait(h.nop()), Err(Error::Closed));

        let m = reader.get();
        assert_eq!(
            (m.abandoned, m.parked, m.pending_operations),
            (4, 0, 0),
            "{errno}: sockets are released by the cancel, no slot parked: {m:?}"
        );
        drop(h);
        for (_, sock) in &pairs {
            wait_until(HANG, "descriptors released", || {
                Arc::strong_count(sock) == 1
            });
        }
    }
}

/// Row "`io_uring_enter` fails with an unexpected errno" during the drain (no handle left,
/// `shutdown_timeout: None`, a recv in the kernel): `run` returns `Err(Os(EFAULT))` at once
/// instead of waiting for the recv forever, and the recv's caller is answered `Abandoned`.
#[test]
fn unexpected_enter_error_during_the_drain_ends_it() {
    let cfg = Config {
        shutdown_timeout: None,
        ..config()
    };
    let (h, lp) = start::<8, 8, 64>(cfg);
    let (_a, b) = socket_pair();
    let recv = h.recv(b.clone(), zeroed(8)).limit(8).try_submit().unwrap();
    wait_until(HANG, "recv staged", || h.metrics().submitted == 1);
    thread::sleep(Duration::from_millis(10));
    h.inject_fault(Fault::Enter {
        errno: libc::EFAULT,
    });
    // The last handle's exit wakes the loop; the drain's first enter fails.
    drop(h);
    assert_eq!(lp.join(HANG), Err(Error::Os(libc::EFAULT)));
    let (buf, e) = wait(recv).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Abandoned, 8),
        "released by the cancel"
    );
    wait_until(HANG, "descriptor released", || Arc::strong_count(&b) == 1);
}

// ---------------------------------------------------------------------------------------------
// Bug regression (a): a kernel answer arriving during the abandonment is kept
// ---------------------------------------------------------------------------------------------

/// Bug regression (a), row "terminal CQE during the abandonment -> the kernel's answer" (A10).
/// With `shutdown_timeout: Some(0)`, requests admitted in the pass that sees the last handle go
/// are in the kernel (their SQEs not even submitted) when the abandonment starts: the loop
/// submits them with their AsyncCancels and collects what the kernel answers. A terminal answer
/// (an error, end of file, success) is kept; only what the shutdown itself stopped (a cancelled
/// recv, a short read) is `Abandoned`. Real errors (`ENOTSOCK`, `EBADF`, `EPIPE`) and injected
/// ones (`EIO` for a recv and a sync).
///
/// Deterministic: the requests and faults are queued before the loop runs, so its first pass
/// admits them all and sees no handle; every request here but the write completes inside the
/// submitting `io_uring_enter`. The write of a new block is handed to the kernel's worker
/// threads (ext4), so it ends one of three ways: done before the cancel (`Ok`, written);
/// cancelled before it ran (`Abandoned`, buffer back, nothing written); or running when the
/// cancel came (`Abandoned`, buffer kept and its slot parked, A10).
#[test]
fn kernel_answers_during_the_abandonment_are_kept() {
    let cfg = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (h, event_loop) = static_uring::new::<32, 32, 64>(cfg).unwrap();
    let reader = event_loop.metrics_reader();
    let fx = Fixture::new();
    let short = TempFile::with_contents(&FILE[..6]);
    let (data_w, data_r) = socket_pair();
    (&*data_w).write_all(b"hi").unwrap();
    let (closed_w, closed_r) = socket_pair();
    drop(closed_w);
    let (silent_w, silent_r) = socket_pair();
    let (gone, to_gone) = socket_pair();
    drop(gone);
    let (eio_w, eio_r) = socket_pair();

    h.inject_fault(Fault::Result {
        op: FaultOp::Recv,
        result: -libc::EIO,
    });
    h.inject_fault(Fault::Result {
        op: FaultOp::Sync,
        result: -libc::EIO,
    });
    // The first recv and the first sync staged take the injected results.
    let recv_eio = h
        .recv(eio_r.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    let sync_eio = h.sync(fx.read.file.clone()).try_submit().unwrap();
    let recv_silent = h
        .recv(silent_r.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    let recv_data = h.recv(data_r, zeroed(8)).limit(8).try_submit().unwrap();
    let recv_closed = h.recv(closed_r, zeroed(8)).limit(8).try_submit().unwrap();
    let recv_file = h
        .recv(fx.read.file.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    let send_gone = h.send(to_gone, IoBuf::from(MSG)).try_submit().unwrap();
    let send_ok = h.send(fx.a.clone(), IoBuf::from(MSG)).try_submit().unwrap();
    let read_eof = h
        .read_at(fx.read.file.clone(), 100, zeroed(4))
        .limit(4)
        .try_submit()
        .unwrap();
    let read_short = h
        .read_at(short.file.clone(), 0, zeroed(16))
        .limit(16)
        .try_submit()
        .unwrap();
    let read_ok = h
        .read_at(fx.read.file.clone(), AT, zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    let write_ebadf = h
        .write_at(short.read_only(), 0, IoBuf::from(MSG))
        .try_submit()
        .unwrap();
    let write_ok = h
        .write_at(fx.write.file.clone(), 0, IoBuf::from(MSG))
        .try_submit()
        .unwrap();
    let nop = h.nop().try_submit().unwrap();
    const ADMITTED: u64 = 14;
    drop(h);
    let lp = LoopThread::spawn(event_loop);

    let err_of = |r: OpResult<op::Recv>| r.map(|(_, n)| n).map_err(|e| e.error);
    assert_eq!(
        err_of(wait(recv_eio)),
        Err(Error::Os(libc::EIO)),
        "injected"
    );
    assert_eq!(wait(sync_eio), Err(Error::Os(libc::EIO)), "injected");
    let (buf, n) = wait(recv_data).unwrap();
    assert_eq!(&buf[..n], b"hi", "success kept");
    assert_eq!(err_of(wait(recv_closed)), Err(Error::UnexpectedEof));
    assert_eq!(err_of(wait(recv_file)), Err(Error::Os(libc::ENOTSOCK)));
    let (buf, e) = wait(send_gone).unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::UnexpectedEof, MSG), "EPIPE kept");
    assert_eq!(&wait(send_ok).unwrap()[..], MSG);
    let (buf, e) = wait(read_eof).unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 4));
    assert_eq!(&wait(read_ok).unwrap()[..], &FILE[4..12]);
    let (buf, e) = wait(write_ebadf).unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Os(libc::EBADF), MSG));
    // (abandoned, parked) for the write.
    let write = match wait(write_ok) {
        Ok(buf) => {
            assert_eq!(fx.write.contents(), MSG, "Ok: written");
            assert_eq!(&buf[..], MSG);
            (0, 0)
        }
        Err(BufError {
            buf,
            error: Error::Abandoned,
        }) if buf.is_empty() => (1, 1),
        Err(BufError { buf, error: e }) => {
            assert_eq!(
                (e, &buf[..]),
                (Error::Abandoned, MSG),
                "cancelled: buffer back"
            );
            assert_eq!(
                fx.write.contents(),
                b"",
                "cancelled before it ran: nothing written"
            );
            (1, 0)
        }
    };
    assert_eq!(wait(nop), Ok(()));
    // Stopped by the shutdown: a recv the cancel released, a read that got 6 of 16 bytes.
    let (buf, e) = wait(recv_silent).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Abandoned, 8),
        "released: buffer back"
    );
    let (buf, e) = wait(read_short).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Abandoned, 16),
        "short: buffer back"
    );

    lp.join(HANG).unwrap();
    let m = reader.get();
    assert_eq!(
        (m.cancel_sqes, m.abandoned, m.parked, m.completed),
        (ADMITTED, 2 + write.0, write.1, ADMITTED),
        "every request was in the kernel when the abandonment began: {m:?}"
    );
    assert_eq!(drain_socket(&fx.b), MSG);
    drop((silent_w, eio_w));
}

/// Bug regression (a), the resubmission form: a recv short of its `exact` length is requeued in
/// the pass that sees the last handle go, and its resubmitted SQE (an injected NOP carrying
/// `-EIO`) is in the kernel when the zero-budget abandonment starts. The caller gets `Os(EIO)`,
/// not `Abandoned`. The loop is held (a `Stall` waker) while the short data and the last handle's
/// exit reach it, so both are drained in one iteration.
#[test]
fn a_resubmitted_request_failing_during_the_abandonment_keeps_its_error() {
    let cfg = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (h, event_loop) = static_uring::new::<8, 8, 64>(cfg).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (a, b) = socket_pair();
    let x = h.recv(b, zeroed(8)).exact(8).try_submit().unwrap();
    wait_until(HANG, "recv staged", || h.metrics().submitted == 1);
    let held = Held::new(&h);
    h.inject_fault(Fault::Result {
        op: FaultOp::Recv,
        result: -libc::EIO,
    });
    held.hold();
    (&*a).write_all(b"sh").unwrap();
    drop(h);
    thread::sleep(Duration::from_millis(20));
    held.stall.release();
    let (buf, e) = wait(x).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Os(libc::EIO), 8),
        "the kernel's answer during the abandonment is kept"
    );
    held.check();
    lp.join(HANG).unwrap();
    let m = reader.get();
    assert_eq!(
        (m.requeued, m.cancel_sqes, m.abandoned, m.parked),
        (1, 1, 0, 0),
        "resubmitted once, then cancelled by the abandonment: {m:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bug regression (b): a panic on the loop thread
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) for the loop thread `lp` to end, and checks that it panicked.
fn join_panicked<T>(lp: thread::JoinHandle<T>) {
    let start_at = Instant::now();
    while !lp.is_finished() {
        assert!(start_at.elapsed() < HANG, "the loop thread never ended");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(lp.join().is_err(), "the loop thread panicked");
}

/// What the panic scenario leaves behind.
struct AfterPanic {
    /// The socket of the request whose CQE the kernel had posted when the loop died: its slot is
    /// parked, its descriptor owner must stay alive.
    parked: Arc<UnixStream>,
    /// Sockets of requests whose buffers came back (released by the kernel).
    released: Vec<Arc<UnixStream>>,
    metrics: Metrics,
}

/// Loop thread panic with requests in every state (`Storage<8, 4, 64>`; DEFER_TASKRUN, so that
/// the kernel posts socket completions only inside the loop's own `io_uring_enter`):
/// * in the kernel: a recv waited on by a thread (`.wait()`), an async recv, and `parked_x`, a
///   `try_recv` whose data arrives while the loop is held: the kernel posts its CQE right after
///   the nop's, in the enter that submits the nop, and the loop dies handling it (an injected
///   panic at the next recv CQE), so nobody will ever process it;
/// * a nop admitted before (the table is full again), whose CQE comes first; a nop, a read_at
///   and another nop queued behind it, and a caller waiting for a free slot.
fn loop_panic_scenario(h: Handle<8, 4, 64>, event_loop: EventLoop<8, 4, 64>) -> AfterPanic {
    let reader = event_loop.metrics_reader();
    let lp = thread::spawn(move || event_loop.run());
    let submitted = |n| wait_until(HANG, "staged", || h.metrics().submitted == n);
    let (w_peer, w_sock) = socket_pair();
    let (a_peer, a_sock) = socket_pair();
    let (x_peer, x_sock) = socket_pair();

    let op = h.recv(w_sock.clone(), zeroed(8)).limit(8);
    let waiting = Background::spawn(move || {
        op.wait()
            .map(|(_, n)| n)
            .map_err(|e| (e.error, e.buf.capacity()))
    });
    submitted(1);
    let mut polled = Box::pin(h.recv(a_sock.clone(), zeroed(8)).limit(8));
    assert!(poll_once(polled.as_mut()).is_none());
    submitted(2);
    let parked_x = h
        .recv(x_sock.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    submitted(3);
    // The fourth table entry; its completion holds the loop in its CQE drain (the entry is free
    // again meanwhile, its slot taken until its result is).
    let held = Held::new(&h);
    held.hold();
    let nop_before = h.nop().try_submit().unwrap();
    let queued = h.nop().try_submit().unwrap();
    let file = TempFile::with_contents(FILE);
    let queued_read = h
        .read_at(file.file.clone(), 0, zeroed(4))
        .limit(4)
        .try_submit()
        .unwrap();
    let queued_last = h.nop().try_submit().unwrap();
    let op = h.nop();
    let blocked = Background::spawn(move || op.wait());
    thread::sleep(Duration::from_millis(10));
    assert!(!blocked.is_finished(), "no free slot: the caller waits");
    // The held recv's CQE is being handled: the next recv CQE is `parked_x`'s.
    h.inject_fault(Fault::Panic { op: FaultOp::Recv });
    // Deferred until the loop's next enter, which first submits the nop.
    (&*x_peer).write_all(b"lost").unwrap();
    held.stall.release();
    join_panicked(lp);

    let (e, w_returned) = waiting.join(HANG).unwrap_err();
    assert_eq!(e, Error::Abandoned, "thread .wait()");
    let (a_buf, e) = block_on(HANG, polled).unwrap_err().into_parts();
    assert_eq!(e, Error::Abandoned, "async");
    let (x_buf, e) = wait(parked_x).unwrap_err().into_parts();
    assert_eq!(
        (e, x_buf.capacity()),
        (Error::Abandoned, 0),
        "its CQE died with the thread: the kernel may own the buffer, it stays parked"
    );
    assert_eq!(
        wait(nop_before),
        Ok(()),
        "the nop, handled before the panic"
    );
    assert_eq!(
        wait(queued),
        Err(Error::Closed),
        "queued behind the full table"
    );
    let (buf, e) = wait(queued_read).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::Closed, 4),
        "queued behind the full table"
    );
    assert_eq!(
        wait(queued_last),
        Err(Error::Closed),
        "queued behind the full table"
    );
    assert_eq!(blocked.join(HANG), Err(Error::Closed), "waiting for a slot");
    held.check();
    assert_eq!(err(h.nop().try_submit()), Error::Closed);

    let mut released = Vec::new();
    if w_returned == 8 {
        released.push(w_sock.clone());
    }
    if a_buf.capacity() == 8 {
        released.push(a_sock.clone());
    }
    let metrics = reader.get();
    drop((h, reader, w_peer, a_peer, x_peer, w_sock, a_sock));
    AfterPanic {
        parked: x_sock,
        released,
        metrics,
    }
}

/// A config with DEFER_TASKRUN (see `loop_panic_scenario`).
fn deferred() -> Config {
    Config {
        single_issuer: true,
        ..config()
    }
}

/// Bug regression (b), row "panic on the loop thread" (A10, A13), heap storage: the loop
/// thread's join is `Err`; every caller is woken within the bound (in the kernel: `Abandoned`;
/// queued or waiting for a slot: `Closed`); the slot whose completion died with the thread is
/// parked, and after the handles, operations and loop are gone its descriptor owner is still
/// alive (leaked on purpose: the kernel may still use it), while the released ones are freed.
#[test]
fn a_loop_thread_panic_wakes_every_caller_and_frees_no_kernel_owned_memory() {
    let (h, event_loop) = static_uring::new::<8, 4, 64>(deferred()).unwrap();
    let after = loop_panic_scenario(h, event_loop);
    let m = after.metrics;
    assert!(m.parked >= 1, "{m:?}");
    // The two recvs cancelled by the abandonment, and `parked_x`.
    assert!(m.abandoned >= 3, "{m:?}");
    assert!(
        Arc::strong_count(&after.parked) >= 2,
        "the parked request's descriptor was freed with the storage"
    );
    for sock in &after.released {
        assert_eq!(
            Arc::strong_count(sock),
            1,
            "a released request keeps nothing"
        );
    }
}

/// Bug regression (b) with a `static` storage: after the loop thread panicked, the storage can be
/// claimed again; `metrics().parked` still counts the parked slots (not reset by the claim) and
/// every remaining slot works.
#[test]
fn a_static_storage_after_a_loop_panic_is_claimable_and_keeps_counting_parked_slots() {
    static STORAGE: Storage<8, 4, 64> = Storage::new();
    let (h, event_loop) = static_uring::with_storage(&STORAGE, deferred()).unwrap();
    let after = loop_panic_scenario(h, event_loop);
    let parked = after.metrics.parked;
    assert!(parked >= 1, "{:?}", after.metrics);
    assert!(Arc::strong_count(&after.parked) >= 2);

    for round in 0..2 {
        let (h, event_loop) =
            static_uring::with_storage(&STORAGE, config()).expect("claimable after the panic");
        let lp = LoopThread::spawn(event_loop);
        let m = h.metrics();
        assert_eq!(
            m.parked, parked,
            "round {round}: parked slots stay counted: {m:?}"
        );
        assert_eq!(m.completed, 0, "other counters start afresh");
        // Exactly the slots that are not parked can be taken at once, and they all work.
        let usable = 8 - parked as usize;
        let ops: Vec<_> = (0..usable).map(|_| h.nop().try_submit().unwrap()).collect();
        assert_eq!(
            err(h.nop().try_submit()),
            Error::Full,
            "parked slots are not reused"
        );
        for op in ops {
            assert_eq!(wait(op), Ok(()));
        }
        let fx = Fixture::new();
        for kind in kinds() {
            assert_eq!(exercise(&h, kind, &fx), done(kind), "{kind:?}");
        }
        drop(h);
        lp.join(HANG).unwrap();
    }
    assert!(
        Arc::strong_count(&after.parked) >= 2,
        "still leaked, never freed"
    );
}

/// A panic on the loop thread loses only the CQE it was handling: a CQE the kernel posted after
/// it stays in the ring, and the abandonment collects it (the loop takes CQEs off the ring one at
/// a time). Here the loop dies at a nop's CQE while a recv's, with its data, waits behind it: the
/// recv gets its bytes, and only the nop's slot is parked (its CQE died with the thread).
#[test]
fn a_completion_posted_after_the_one_a_loop_panic_hit_is_collected_not_parked() {
    let (h, event_loop) = static_uring::new::<8, 4, 64>(deferred()).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = thread::spawn(move || event_loop.run());
    let (x_peer, x_sock) = socket_pair();
    let recv = h
        .recv(x_sock.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    wait_until(HANG, "staged", || h.metrics().submitted == 1);
    let held = Held::new(&h);
    held.hold();
    h.inject_fault(Fault::Panic { op: FaultOp::Nop });
    let trigger = h.nop().try_submit().unwrap();
    // Deferred until the loop's next enter, which first submits the nop: its CQE comes first.
    (&*x_peer).write_all(b"kept").unwrap();
    held.stall.release();
    join_panicked(lp);
    assert_eq!(
        wait(trigger),
        Err(Error::Abandoned),
        "the nop whose CQE the panic hit"
    );
    let (buf, n) = wait(recv).expect("the recv's CQE, behind it, is collected");
    assert_eq!(&buf[..n], b"kept");
    held.check();
    let m = reader.get();
    assert_eq!(m.parked, 1, "the nop's slot only: {m:?}");
    drop((h, x_peer));
    assert_eq!(Arc::strong_count(&x_sock), 1, "the recv keeps nothing");
}

/// Vectored forms of the short row: capped SQEs resume at the cursor, inside a buffer and across
/// buffer boundaries, until every byte is out, in order.
#[test]
fn short_vectored_transfers_resume_across_buffers() {
    let (h, lp) = start::<8, 8, 64>(config());
    let parts: [&[u8]; 3] = [b"ab", b"cde", b"f"];
    let bufs =
        || -> static_uring::IoBufs { parts.iter().map(|p| IoBuf::from(p.to_vec())).collect() };
    for max in [1, 2] {
        let file = TempFile::new();
        h.inject_fault(Fault::Short {
            op: FaultOp::WriteAtVectored,
            max,
        });
        h.inject_fault(Fault::Short {
            op: FaultOp::WriteAtVectored,
            max,
        });
        let before = h.metrics();
        let back = wait(h.write_at_vectored(file.file.clone(), 1, bufs())).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(file.contents(), b"\0abcdef", "max {max}");
        let m = delta(before, h.metrics());
        assert_eq!((m.submitted, m.requeued), (3, 2), "max {max}: {m:?}");

        let (a, b) = socket_pair();
        h.inject_fault(Fault::Short {
            op: FaultOp::SendVectored,
            max,
        });
        h.inject_fault(Fault::Short {
            op: FaultOp::SendVectored,
            max,
        });
        let back = wait(h.send_vectored(a, bufs())).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(drain_socket(&b), b"abcdef", "max {max}");
    }
    drop(h);
    lp.join(HANG).unwrap();
}

/// Timers (`sleep`) meet none of the kernel's faults themselves (no SQE, no CQE), but a loop that
/// stops on one must end them like any request it holds: a timer waited on by another thread
/// and one polled as a future end `Abandoned` at once (long before their end, and not `Ok`),
/// whether the loop stopped on an unexpected enter error or a panic; a later one is `Closed`.
#[test]
fn timers_waiting_when_the_loop_stops_on_a_fault_end_abandoned() {
    for panic in [false, true] {
        let (h, event_loop) = static_uring::new::<8, 4, 64>(config()).unwrap();
        let lp = thread::spawn(move || event_loop.run());
        let op = h.sleep(Duration::from_secs(60));
        let waiting = Background::spawn(move || op.wait());
        let mut polled = Box::pin(h.sleep(Duration::from_secs(60)));
        assert!(poll_once(polled.as_mut()).is_none());
        thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        if panic {
            h.inject_fault(Fault::Panic { op: FaultOp::Nop });
        } else {
            h.inject_fault(Fault::Enter {
                errno: libc::EFAULT,
            });
        }
        // A nop: its enter fails, or its CQE panics the loop.
        let trigger = h.nop().try_submit().unwrap();
        let joined = with_timeout(HANG, move || lp.join());
        match panic {
            true => assert!(joined.is_err(), "the loop thread panicked"),
            false => assert_eq!(joined.unwrap(), Err(Error::Os(libc::EFAULT))),
        }
        assert_eq!(waiting.join(HANG), Err(Error::Abandoned), "thread .wait()");
        assert_eq!(block_on(HANG, polled), Err(Error::Abandoned), "async");
        assert!(started.elapsed() < Duration::from_secs(30));
        // The nop's own answer: abandoned with the loop, or completed by the abandonment's
        // last enter (the kernel's answer is kept).
        let trigger = wait(trigger);
        assert!(
            matches!(trigger, Ok(()) | Err(Error::Abandoned)),
            "{trigger:?}"
        );
        assert_eq!(wait(h.sleep(Duration::ZERO)), Err(Error::Closed));
    }
}

// ---------------------------------------------------------------------------------------------
// Multishot streams: the rows of a request that yields many results.

/// The receive streams' ring of these tests (one loop at a time: the tests that use it hold
/// `STREAM_LOCK`).
static STREAM_RING: static_uring::BufRing<4, 64> = static_uring::BufRing::new();
static STREAM_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stream_loop() -> (
    std::sync::MutexGuard<'static, ()>,
    Handle<8, 4, 64>,
    static_uring::EventLoop<8, 4, 64>,
) {
    let guard = STREAM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (h, mut event_loop) = static_uring::new::<8, 4, 64>(config()).unwrap();
    event_loop.register_buf_ring(&STREAM_RING).unwrap();
    (guard, h, event_loop)
}

/// The kernel ends a receive stream with an error (injected: its SQE becomes a NOP whose CQE,
/// without `F_MORE`, carries the errno), or with a byte count and no buffer (a kernel surprise):
/// `next` gives what was queued first, then the error, for good; the loop carries on.
#[test]
fn stream_ended_by_the_kernel_gives_its_queue_then_the_error() {
    for (result, expected) in [
        (-libc::ECONNRESET, Error::Os(libc::ECONNRESET)),
        (-libc::EIO, Error::Os(libc::EIO)),
        (5, Error::Os(libc::EIO)),
        (0, Error::UnexpectedEof),
    ] {
        let (_guard, h, event_loop) = stream_loop();
        let lp = LoopThread::spawn(event_loop);
        h.inject_fault(Fault::Result {
            op: FaultOp::RecvMulti,
            result,
        });
        let (_a, b) = socket_pair();
        let mut stream = h.recv_multi(b, &STREAM_RING).unwrap();
        assert_eq!(stream.next().timeout(HANG).wait().unwrap_err(), expected);
        assert_eq!(
            stream.next().timeout(HANG).wait().unwrap_err(),
            expected,
            "for good"
        );
        still_serves(&h);
        drop((stream, h));
        lp.join(HANG).unwrap();
    }
}

/// `ENOBUFS` while the ring still has buffers (injected; in real life: buffers given back
/// before the CQE was read): the stream is armed again at once, not left waiting for a lease
/// that may never come; the data then flows.
#[test]
fn stream_told_the_ring_is_dry_while_it_is_not_arms_again_at_once() {
    let (_guard, h, event_loop) = stream_loop();
    let lp = LoopThread::spawn(event_loop);
    h.inject_fault(Fault::Result {
        op: FaultOp::RecvMulti,
        result: -libc::ENOBUFS,
    });
    let (a, b) = socket_pair();
    let mut stream = h.recv_multi(b, &STREAM_RING).unwrap();
    wait_until(HANG, "the dry answer", || h.metrics().buf_ring_dry == 1);
    (&*a).write_all(MSG).unwrap();
    assert_eq!(&stream.next().timeout(HANG).wait().unwrap()[..], MSG);
    assert!(h.metrics().stream_rearms >= 1);
    drop((stream, h));
    lp.join(HANG).unwrap();
}

/// An accept error the listener can recover from (injected `EMFILE`) is one result: the stream
/// goes on; one it cannot (`EINVAL`: not listening) ends it.
#[test]
fn stream_accept_errors_are_results_or_ends() {
    let (h, lp) = start::<8, 4, 64>(config());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    h.inject_fault(Fault::Result {
        op: FaultOp::AcceptMulti,
        result: -libc::EMFILE,
    });
    let mut stream = h.accept_multi(listener).unwrap();
    assert_eq!(
        stream.next().timeout(HANG).wait().unwrap_err(),
        Error::Os(libc::EMFILE)
    );
    let _client = TcpStream::connect(addr).unwrap();
    assert!(
        stream.next().timeout(HANG).wait().is_ok(),
        "the stream went on"
    );
    h.inject_fault(Fault::Result {
        op: FaultOp::AcceptMulti,
        result: -libc::EINVAL,
    });
    // Connections to re-arm it (once each) so that the fault reaches an SQE.
    let _more: Vec<_> = (0..op::ACCEPT_QUEUE + 1)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut end = None;
    for _ in 0..op::ACCEPT_QUEUE * 2 + 2 {
        if let Err(e) = stream.next().timeout(HANG).wait() {
            end = Some(e);
            break;
        }
    }
    assert_eq!(end, Some(Error::Os(libc::EINVAL)), "ended for good");
    drop((stream, h));
    lp.join(HANG).unwrap();
}

/// The loop stops on an enter error while a stream is armed and a `next` waits: the waiting
/// `next` ends `Abandoned`, the stream afterwards `Abandoned` or `Closed`; leases taken before
/// stay valid; no buffer the kernel may fill is handed out.
#[test]
fn stream_live_when_the_loop_stops_on_a_fault() {
    let (_guard, h, event_loop) = stream_loop();
    let lp = LoopThread::spawn(event_loop);
    let (a, b) = socket_pair();
    let mut stream = h.recv_multi(b, &STREAM_RING).unwrap();
    (&*a).write_all(MSG).unwrap();
    let lease = stream.next().timeout(HANG).wait().unwrap();
    let h2 = h.clone();
    let trigger = Background::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        h2.inject_fault(Fault::Enter {
            errno: libc::EFAULT,
        });
        // Any completion makes the loop enter again.
        let _ = h2.nop().try_submit();
    });
    let waiting = stream.next().timeout(HANG).wait();
    assert_eq!(waiting.unwrap_err(), Error::Abandoned);
    assert_eq!(lp.join(HANG), Err(Error::Os(libc::EFAULT)));
    let after = stream.next().timeout(HANG).wait().unwrap_err();
    assert!(
        matches!(after, Error::Abandoned | Error::Closed),
        "{after:?}"
    );
    assert_eq!(&lease[..], MSG);
    trigger.join(HANG);
    drop((stream, lease, h));
}
