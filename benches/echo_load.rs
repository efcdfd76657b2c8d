//! `echo_load`: the load generator every echo server is measured with (scripts/echo-bench).
//!
//! One thread, epoll, non-blocking TCP sockets: `--conns N` connections to `--addr`, each keeping
//! one message of `--size M` bytes outstanding (write M bytes, read until M bytes came back,
//! record the round trip, write the next). A warm-up (`--warmup-secs`, discarded), then a
//! measured phase of fixed duration (`--secs`); prints one JSON line:
//!
//! ```text
//! {"label": "...", "conns": 64, "size": 64, "msgs_per_sec": 123456.7, "p50_us": 40.1, "p99_us": 95.3, "messages": 246913, "secs": 2.000}
//! ```
//!
//! Every echoed byte is checked against what was sent (each message is one repeated byte that
//! changes from message to message), so a server that mixes up connections or drops bytes fails
//! the run instead of speeding it up. One thread keeps the generator's own cost the same for
//! every server; pin it to another CPU than the server's.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const USAGE: &str = "\
usage: echo_load --addr HOST:PORT [--conns N] [--size M] [--warmup-secs S] [--secs S] [--label TEXT]

  --conns N          connections, each with one message outstanding (default 64)
  --size M           message bytes (default 64)
  --warmup-secs S    warm-up seconds, not measured (default 0.5)
  --secs S           measured seconds (default 2)
  --label TEXT       copied into the JSON line (which server this was)";

struct Options {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    warmup: Duration,
    measure: Duration,
    label: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut o = Options {
        addr: ([127, 0, 0, 1], 0).into(),
        conns: 64,
        size: 64,
        warmup: Duration::from_millis(500),
        measure: Duration::from_secs(2),
        label: String::new(),
    };
    let secs = |v: String| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or(format!("not a number of seconds: {v}"))
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--conns" => o.conns = value()?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--size" => o.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--warmup-secs" => o.warmup = secs(value()?)?,
            "--secs" => o.measure = secs(value()?)?,
            "--label" => o.label = value()?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    o.addr = addr.ok_or("--addr is required")?;
    if o.conns == 0 || o.size == 0 {
        return Err("--conns and --size must be at least 1".into());
    }
    Ok(o)
}

/// One connection's message in flight.
struct Conn {
    stream: TcpStream,
    /// The byte the current message repeats.
    fill: u8,
    /// Bytes of the current message written, and echoed back.
    written: usize,
    read: usize,
    /// When the current message's first byte was written.
    started: Instant,
    /// Registered for `EPOLLOUT` too (a write that did not fit the socket buffer).
    wants_out: bool,
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("echo_load: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("echo_load: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Options) -> io::Result<()> {
    // SAFETY: plain syscall; the result is checked.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        // Blocking connects, one after the other, each with one round trip before the next
        // (not measured): no server sees a burst of connects (a full accept backlog drops
        // SYNs, retransmitted a second later), and every connection is known to be served
        // before the clock starts.
        let mut stream = TcpStream::connect_timeout(&o.addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let hello = vec![0xA5u8; o.size];
        stream.write_all(&hello)?;
        let mut back = vec![0u8; o.size];
        stream.read_exact(&mut back)?;
        if back != hello {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("connection {i}: the first echo differs from the bytes sent"),
            ));
        }
        stream.set_nonblocking(true)?;
        epoll_ctl(epoll, libc::EPOLL_CTL_ADD, &stream, libc::EPOLLIN as u32, i)?;
        conns.push(Conn {
            stream,
            fill: i as u8,
            written: 0,
            read: 0,
            started: Instant::now(),
            wants_out: false,
        });
    }
    let mut out = vec![0u8; o.size];
    let mut scratch = vec![0u8; 64 * 1024];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];

    for (i, c) in conns.iter_mut().enumerate() {
        send(epoll, c, i, &mut out)?;
    }
    let begin = Instant::now();
    let measure_from = begin + o.warmup;
    let measure_to = measure_from + o.measure;
    let mut messages = 0u64;
    loop {
        let now = Instant::now();
        if now >= measure_to {
            break;
        }
        let wait_ms = (measure_to - now).as_millis().clamp(1, 10) as i32;
        // SAFETY: `events` is a live buffer of `events.len()` entries for the kernel to fill.
        let n =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let (i, flags) = (ev.u64 as usize, ev.events);
            let c = &mut conns[i];
            if flags & libc::EPOLLOUT as u32 != 0 && c.written < o.size {
                send(epoll, c, i, &mut out)?;
            }
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                continue;
            }
            loop {
                let want = (o.size - c.read).min(scratch.len());
                if want == 0 {
                    break;
                }
                let got = match c.stream.read(&mut scratch[..want]) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!("connection {i}: the server closed it"),
                        ))
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if c.read + got > c.written || scratch[..got].iter().any(|&b| b != c.fill) {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("connection {i}: echoed bytes differ from the bytes sent"),
                    ));
                }
                c.read += got;
                if c.read == o.size {
                    let done = Instant::now();
                    if c.started >= measure_from && done <= measure_to {
                        let ns = done.duration_since(c.started).as_nanos() as u64;
                        hist.saturating_record(ns.max(1));
                        messages += 1;
                    }
                    c.fill = c.fill.wrapping_add(1);
                    c.read = 0;
                    c.written = 0;
                    send(epoll, c, i, &mut out)?;
                }
            }
        }
    }
    let secs = o.measure.as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"label\": \"{}\", \"conns\": {}, \"size\": {}, \"msgs_per_sec\": {:.1}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"messages\": {}, \"secs\": {:.3}}}",
        o.label.replace('"', "'"),
        o.conns,
        o.size,
        messages as f64 / secs,
        us(0.50),
        us(0.99),
        messages,
        secs
    );
    // SAFETY: `epoll` is our descriptor, closed once.
    unsafe { libc::close(epoll) };
    Ok(())
}

/// Writes what is left of `c`'s current message (a new one starts its clock); asks for
/// `EPOLLOUT` while some of it does not fit, and stops asking once it is all written.
fn send(epoll: i32, c: &mut Conn, i: usize, out: &mut [u8]) -> io::Result<()> {
    if c.written == 0 {
        c.started = Instant::now();
    }
    out.fill(c.fill);
    while c.written < out.len() {
        match c.stream.write(&out[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let wants_out = c.written < out.len();
    if wants_out != c.wants_out {
        let events = libc::EPOLLIN as u32 | if wants_out { libc::EPOLLOUT as u32 } else { 0 };
        epoll_ctl(epoll, libc::EPOLL_CTL_MOD, &c.stream, events, i)?;
        c.wants_out = wants_out;
    }
    Ok(())
}

fn epoll_ctl(epoll: i32, op: i32, s: &TcpStream, events: u32, key: usize) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: key as u64,
    };
    // SAFETY: `ev` is a live event for the duration of the call; both descriptors are open.
    if unsafe { libc::epoll_ctl(epoll, op, s.as_raw_fd(), &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
