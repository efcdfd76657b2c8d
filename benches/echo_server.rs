//! `echo_server`: static-uring's TCP echo servers measured by scripts/echo-bench (with
//! `echo_load` as the client), in loop-thread mode: `EventLoop::block_on` runs an accept loop on
//! `accept_multi` that spawns one `TaskPool` task per connection.
//!
//! ```text
//! echo_server --mode multishot|recv --port P --size M
//! ```
//!
//! * `--mode multishot`: each connection receives with `recv_multi` into one shared `BufRing`
//!   (`RING_COUNT` buffers of `RING_SIZE` bytes, in `.bss`) and sends each lease's bytes back
//!   with `send`, no copy; an idle connection holds no receive buffer.
//! * `--mode recv`: one `recv(..).exact(M)` per message into the connection's own buffer of M
//!   bytes (allocated when the connection is accepted), sent back with `send`.
//!
//! It stops on `SIGTERM` or `SIGINT` (`static_uring::signal`, then `Handle::shutdown`) and prints
//! one JSON line: messages echoed (bytes echoed / M), the process's allocations while serving and
//! per message, the receive-buffer memory. Up to `CONNECTIONS` connections are served at once
//! (more are accepted and closed).
//!
//! `accept_multi` closes connections that the kernel accepts while the stream already holds
//! `op::ACCEPT_QUEUE` (8) that nobody has taken (`stream_refused` in the JSON line). With
//! DEFER_TASKRUN a burst of connects lands in one pass, so more than 9 connects at once lose
//! some: `echo_load` connects one at a time and makes one round trip on each before the next.
//! `ECHO_PLAIN=1` turns DEFER_TASKRUN (`Config::single_issuer`) off.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::time::Duration;

use static_uring::signal::{Signals, SIGINT, SIGTERM};
use static_uring::{BufError, BufRing, Config, Error, Fd, IoBuf, IoBufMut, Storage};
use static_uring::{Handle, TaskPool};

/// The tests' counting global allocator: the process's allocations, reported at exit.
#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

/// Connections served at once.
const CONNECTIONS: usize = 1024;
/// Slots: per connection its receive (the stream's request, or the `recv`), the `next` waiting on
/// the stream and the `send` in flight, plus the accept stream, its `next` and the signal read.
const SLOTS: usize = 4096;
/// Requests in the kernel at once: per connection its armed receive and its send.
const RING: usize = 4096;
const WHEEL: usize = 64;
/// The shared receive ring of `--mode multishot`: 1,024 buffers of 4 KiB (4 MiB, fixed whatever
/// the number of connections). A 4 KiB message fits one buffer; 1,024 connections with one
/// message each in flight never run it dry (a dry ring would be waited out, not lose data).
const RING_COUNT: usize = 1024;
const RING_SIZE: usize = 4096;

type Io = Handle<SLOTS, RING, WHEEL>;

static STORAGE: Storage<SLOTS, RING, WHEEL> = Storage::new();
static RECV_RING: BufRing<RING_COUNT, RING_SIZE> = BufRing::new();

thread_local! {
    /// Bytes echoed (sent back) by every connection; the loop thread's alone.
    static ECHOED: Cell<u64> = const { Cell::new(0) };
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Multishot,
    Recv,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut port, mut size) = (Mode::Multishot, 7700u16, 64usize);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => {
                mode = match value.as_str() {
                    "multishot" => Mode::Multishot,
                    "recv" => Mode::Recv,
                    _ => return Err(format!("--mode multishot|recv, not {value}").into()),
                }
            }
            "--port" => port = value.parse()?,
            "--size" => size = value.parse()?,
            _ => {
                return Err(format!(
                    "usage: echo_server --mode multishot|recv --port P --size M (not {flag})"
                )
                .into())
            }
        }
    }
    if size == 0 {
        return Err("--size must be at least 1".into());
    }
    let config = Config {
        // At the stop, requests in flight (idle connections' receives, the accept) get this long.
        shutdown_timeout: Some(Duration::from_millis(200)),
        // DEFER_TASKRUN: completions run as task work at the loop's next enter (as in kv).
        single_issuer: std::env::var_os("ECHO_PLAIN").is_none(),
        ..Config::default()
    };
    let (io, mut event_loop) = static_uring::with_storage(&STORAGE, config)?;
    // Before any other thread starts (the loop runs on this one).
    let mut signals = Signals::new(&io, &[SIGTERM, SIGINT])?;
    if mode == Mode::Multishot {
        event_loop.register_buf_ring(&RECV_RING)?;
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let listener = Fd::from(OwnedFd::from(listener));
    eprintln!("echo_server: listening on 127.0.0.1:{port}");

    let reader = event_loop.metrics_reader();
    let start = counting_alloc::AllocCount::now();
    let conns = TaskPool::<_, CONNECTIONS>::leak();
    let acceptor = TaskPool::<_, 1>::leak();
    let stopper = io.clone();
    let main = async move {
        let accept_loop = async move {
            let mut accepted = match io.accept_multi(&listener) {
                Ok(stream) => stream,
                Err(e) => return eprintln!("echo_server: accept_multi: {e}"),
            };
            loop {
                let socket = match accepted.next().await {
                    Ok(socket) => Fd::from(socket),
                    // The shutdown.
                    Err(Error::Abandoned | Error::Closed) => return,
                    Err(e) => {
                        eprintln!("echo_server: accept: {e}");
                        continue;
                    }
                };
                // A full pool drops the task (and its socket): the connection closes.
                if conns.spawn(serve(io.clone(), socket, mode, size)).is_err() {
                    eprintln!("echo_server: {CONNECTIONS} connections already: one refused");
                }
            }
        };
        assert!(acceptor.spawn(accept_loop).is_ok(), "one acceptor");
        if let Err(e) = signals.recv().await {
            eprintln!("echo_server: the loop stopped ({e})");
        }
        stopper.shutdown();
    };
    event_loop.block_on(conns.run(acceptor.run(main)))?;

    let allocs = counting_alloc::AllocCount::now().since(start).allocs;
    let messages = ECHOED.with(Cell::get) / size as u64;
    let (name, ring_total, per_conn) = match mode {
        Mode::Multishot => ("static-uring multishot", RING_COUNT * RING_SIZE, 0),
        Mode::Recv => ("static-uring recv", 0, size),
    };
    let m = reader.get();
    println!(
        "{{\"server\": \"{name}\", \"messages\": {messages}, \"allocs\": {allocs}, \"allocs_per_msg\": {:.6}, \"recv_bytes_per_conn\": {per_conn}, \"recv_bytes_shared\": {ring_total}, \"stream_refused\": {}, \"buf_ring_dry\": {}, \"stream_rearms\": {}}}",
        allocs as f64 / messages.max(1) as f64,
        m.stream_refused,
        m.buf_ring_dry,
        m.stream_rearms
    );
    Ok(())
}

/// Echoes one connection until it closes or the loop stops.
async fn serve(io: Io, socket: Fd, mode: Mode, size: usize) {
    let end = match mode {
        Mode::Multishot => multishot(&io, &socket).await,
        Mode::Recv => recv(&io, &socket, size).await,
    };
    match end {
        Ok(()) | Err(Error::UnexpectedEof | Error::Closed | Error::Abandoned) => {}
        Err(Error::Os(libc::ECONNRESET)) => {}
        Err(e) => eprintln!("echo_server: connection: {e}"),
    }
}

/// `--mode multishot`: every received chunk goes straight back (the lease becomes the send's
/// buffer, no copy; the ring buffer goes back when the send hands it back and it is dropped).
async fn multishot(io: &Io, socket: &Fd) -> Result<(), Error> {
    let mut chunks = io.recv_multi(socket, &RECV_RING)?;
    loop {
        let lease = chunks.next().await?;
        ECHOED.with(|n| n.set(n.get() + lease.len() as u64));
        drop(
            io.send(socket, IoBuf::from(lease))
                .await
                .map_err(|e| e.error)?,
        );
    }
}

/// `--mode recv`: one exact receive of a whole message into the connection's buffer, then its
/// send.
async fn recv(io: &Io, socket: &Fd, size: usize) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(size);
    loop {
        let (data, _) = io
            .recv(socket, buf)
            .exact(size)
            .await
            .map_err(|BufError { error, .. }| error)?;
        let sent = io.send(socket, IoBuf::from(data)).await;
        ECHOED.with(|n| n.set(n.get() + size as u64));
        buf = sent
            .map_err(|e| e.error)?
            .into_mut()
            .expect("a Vec-backed buffer");
        buf.clear();
    }
}
