//! `send` against `send_zc` over TCP loopback: throughput at 64 B, 4, 16 and 64 KiB, with one
//! request in flight and with a window of 16, and how many notifications said the kernel copied.
//!
//! ```text
//! cargo run --release -p static-uring-bench --bin zc -- [--secs S] [--reps N]
//! ```
//! A receiver thread reads and discards everything. Each row runs `N` times (default 3, `send`
//! and `send_zc` alternating; the median by throughput is printed), `S` seconds each (default 1),
//! on a fresh connection (`TCP_NODELAY` on the sender); the window keeps `depth` requests in the loop,
//! each awaited in submission order and its buffer resubmitted at once. Prints one line per row.
//!
//! What to expect on loopback: the kernel copies every zero-copy send to a local peer (at
//! delivery; the notification says `IORING_NOTIF_USAGE_ZC_COPIED`), so `send_zc` does the copy
//! `send` does plus the page pinning and a second CQE. And a TCP notification comes only when the
//! peer has acknowledged the bytes (the socket's write queue holds the pages until then), so one
//! request at a time waits for the receiver's delayed ACK.

use std::collections::VecDeque;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use static_uring::op::Operation;
use static_uring::{BufError, Config, Handle, IoBuf, Op};

type H = Handle<64, 64, 64>;

/// One row's result.
struct Row {
    ops: u64,
    bytes: u64,
    secs: f64,
    notifications: u64,
    copied: u64,
}

/// Runs `send` (built by `make`) of `size`-byte buffers, `depth` at a time, for `secs`.
fn run<O, F>(handle: &H, make: F, size: usize, depth: usize, secs: f64) -> Row
where
    O: Operation<Output = IoBuf, Error = BufError<IoBuf>>,
    F: Fn(&H, Arc<TcpStream>, IoBuf) -> Op<O, 64, 64, 64>,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    a.set_nodelay(true).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut sink = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match b.read(&mut sink) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let a = Arc::new(a);
    let before = handle.metrics();
    let mut window: VecDeque<Op<O, 64, 64, 64>> = VecDeque::new();
    let mut spare: Vec<IoBuf> = (0..depth).map(|_| IoBuf::from(vec![0x5a; size])).collect();
    let (mut ops, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    loop {
        while let Some(buf) = spare.pop() {
            let op = make(handle, a.clone(), buf);
            window.push_back(op.try_submit().unwrap_or_else(|_| panic!("submit")));
        }
        let Some(op) = window.pop_front() else { break };
        let buf = op.wait().unwrap_or_else(|e| panic!("send: {:?}", e.error));
        ops += 1;
        bytes += buf.len() as u64;
        if Instant::now() < end {
            spare.push(buf);
        } else if window.is_empty() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    a.shutdown(Shutdown::Write).unwrap();
    let received = receiver.join().unwrap();
    assert_eq!(received, bytes, "every byte arrived");
    let m = handle.metrics();
    Row {
        ops,
        bytes,
        secs,
        notifications: m.zero_copy_notifications - before.zero_copy_notifications,
        copied: m.zero_copy_copied - before.zero_copy_copied,
    }
}

/// The row of median throughput.
fn median(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| (a.bytes as f64 / a.secs).total_cmp(&(b.bytes as f64 / b.secs)));
    rows.swap_remove(rows.len() / 2)
}

fn main() {
    let (mut secs, mut reps) = (1.0, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()).expect("--secs S"),
            "--reps" => reps = it.next().and_then(|s| s.parse().ok()).expect("--reps N"),
            "--bench" => {}
            other => panic!("unknown argument {other}; usage: zc [--secs S] [--reps N]"),
        }
    }
    let config = Config {
        idle_spin: Duration::from_micros(50),
        ..Config::default()
    };
    let (handle, event_loop) = static_uring::new::<64, 64, 64>(config).unwrap();
    let lp = std::thread::spawn(move || event_loop.run());
    println!(
        "{:>6} {:>5} {:>8} {:>12} {:>10} {:>14}",
        "size", "depth", "op", "ops/s", "MB/s", "copied/notif"
    );
    for size in [64usize, 4096, 16384, 65536] {
        for depth in [1usize, 16] {
            let (mut plains, mut zcs) = (Vec::new(), Vec::new());
            for _ in 0..reps.max(1) {
                plains.push(run(
                    &handle,
                    |h, fd, buf| h.send(fd, buf),
                    size,
                    depth,
                    secs,
                ));
                zcs.push(run(
                    &handle,
                    |h, fd, buf| h.send_zc(fd, buf),
                    size,
                    depth,
                    secs,
                ));
            }
            let (plain, zc) = (median(plains), median(zcs));
            for (name, row) in [("send", &plain), ("send_zc", &zc)] {
                println!(
                    "{:>6} {:>5} {:>8} {:>12.0} {:>10.1} {:>14}",
                    size,
                    depth,
                    name,
                    row.ops as f64 / row.secs,
                    row.bytes as f64 / row.secs / 1e6,
                    format!("{}/{}", row.copied, row.notifications),
                );
            }
            println!(
                "{:>6} {:>5} {:>8} send_zc/send throughput {:.2}x",
                size,
                depth,
                "",
                (zc.bytes as f64 / zc.secs) / (plain.bytes as f64 / plain.secs)
            );
        }
    }
    drop(handle);
    lp.join().unwrap().unwrap();
}
