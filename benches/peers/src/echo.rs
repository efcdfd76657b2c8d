//! `peers echo-server`: the peers' TCP echo servers for static-uring's many-connection echo
//! benchmark (scripts/echo-bench, measured by static-uring-bench's `echo_load`).
//!
//! ```text
//! peers echo-server --runtime monoio|compio --port P --size M
//! ```
//!
//! * `monoio`: monoio 0.2, io_uring driver, one task per connection: one `read_exact` of M bytes
//!   per message into the connection's own buffer (allocated at accept), `write_all` back.
//! * `compio`: compio 0.19, one task per connection: `AsyncReadMulti::read_multi`, a multishot
//!   receive into the runtime's buffer pool (an io_uring provided-buffer ring of `POOL_COUNT`
//!   buffers of `POOL_SIZE` bytes, the same shape as static-uring's multishot server), each
//!   received `BufferRef` written back with `write_all` (no copy).
//!
//! Both run one thread with a ring of 4,096 entries. `SIGTERM` or `SIGINT` (read by a thread
//! that waits for them) prints one JSON line (messages echoed = bytes echoed / M, the
//! process's allocations while serving and per message, the receive-buffer memory) and exits.

use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes echoed by every connection (one thread writes; the signal thread reads at the end).
static ECHOED: AtomicU64 = AtomicU64::new(0);

/// compio's buffer pool: as static-uring's multishot server's `BufRing<1024, 4096>`.
const POOL_COUNT: u16 = 1024;
const POOL_SIZE: usize = 4096;
/// Submission queue entries of either runtime (static-uring's server: `RING = 4096`).
const ENTRIES: u32 = 4096;

const USAGE: &str = "usage: peers echo-server --runtime monoio|compio --port P --size M";

/// Runs the server the arguments (after `echo-server`) ask for; never returns.
pub fn run(args: &[String]) -> ! {
    let mut it = args.iter();
    let (mut runtime, mut port, mut size) = (String::new(), 7700u16, 64usize);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            fail(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--runtime" => runtime = value.clone(),
            "--port" => port = value.parse().unwrap_or_else(|_| fail("--port")),
            "--size" => size = value.parse().unwrap_or_else(|_| fail("--size")),
            _ => fail(&format!("unknown argument {flag}")),
        }
    }
    if size == 0 {
        fail("--size must be at least 1");
    }
    let (name, per_conn, shared) = match runtime.as_str() {
        "monoio" => ("monoio 0.2 (io_uring)", size, 0),
        "compio" => (
            "compio 0.19 (read_multi)",
            0,
            POOL_COUNT as usize * POOL_SIZE,
        ),
        _ => fail("--runtime monoio|compio"),
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| fail(&format!("bind 127.0.0.1:{port}: {e}")));
    stop_on_signal(name, size, per_conn, shared);
    eprintln!("echo-server ({name}): listening on 127.0.0.1:{port}");
    match runtime.as_str() {
        "monoio" => monoio_server(listener, size),
        _ => compio_server(listener),
    }
    std::process::exit(0);
}

fn fail(why: &str) -> ! {
    eprintln!("peers echo-server: {why}\n{USAGE}");
    std::process::exit(2);
}

/// Blocks `SIGTERM` and `SIGINT` in this thread (so in every thread started after it) and
/// starts a thread that waits for one, prints the JSON line and ends the process.
fn stop_on_signal(name: &'static str, size: usize, per_conn: usize, shared: usize) {
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; the calls only write it and this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let start = crate::harness::alloc_counts();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `set` and `signal` are live for the call.
        unsafe { libc::sigwait(&set, &mut signal) };
        let (allocs, _) = crate::harness::alloc_counts();
        let allocs = allocs - start.0;
        let messages = ECHOED.load(Relaxed) / size as u64;
        println!(
            "{{\"server\": \"{name}\", \"messages\": {messages}, \"allocs\": {allocs}, \"allocs_per_msg\": {:.6}, \"recv_bytes_per_conn\": {per_conn}, \"recv_bytes_shared\": {shared}}}",
            allocs as f64 / messages.max(1) as f64
        );
        std::process::exit(0);
    });
}

/// monoio: one `read_exact` per message into the connection's buffer of `size` bytes.
fn monoio_server(listener: std::net::TcpListener, size: usize) {
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(ENTRIES)
        .build()
        .unwrap_or_else(|e| fail(&format!("monoio io_uring driver: {e}")));
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener).expect("monoio listener");
        loop {
            let (mut conn, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("echo-server (monoio): accept: {e}");
                    continue;
                }
            };
            monoio::spawn(async move {
                let mut buf = vec![0u8; size];
                loop {
                    let (res, back) = conn.read_exact(buf).await;
                    if res.is_err() {
                        return;
                    }
                    let (res, back) = conn.write_all(back).await;
                    if res.is_err() {
                        return;
                    }
                    ECHOED.fetch_add(size as u64, Relaxed);
                    buf = back;
                }
            });
        }
    });
}

/// compio: a multishot receive into the runtime's provided-buffer pool per connection, each
/// received buffer written back as it is.
fn compio_server(listener: std::net::TcpListener) {
    use compio::io::{AsyncReadMulti, AsyncWriteExt};
    use futures::StreamExt;
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor
        .capacity(ENTRIES)
        .buffer_pool_size(NonZeroU16::new(POOL_COUNT).expect("non-zero"))
        .buffer_pool_buffer_len(POOL_SIZE);
    let rt = compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .unwrap_or_else(|e| fail(&format!("compio runtime: {e}")));
    rt.block_on(async move {
        let listener = compio::net::TcpListener::from_std(listener).expect("compio listener");
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("echo-server (compio): accept: {e}");
                    continue;
                }
            };
            compio::runtime::spawn(async move {
                let mut reader = &conn;
                let chunks = reader.read_multi(0);
                let mut chunks = std::pin::pin!(chunks);
                let mut writer = &conn;
                while let Some(chunk) = chunks.next().await {
                    let buf = match chunk {
                        Ok(buf) => buf,
                        // The pool ran dry (ENOBUFS): the stream arms a new receive.
                        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => continue,
                        Err(_) => return,
                    };
                    let n = buf.len() as u64;
                    let compio::BufResult(res, _) = writer.write_all(buf).await;
                    if res.is_err() {
                        return;
                    }
                    ECHOED.fetch_add(n, Relaxed);
                }
            })
            .detach();
        }
    });
}
