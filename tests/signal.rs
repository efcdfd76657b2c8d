//! `signal::Signals`: process-directed signals (as `kill` sends them) received through the loop,
//! from a `block_on` future and from another thread's `.wait()`; the service pattern (stop on
//! `SIGTERM` with `Handle::shutdown`); bad signal numbers refused. A plain `main` (no test
//! harness): the signals are blocked before any other thread of the process starts, as the
//! module requires, so no thread takes them with the default action.

use std::time::Duration;

use static_uring::signal::{Signals, SIGTERM, SIGUSR1, SIGUSR2};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use static_uring::{Config, Error, TaskPool};

fn kill(signal: i32) {
    // SAFETY: plain syscall to this process with a signal every thread blocks.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signal) }, 0);
}

fn main() {
    let config = Config {
        idle_spin: Duration::ZERO,
        shutdown_timeout: Some(Duration::from_millis(100)),
        ..Config::default()
    };
    let (io, event_loop) = static_uring::new::<16, 8, 64>(config).unwrap();
    // Refused before anything is blocked: uncatchable and invalid numbers.
    for bad in [libc::SIGKILL, libc::SIGSTOP, 0, 10_000] {
        let err = Signals::new(&io, &[bad]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
    }
    // Disjoint sets: a process-directed signal is taken by one read only.
    let mut signals = Signals::new(&io, &[SIGUSR1, SIGTERM]).unwrap();
    let mut remote = Signals::new(&io, &[SIGUSR2]).unwrap();
    // From here on every thread inherits the mask.
    let watchdog = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(20));
        eprintln!("signal test hung");
        std::process::exit(1);
    });
    let _ = watchdog;

    // Another thread waits on its own signalfd with `.wait()` while the loop runs; its signal
    // is sent now and stays pending until that read.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let waiter = std::thread::spawn(move || {
        let got = remote.recv().wait();
        d.store(true, std::sync::atomic::Ordering::Release);
        got
    });
    kill(SIGUSR2);

    let got = event_loop
        .block_on({
            let io = io.clone();
            async move {
                let pool = TaskPool::<_, 2>::leak();
                let worker_io = io.clone();
                // A task that would run for ever: ended by the shutdown.
                let worker = async move {
                    loop {
                        match worker_io.sleep(Duration::from_millis(5)).await {
                            Ok(()) => {}
                            Err(Error::Closed | Error::Abandoned) => return,
                            Err(e) => panic!("sleep: {e}"),
                        }
                    }
                };
                pool.run(async move {
                    assert!(pool.spawn(worker).is_ok());
                    let mut got = Vec::new();
                    kill(SIGUSR1);
                    got.push(signals.recv().await.unwrap());
                    // Both pending before the reads: both come, lowest number first. The
                    // steady state allocates nothing (the read buffer is reused).
                    got.reserve(2);
                    let before = counting_alloc::AllocCount::now();
                    kill(SIGTERM);
                    kill(SIGUSR1);
                    got.push(signals.recv().await.unwrap());
                    got.push(signals.recv().await.unwrap());
                    let allocated = counting_alloc::AllocCount::now().since(before).allocs;
                    assert_eq!(allocated, 0, "receiving signals allocated");
                    // The other thread's read ends before the shutdown (it would be `Closed`).
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        io.sleep(Duration::from_millis(1)).await.unwrap();
                    }
                    io.shutdown();
                    drop(signals);
                    got
                })
                .await
            }
        })
        .unwrap();
    assert_eq!(got, vec![SIGUSR1, SIGUSR1, SIGTERM]);
    assert_eq!(waiter.join().unwrap(), Ok(SIGUSR2));
    drop(io);
    println!("signal: ok");
}
