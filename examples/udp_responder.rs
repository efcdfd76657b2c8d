//! A UDP responder on a pinned loop, two ways, measured in the same run: loop-thread mode
//! (`EventLoop::spawn_with`: the responder is a future on the placed loop thread) against a loop
//! started by `EventLoop::spawn` with the responder on another thread calling `.wait()`.
//!
//! A client on this thread (pinned to the first CPU; the loop takes the last) sends 64-byte
//! datagrams over loopback and waits for each echo; the example prints round trips per second
//! and the p50/p99 round-trip time of each mode, in interleaved rounds after a warm-up (the
//! machine's speed drifts between runs). In the `.wait()` mode the responder thread floats: it
//! shares a CPU with the client or the loop, which is the cost of the cross-thread hop that
//! loop-thread mode removes.
//!
//! ```sh
//! cargo run --release --example udp_responder            # 3 rounds of 20,000 round trips
//! cargo run --release --example udp_responder -- 5 50000 # rounds, round trips per round
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use static_uring::{Config, Error, Fd, Handle, IoBuf, IoBufMut};

type Io = Handle<16, 16, 1024>;

/// What the client sends to stop the responder.
const STOP: &[u8] = b"stop";

/// The loop's placement: the last CPU (the client is pinned to the first), default spin.
fn config() -> Config {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Config {
        cpu: Some(cpus - 1),
        idle_spin: Duration::from_micros(50),
        ..Config::default()
    }
}

/// Loop-thread mode: the responder is a future on the loop thread.
async fn respond_async(io: Io, socket: Fd) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(64);
    loop {
        let (data, n, from) = io.recv_from(&socket, buf).await.map_err(|e| e.error)?;
        if &data[..n] == STOP {
            return Ok(());
        }
        let sent = io.send_to(&socket, IoBuf::from(data), from).await;
        buf = sent.map_err(|e| e.error)?.into_mut().expect("owned buffer");
        buf.clear();
    }
}

/// Cross-thread mode: the same responder, blocking on `.wait()` on its own thread.
fn respond_blocking(io: Io, socket: Fd) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(64);
    loop {
        let (data, n, from) = io.recv_from(&socket, buf).wait().map_err(|e| e.error)?;
        if &data[..n] == STOP {
            return Ok(());
        }
        let sent = io.send_to(&socket, IoBuf::from(data), from).wait();
        buf = sent.map_err(|e| e.error)?.into_mut().expect("owned buffer");
        buf.clear();
    }
}

/// Sends `count` datagrams one at a time to `server`; the sorted round-trip times.
fn client(server: SocketAddr, count: usize) -> Vec<Duration> {
    pin_to(0);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = [7u8; 64];
    let mut reply = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        socket.send(&message).unwrap();
        let n = loop {
            match socket.recv(&mut reply) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.expect("an echo within 5 s"),
            }
        };
        assert_eq!(n, 64);
        times.push(start.elapsed());
    }
    socket.send(STOP).unwrap();
    times.sort();
    times
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET gets an index below CPU_SETSIZE; pid 0 is the
    // calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "pin the client: {}", std::io::Error::last_os_error());
    }
}

/// A bound responder socket and its address.
fn server_socket() -> (Fd, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (Fd::from(Arc::new(socket)), addr)
}

/// One round of `count` round trips in loop-thread mode (`spawn_with`).
fn round_pinned_loop_thread(count: usize) -> Vec<Duration> {
    let (io, event_loop) = static_uring::new::<16, 16, 1024>(config()).unwrap();
    let (socket, addr) = server_socket();
    let thread = event_loop
        .spawn_with("udp-loop", move || respond_async(io, socket))
        .expect("the placement is allowed");
    let times = client(addr, count);
    thread.join().unwrap().unwrap().unwrap();
    times
}

/// One round with `spawn` and a `.wait()` responder on another thread.
fn round_spawn_and_wait(count: usize) -> Vec<Duration> {
    let (io, event_loop) = static_uring::new::<16, 16, 1024>(config()).unwrap();
    let (socket, addr) = server_socket();
    let thread = event_loop
        .spawn("udp-loop")
        .expect("the placement is allowed");
    let responder = std::thread::spawn(move || respond_blocking(io, socket));
    let times = client(addr, count);
    responder.join().unwrap().unwrap();
    thread.join().unwrap().unwrap();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(name: &str, times: &[Duration]) {
    let total: Duration = times.iter().sum();
    println!(
        "{name:<28} {:>9.0} round trips/s   p50 {:>6.1} us   p99 {:>6.1} us",
        times.len() as f64 / total.as_secs_f64(),
        percentile(times, 0.50).as_secs_f64() * 1e6,
        percentile(times, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let rounds = args.next().flatten().unwrap_or(3);
    let count = args.next().flatten().unwrap_or(20_000);
    // Warm-up (first ring, first page faults), not reported.
    round_pinned_loop_thread(2_000);
    round_spawn_and_wait(2_000);
    for round in 1..=rounds {
        println!("round {round}");
        report(
            "  spawn_with (loop thread)",
            &round_pinned_loop_thread(count),
        );
        report("  spawn + .wait()", &round_spawn_and_wait(count));
    }
}
