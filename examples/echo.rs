//! An echo over TCP loopback, both ends served through one static-uring loop.
//!
//! The server thread receives up to 64 bytes and sends them back; the main thread sends 64-byte
//! messages and waits for each echo, timing every round trip. Prints round trips per second and
//! the p50 / p99 latency.
//!
//! ```text
//! cargo run --release --example echo [seconds] [idle_spin_us]
//! ```
//! Three threads (loop, echo server, client) spin while idle; on a machine with fewer cores than
//! that, a shorter spin (or 0, pure blocking) can be faster.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use static_uring::BufError;
use static_uring::{Config, Error, IoBuf, IoBufMut, Storage};

const MESSAGE: usize = 64;

/// All of the loop's memory, in a static: the loop never touches the heap.
static STORAGE: Storage<64, 32, 1024> = Storage::new();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(2), |s| s.parse())?;
    let config = match std::env::args().nth(2) {
        Some(us) => Config {
            idle_spin: Duration::from_micros(us.parse()?),
            ..Config::default()
        },
        None => Config::default(),
    };
    println!("idle_spin {:?}", config.idle_spin);
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config)?;
    let loop_thread = std::thread::spawn(move || event_loop.run());

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = Arc::new(TcpStream::connect(listener.local_addr()?)?);
    let server = Arc::new(listener.accept()?.0);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;

    let server_handle = handle.clone();
    let echo = std::thread::spawn(move || -> Result<u64, Error> {
        let mut buf = IoBufMut::with_capacity(MESSAGE);
        let mut echoed = 0;
        loop {
            let (filled, n) = match server_handle
                .recv(server.clone(), buf)
                .limit(MESSAGE)
                .wait()
            {
                Ok(ok) => ok,
                Err(BufError {
                    error: Error::UnexpectedEof,
                    ..
                }) => return Ok(echoed), // client closed
                Err(BufError { error: e, .. }) => return Err(e),
            };
            let _ = n;
            let sent = server_handle
                .send(server.clone(), IoBuf::from(filled))
                .wait()
                .map_err(|e| e.error)?;
            buf = IoBufMut::from(sent.into_vec().expect("heap buffer"));
            buf.clear();
            echoed += 1;
        }
    });

    let mut message = IoBuf::from(vec![7u8; MESSAGE]);
    let mut reply = IoBufMut::with_capacity(MESSAGE);
    let mut latencies = Vec::with_capacity(1 << 20);
    let end = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    while Instant::now() < end {
        let t0 = Instant::now();
        message = handle
            .send(client.clone(), message)
            .wait()
            .map_err(|e| e.error)?;
        let (buf, _) = handle
            .recv(client.clone(), reply)
            .exact(MESSAGE)
            .wait()
            .map_err(|e| e.error)?;
        latencies.push(t0.elapsed());
        reply = buf;
        reply.clear();
    }
    let elapsed = start.elapsed();
    client.shutdown(std::net::Shutdown::Both)?;
    let echoed = echo.join().expect("echo thread")?;

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{} round trips in {:.2?}: {:.0} round trips/s, p50 {:.1?}, p99 {:.1?} (echoed {echoed})",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
    let metrics = handle.metrics();
    println!(
        "loop: {} SQEs, {} enters, {} wake-ups",
        metrics.submitted, metrics.enters, metrics.wakeups
    );
    drop(handle);
    loop_thread.join().expect("loop thread")?;
    Ok(())
}
