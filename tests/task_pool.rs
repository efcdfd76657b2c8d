//! A TCP echo server in loop-thread mode with one `TaskPool` task per connection: the pool runs
//! every connection on the loop thread, says `Busy` when full, and the steady state (messages
//! echoed through pool tasks) allocates nothing. This binary holds one test, so the process-wide
//! allocation count is this test's alone.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::HANG;
use static_uring::BufError;
use static_uring::{Config, Error, Fd, Handle, IoBuf, IoBufMut, TaskPool};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

const CONNECTIONS: usize = 4;
const MESSAGES: usize = 2_000;

type Io = Handle<16, 16, 64>;

/// Echoes 64-byte messages until the peer closes.
async fn echo(io: Io, stream: Fd) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(64);
    loop {
        // The receive as a `LocalOp` (finished without a compare-exchange), the send as a plain
        // `Op`: both paths are measured.
        match io.recv(&stream, buf).exact(64).local().await {
            Ok((data, _)) => {
                let data = io.send(&stream, IoBuf::from(data)).await;
                buf = data.map_err(|e| e.error)?.into_mut().expect("owned buffer");
                buf.clear();
            }
            Err(BufError {
                error: Error::UnexpectedEof,
                ..
            }) => return Ok(()),
            Err(BufError { error: e, .. }) => return Err(e),
        }
    }
}

#[test]
fn pool_tasks_serve_connections_on_the_loop_thread_without_allocating() {
    let (io, event_loop) = static_uring::new::<16, 16, 64>(Config::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let listener = Fd::from(listener);
    let served = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));

    let (s, b) = (served.clone(), busy.clone());
    let server = std::thread::spawn(move || {
        let pool = TaskPool::<_, CONNECTIONS>::leak();
        let main = async move {
            // One connection more than the pool has room for: that one is refused (Busy).
            for _ in 0..=CONNECTIONS {
                let stream = io.accept(&listener).await.unwrap();
                let (io, s) = (io.clone(), s.clone());
                let task = async move {
                    if echo(io, Fd::from(stream)).await.is_ok() {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                };
                if pool.spawn(task).is_err() {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(io);
        };
        // `run_local`: the runner holds the pool on the loop thread, and the loop's wakes of
        // its tasks are plain stores.
        let outcome = event_loop.block_on(pool.run_local(main));
        (outcome, pool.panics())
    });

    let barrier = Arc::new(Barrier::new(CONNECTIONS + 1));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|k| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(HANG)).unwrap();
                let mut msg = [k as u8; 64];
                let mut back = [0u8; 64];
                // One round trip before measuring: the connection's task is running.
                stream.write_all(&msg).unwrap();
                stream.read_exact(&mut back).unwrap();
                barrier.wait(); // every client is served
                barrier.wait(); // measuring
                for i in 0..MESSAGES {
                    msg[0] = i as u8;
                    stream.write_all(&msg).unwrap();
                    stream.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                }
                barrier.wait();
            })
        })
        .collect();
    // Once every client is served, one connection more: accepted, then dropped by the server
    // because the pool is full (end of stream here).
    barrier.wait();
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(HANG)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        extra.read(&mut byte).unwrap(),
        0,
        "the pool was full: closed"
    );

    barrier.wait();
    let before = counting_alloc::AllocCount::now();
    barrier.wait();
    let allocated = counting_alloc::AllocCount::now().since(before).allocs;
    for c in clients {
        c.join().unwrap();
    }
    let (outcome, panics) = server.join().unwrap();
    outcome.unwrap();
    assert_eq!(panics, 0);
    assert_eq!(busy.load(Ordering::Relaxed), 1, "one spawn was refused");
    assert_eq!(served.load(Ordering::Relaxed), CONNECTIONS);
    assert_eq!(
        allocated,
        0,
        "{} round trips through pool tasks allocated",
        CONNECTIONS * MESSAGES
    );
}
