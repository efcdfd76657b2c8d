//! Waking a sleeping loop: a message through `IORING_OP_MSG_RING` (`Handle::post` from another
//! loop) against the cross-thread submission path (the eventfd), in one run, rounds interleaved.
//! `cargo bench -p static-uring-bench --bench message_wake [-- rounds]`.
//!
//! Two loops, both sleeping at once when idle (`idle_spin` 0), each in loop-thread mode. The
//! driver is a task on the sending loop S; every round it sleeps 500 us (so the receiving loop
//! R is asleep in `io_uring_enter`), takes `t0` and then, in a rotating order:
//!
//! * `msg_ring`: `s.post(&r_mailbox, ..)`, staged on S's own thread: one SQE on S's ring puts a
//!   CQE in R's completion queue, which wakes R;
//! * `eventfd`: `r.post(&r_mailbox, ..)`, the same message submitted through R's handle from S's
//!   thread: the cross-thread path (R's submission ring, then the eventfd write that wakes R,
//!   which then stages the post to itself);
//! * `nop round trip`: `r.nop()` from S's thread to the sleeping R and back (the eventfd wake,
//!   the nop, and the wake of S's task), for reference.
//!
//! The first two are one-way: `t1` is taken by R's task when its `recv_message` resolves. Both
//! clocks are the same monotonic clock.

#[path = "common/hist.rs"]
#[allow(dead_code)] // the helpers this bench does not read
mod hist;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hist::Hist;
use static_uring::{Config, Error};

const MSG_RING: u64 = 0;
const EVENTFD: u64 = 1;

fn main() {
    let rounds: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let config = Config {
        idle_spin: Duration::ZERO,
        timeout_wheel_tick: Duration::from_micros(100),
        ..Config::default()
    };
    let base = Instant::now();
    let t0 = Arc::new(AtomicU64::new(0));

    let (r, mut r_loop) = static_uring::new::<64, 32, 1024>(config.clone()).unwrap();
    let r_mailbox = r_loop.mailbox().unwrap();
    let r_metrics = r_loop.metrics_reader();
    let receiver = {
        let t0 = t0.clone();
        let r = r.clone();
        std::thread::spawn(move || {
            r_loop.block_on(async move {
                let mut hists = [Hist::new(), Hist::new()];
                loop {
                    match r.recv_message().await {
                        Ok(kind) => {
                            let now = base.elapsed().as_nanos() as u64;
                            hists[kind as usize].record_ns(now - t0.load(Ordering::Acquire));
                        }
                        Err(Error::Closed) => return hists,
                        Err(e) => panic!("recv_message: {e}"),
                    }
                }
            })
        })
    };

    let (s, s_loop) = static_uring::new::<64, 32, 1024>(config).unwrap();
    let driver = std::thread::spawn(move || {
        s_loop.block_on(async move {
            let mut round_trip = Hist::new();
            for round in 0..rounds {
                for step in 0..3 {
                    s.sleep(Duration::from_micros(500)).await.unwrap();
                    let start = base.elapsed().as_nanos() as u64;
                    // Release: pairs with the receiver's Acquire load after its message.
                    t0.store(start, Ordering::Release);
                    match (round + step) % 3 {
                        0 => s.post(&r_mailbox, MSG_RING).await.unwrap(),
                        1 => r.post(&r_mailbox, EVENTFD).await.unwrap(),
                        _ => {
                            let began = Instant::now();
                            r.nop().await.unwrap();
                            round_trip.record(began.elapsed());
                        }
                    }
                }
            }
            r.shutdown();
            round_trip
        })
    });
    let round_trip = driver.join().unwrap().unwrap();
    let [msg, eventfd] = receiver.join().unwrap().unwrap();
    let m = r_metrics.get();
    println!(
        "{rounds} rounds of each, interleaved; receiving loop asleep before each (idle_spin 0)"
    );
    println!(
        "receiving loop: {} eventfd wake-ups, {} messages",
        m.wakeups, m.messages_received
    );
    for (name, h) in [
        ("msg_ring one-way (post from a loop)", &msg),
        (
            "eventfd one-way (post through the receiver's handle)",
            &eventfd,
        ),
        ("nop .await round trip to the sleeping loop", &round_trip),
    ] {
        let us = |q: f64| h.quantile(q).unwrap_or(0) as f64 / 1000.0;
        println!(
            "{name:55} n={:5} p50 {:7.1} us  p99 {:7.1} us  p99.9 {:7.1} us",
            h.total(),
            us(0.5),
            us(0.99),
            us(0.999)
        );
    }
}
