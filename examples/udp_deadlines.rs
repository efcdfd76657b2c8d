//! A new user's pinned UDP responder, with the toolkit alone: `net::UdpSocket` on a loop pinned
//! to the last CPU (`spawn_with`: the responder runs on the loop thread), a deadline on every
//! receive (the responder stops after a second of silence) and on every reply. A client on this
//! thread measures round trips per second and the p99.
//!
//! ```text
//! cargo run --release --example udp_deadlines [round trips]
//! ```

use std::time::{Duration, Instant};

use static_uring::net::UdpSocket;
use static_uring::{Config, Error, IoBuf, IoBufMut};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(50_000), |s| s.parse())?;
    let cpus = std::thread::available_parallelism()?.get();
    let config = Config {
        cpu: Some(cpus - 1),
        ..Config::default()
    };
    let (io, event_loop) = static_uring::new::<16, 16, 1024>(config)?;
    let socket = UdpSocket::bind(&io, "127.0.0.1:0".parse()?)?;
    let server = socket.local_addr()?;
    drop(io); // the responder's socket holds the loop's handle
    let responder = event_loop.spawn_with("udp-responder", move || async move {
        let mut buf = IoBufMut::with_capacity(64);
        loop {
            let idle = socket.recv_from(buf).timeout(Duration::from_secs(1)).await;
            let (data, _, from) = match idle {
                Ok(got) => got,
                Err(e) if e.error == Error::Timeout => return Ok::<_, Error>(()),
                Err(e) => return Err(e.error),
            };
            let sent = socket
                .send_to(IoBuf::from(data), from)
                .timeout(Duration::from_millis(100))
                .await;
            buf = sent.map_err(|e| e.error)?.into_mut().expect("our buffer");
            buf.clear();
        }
    })?;

    let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    client.connect(server)?;
    let (mut times, msg, mut back) = (Vec::with_capacity(rounds), [7u8; 64], [0u8; 64]);
    let start = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        client.send(&msg)?;
        client.recv(&mut back)?;
        times.push(t.elapsed());
    }
    let rate = rounds as f64 / start.elapsed().as_secs_f64();
    times.sort();
    println!(
        "udp_deadlines: {rate:.0} round trips/s, p50 {:?}, p99 {:?}",
        times[rounds / 2],
        times[rounds * 99 / 100]
    );
    responder.join().expect("the loop thread")??; // ends after a second of silence
    Ok(())
}
