//! The cheaper ring setup (`Config::no_sqarray`, `coop_taskrun`, `registered_ring`): on by
//! default where the kernel has them, each reported by `RingFeatures` and each switchable off,
//! with operations working in every combination and every way of running the loop. The
//! fallbacks when the kernel refuses one are in the `fault-injection` tests at the end.

mod common;

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use static_uring::{Config, Error, Handle, IoBuf, IoBufMut, RingFeatures};

/// Whether this kernel has all three (Linux 6.6+; the test machine runs 6.18).
fn kernel_has_all() -> bool {
    // SAFETY: `uname` fills the struct it is given.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: String = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 6)
}

/// The setup switches of `config` set to `on` (no_sqarray, coop_taskrun, registered_ring).
fn with_setup(config: Config, on: [bool; 3]) -> Config {
    Config {
        no_sqarray: on[0],
        coop_taskrun: on[1],
        registered_ring: on[2],
        ..config
    }
}

/// The combinations every mode is run with: all on (the default), each off alone, all off.
const COMBINATIONS: [[bool; 3]; 5] = [
    [true, true, true],
    [false, true, true],
    [true, false, true],
    [true, true, false],
    [false, false, false],
];

/// How the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `spawn`ed on its own thread, callers on the test thread.
    Spawned,
    /// The same with `single_issuer`.
    SingleIssuer,
    /// The same with `sqpoll_idle`.
    SqPoll,
    /// The same with an idle spin (the loop polls the SQ_TASKRUN flag while it spins).
    Spinning,
    /// Loop-thread mode: `block_on` on the test thread, the operations on the loop thread.
    BlockOn,
}

const MODES: [Mode; 5] = [
    Mode::Spawned,
    Mode::SingleIssuer,
    Mode::SqPoll,
    Mode::Spinning,
    Mode::BlockOn,
];

impl Mode {
    fn config(self) -> Config {
        let base = config();
        match self {
            Mode::Spawned | Mode::BlockOn => base,
            Mode::SingleIssuer => Config {
                single_issuer: true,
                ..base
            },
            Mode::SqPoll => Config {
                sqpoll_idle: Some(Duration::from_millis(10)),
                ..base
            },
            Mode::Spinning => Config {
                idle_spin: Duration::from_micros(200),
                ..base
            },
        }
    }
}

/// A nop, a read_at, a send and a recv over a Unix pair (the recv waits for the send: socket
/// readiness is task work), and a recv that ends at its deadline.
async fn exercise<const S: usize, const R: usize, const W: usize>(
    handle: &Handle<S, R, W>,
    file: Arc<File>,
) {
    handle.nop().await.unwrap();
    let buf = handle
        .read_at(file, 1, IoBufMut::with_capacity(3))
        .await
        .unwrap();
    assert_eq!(&buf[..], b"bcd");
    let (a, b) = socket_pair();
    for round in 0..4u8 {
        let recv = handle.recv(b.clone(), IoBufMut::with_capacity(8));
        let send = handle.send(a.clone(), IoBuf::from(vec![round; 5]));
        let (received, sent) = join2(recv, send).await;
        let (buf, n) = received.unwrap();
        sent.unwrap();
        assert_eq!((n, &buf[..]), (5, &[round; 5][..]));
    }
    let silent = handle
        .recv(b.clone(), IoBufMut::with_capacity(8))
        .timeout(Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(silent.error, Error::Timeout);
    (&*a).write_all(b"x").unwrap();
    let (buf, n) = handle
        .recv(b, IoBufMut::with_capacity(8))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((n, &buf[..]), (1, &b"x"[..]));
}

/// Runs `exercise` with `config` in `mode`; returns the features the loop reported while it ran
/// and its final counters.
fn run_mode(mode: Mode, config: Config) -> (RingFeatures, static_uring::Metrics) {
    let file = TempFile::with_contents(b"abcdef");
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config).expect("loop starts");
    let reader = event_loop.metrics_reader();
    let features = match mode {
        Mode::BlockOn => event_loop
            .block_on(async move {
                exercise(&handle, file.read_only()).await;
                handle.ring_features()
            })
            .expect("block_on"),
        _ => {
            let thread = event_loop.spawn("ring-setup").expect("spawn");
            block_on(HANG, exercise(&handle, file.read_only()));
            let features = handle.ring_features();
            drop(handle);
            with_timeout(HANG, move || thread.join().unwrap()).expect("run");
            features
        }
    };
    (features, reader.get())
}

/// On this kernel the defaults take effect and are reported: the setup flags at construction,
/// the registered ring once the loop runs, and every enter goes through it.
#[test]
fn the_defaults_take_effect_and_are_reported() {
    let defaults = Config::default();
    assert!(defaults.no_sqarray && defaults.coop_taskrun && defaults.registered_ring);
    if !kernel_has_all() {
        eprintln!("skipped: the kernel predates Linux 6.6");
        return;
    }
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
    let before = event_loop.ring_features();
    assert!(before.no_sqarray, "{before:?}");
    assert!(before.coop_taskrun, "{before:?}");
    assert!(
        !before.registered_ring,
        "registered only on the loop's thread"
    );
    assert_eq!(handle.ring_features(), before);
    let reader = event_loop.metrics_reader();
    let thread = LoopThread::spawn(event_loop);
    for _ in 0..8 {
        handle.nop().wait().unwrap();
    }
    let running = handle.ring_features();
    assert!(running.no_sqarray && running.coop_taskrun && running.registered_ring);
    drop(handle);
    thread.join(HANG).unwrap();
    let metrics = reader.get();
    assert!(metrics.enters > 0);
    assert_eq!(
        metrics.registered_enters, metrics.enters,
        "registered before the first enter"
    );
    assert!(reader.ring_features().registered_ring, "still reported");
}

/// Each switch off turns its feature off and leaves the others on; all off, no enter goes
/// through a registered ring.
#[test]
fn each_switch_turns_its_feature_off() {
    if !kernel_has_all() {
        eprintln!("skipped: the kernel predates Linux 6.6");
        return;
    }
    for on in COMBINATIONS {
        let (features, metrics) = run_mode(Mode::Spawned, with_setup(config(), on));
        assert_eq!(
            [
                features.no_sqarray,
                features.coop_taskrun,
                features.registered_ring
            ],
            on,
            "{on:?}"
        );
        let expected = if on[2] { metrics.enters } else { 0 };
        assert_eq!(metrics.registered_enters, expected, "{on:?}");
        assert!(metrics.enters > 0);
    }
}

/// Operations work with every combination in every mode; `single_issuer` (deferred task work)
/// and `sqpoll_idle` (which the kernel refuses COOP_TASKRUN with) never report `coop_taskrun`,
/// and a loop in any mode registers its ring on the thread that runs it.
#[test]
fn operations_work_in_every_combination_and_mode() {
    let all = kernel_has_all();
    for mode in MODES {
        for on in COMBINATIONS {
            let (features, metrics) = run_mode(mode, with_setup(mode.config(), on));
            let no_coop = matches!(mode, Mode::SingleIssuer | Mode::SqPoll);
            if all {
                assert_eq!(features.no_sqarray, on[0], "{mode:?} {on:?}");
                assert_eq!(features.coop_taskrun, on[1] && !no_coop, "{mode:?} {on:?}");
                assert_eq!(features.registered_ring, on[2], "{mode:?} {on:?}");
            }
            assert!(!(no_coop && features.coop_taskrun), "{mode:?} {on:?}");
            assert_eq!(
                metrics.registered_enters,
                if features.registered_ring {
                    metrics.enters
                } else {
                    0
                },
                "{mode:?} {on:?}"
            );
        }
    }
}

/// The registration ends with the loop: one thread runs more loops in turn than a thread can
/// have rings registered at once (16), and each of them gets its ring registered.
#[test]
fn a_thread_running_loops_in_turn_registers_each() {
    if !kernel_has_all() {
        eprintln!("skipped: the kernel predates Linux 6.6");
        return;
    }
    for k in 0..24 {
        let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
        let reader = event_loop.metrics_reader();
        let features = event_loop
            .block_on(async move {
                handle.nop().await.unwrap();
                handle.ring_features()
            })
            .unwrap();
        assert!(features.registered_ring, "loop {k}");
        assert_eq!(reader.get().registered_enters, reader.get().enters);
        // `run` too.
        let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
        let remote = std::thread::spawn(move || {
            handle.nop().wait().unwrap();
            handle.ring_features()
        });
        event_loop.run().unwrap();
        assert!(remote.join().unwrap().registered_ring, "run {k}");
    }
}

#[cfg(feature = "fault-injection")]
mod refused {
    use super::*;
    use static_uring::fault::{refuse_setup, Fault, SetupFlag};

    /// A kernel that refuses a setup flag gets a ring without it (never an error), reports it,
    /// and serves as before; the same for the ring registration.
    #[test]
    fn refused_features_fall_back_and_are_reported() {
        let all = kernel_has_all();
        for refused in [
            &[SetupFlag::NoSqArray][..],
            &[SetupFlag::CoopTaskrun][..],
            &[SetupFlag::NoSqArray, SetupFlag::CoopTaskrun][..],
        ] {
            for &flag in refused {
                refuse_setup(flag);
            }
            let file = TempFile::with_contents(b"abcdef");
            let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
            let features = event_loop.ring_features();
            assert_eq!(
                features.no_sqarray,
                all && !refused.contains(&SetupFlag::NoSqArray),
                "{refused:?}"
            );
            assert_eq!(
                features.coop_taskrun,
                all && !refused.contains(&SetupFlag::CoopTaskrun),
                "{refused:?}"
            );
            let thread = LoopThread::spawn(event_loop);
            block_on(HANG, exercise(&handle, file.read_only()));
            drop(handle);
            thread.join(HANG).unwrap();
        }
        // The refusal applied to one ring only.
        let (_handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
        assert_eq!(event_loop.ring_features().no_sqarray, all);
        assert_eq!(event_loop.ring_features().coop_taskrun, all);
    }

    /// A kernel without incremental buffer rings (`IOU_PBUF_RING_INC` refused) gets the ring
    /// registered whole: `Ok(false)`, every lease a buffer of its own, and the next ring
    /// incremental again (the refusal is taken once).
    #[test]
    fn a_refused_incremental_buf_ring_is_registered_whole() {
        use std::io::Write;
        static RING: static_uring::BufRing<4, 4096> = static_uring::BufRing::new();
        static NEXT: static_uring::BufRing<4, 4096> = static_uring::BufRing::new();
        let (handle, mut event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
        refuse_setup(SetupFlag::IncrementalBufRing);
        assert_eq!(event_loop.register_buf_ring_incremental(&RING), Ok(false));
        let kernel_has_it = event_loop.register_buf_ring_incremental(&NEXT).unwrap();
        let thread = LoopThread::spawn(event_loop);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut stream = handle.recv_multi(b, &RING).unwrap();
        let mut held = Vec::new();
        for i in 0..3u8 {
            (&a).write_all(&[i; 10]).unwrap();
            let lease = stream.next().timeout(HANG).wait().unwrap();
            assert_eq!(&lease[..], &[i; 10]);
            assert_eq!(lease.offset(), 0, "a whole buffer");
            held.push(lease);
        }
        let mut ids: Vec<u16> = held.iter().map(|l| l.buffer_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            3,
            "one buffer per message while the leases are held"
        );
        drop((held, stream, handle));
        thread.join(HANG).unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        assert_eq!(kernel_has_it, (v.next(), v.next()) >= (Some(6), Some(12)));
    }

    #[test]
    fn a_refused_ring_registration_falls_back_to_the_descriptor() {
        for mode in [Mode::Spawned, Mode::BlockOn] {
            let file = TempFile::with_contents(b"abcdef");
            let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
            handle.inject_fault(Fault::RegisterRing { errno: libc::EBUSY });
            let reader = event_loop.metrics_reader();
            let features = match mode {
                Mode::BlockOn => event_loop
                    .block_on(async move {
                        exercise(&handle, file.read_only()).await;
                        handle.ring_features()
                    })
                    .unwrap(),
                _ => {
                    let thread = LoopThread::spawn(event_loop);
                    block_on(HANG, exercise(&handle, file.read_only()));
                    let features = handle.ring_features();
                    drop(handle);
                    thread.join(HANG).unwrap();
                    features
                }
            };
            assert!(!features.registered_ring, "{mode:?}");
            let metrics = reader.get();
            assert!(metrics.enters > 0);
            assert_eq!(metrics.registered_enters, 0, "{mode:?}");
        }
    }

    /// A fault injected into an enter through the registered ring stops the loop as it does
    /// through the descriptor: the registration does not change the error path.
    #[test]
    fn an_enter_error_through_the_registered_ring_stops_the_loop() {
        let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
        let thread = LoopThread::spawn(event_loop);
        handle.nop().wait().unwrap();
        assert!(handle.ring_features().registered_ring || !kernel_has_all());
        handle.inject_fault(Fault::Enter {
            errno: libc::EFAULT,
        });
        let _ = handle.nop().wait();
        drop(handle);
        assert_eq!(
            thread.join(HANG),
            Err(Error::Os(libc::EFAULT)),
            "the injected errno"
        );
    }
}
