//! Loop-to-loop messages (`Handle::post`, `Handle::recv_message`, `EventLoop::mailbox`): values
//! cross between loops through `IORING_OP_MSG_RING`, in order, whole; a full inbox and a stopped
//! loop are refused with a clear error, and nothing a sender was told is sent goes missing
//! without a count.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, EventLoop, Handle, Mailbox};

type H = Handle<8, 8, 64>;

/// A loop with a mailbox, running on its own thread.
fn mail_loop(config: Config) -> (H, Mailbox, LoopThread) {
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config).unwrap();
    let mailbox = event_loop.mailbox().unwrap();
    (handle, mailbox, LoopThread::spawn(event_loop))
}

/// Two loops post N messages to each other, each from its own thread, and each side reads the
/// other's in the order they were posted. Run with plain rings and with single-issuer rings
/// (`DEFER_TASKRUN`: the message arrives as task work of the receiving thread).
#[test]
fn two_loops_exchange_messages_both_ways_in_order() {
    for single_issuer in [false, true] {
        const N: u64 = 500;
        let config = Config {
            single_issuer,
            ..config()
        };
        let (a, a_box, a_loop) = mail_loop(config.clone());
        let (b, b_box, b_loop) = mail_loop(config);
        let side = |me: H, peer: Mailbox, base: u64| {
            Background::spawn(move || {
                let sender = {
                    let me = me.clone();
                    thread::spawn(move || {
                        for i in 0..N {
                            // Refused while the peer holds a full inbox: try again.
                            loop {
                                match me.post(&peer, base + i).wait() {
                                    Ok(()) => break,
                                    Err(Error::Full) => thread::yield_now(),
                                    Err(e) => panic!("post {i}: {e}"),
                                }
                            }
                        }
                    })
                };
                let got: Vec<u64> = (0..N).map(|_| me.recv_message().wait().unwrap()).collect();
                sender.join().unwrap();
                got
            })
        };
        let from_b = side(a.clone(), b_box, 1 << 40);
        let from_a = side(b.clone(), a_box, 2 << 40);
        let got_a = from_b.join(HANG);
        let got_b = from_a.join(HANG);
        assert_eq!(got_a, (0..N).map(|i| (2 << 40) + i).collect::<Vec<_>>());
        assert_eq!(got_b, (0..N).map(|i| (1 << 40) + i).collect::<Vec<_>>());
        assert_eq!(a.metrics().messages_received, N);
        assert_eq!(b.metrics().messages_received, N);
        drop((a, b));
        a_loop.join(HANG).unwrap();
        b_loop.join(HANG).unwrap();
    }
}

/// A single-issuer ring is disabled until its loop thread starts, and the kernel refuses
/// messages to it (`EBADFD`) until then: a post made before the receiving loop runs waits for it
/// (tries again on the kernel's timer) instead of failing, and one to a loop dropped without
/// running ends `Closed`.
#[test]
fn a_post_to_a_single_issuer_loop_that_is_not_running_yet_waits_for_it() {
    let config = Config {
        single_issuer: true,
        ..config()
    };
    let (rx, mut rx_loop) = static_uring::new::<8, 8, 64>(config.clone()).unwrap();
    let mailbox = rx_loop.mailbox().unwrap();
    let (tx, tx_loop) = start::<8, 8, 64>(config.clone());
    let post = {
        let (tx, mailbox) = (tx.clone(), mailbox.clone());
        Background::spawn(move || tx.post(&mailbox, 5).wait())
    };
    thread::sleep(Duration::from_millis(30));
    assert!(!post.is_finished(), "it waits for the receiving loop");
    let rx_loop = LoopThread::spawn(rx_loop);
    assert_eq!(post.join(HANG), Ok(()));
    assert_eq!(rx.recv_message().wait(), Ok(5));
    drop(rx);
    rx_loop.join(HANG).unwrap();

    let (never, mut never_loop) = static_uring::new::<8, 8, 64>(config).unwrap();
    let mailbox = never_loop.mailbox().unwrap();
    let post = {
        let tx = tx.clone();
        Background::spawn(move || tx.post(&mailbox, 6).wait())
    };
    thread::sleep(Duration::from_millis(10));
    drop((never, never_loop));
    assert_eq!(post.join(HANG), Err(Error::Closed));
    drop(tx);
    tx_loop.join(HANG).unwrap();
}

/// Every bit of the value gets through: the high half travels in `user_data`, the low half in
/// the CQE's result (which may read as negative).
#[test]
fn values_with_every_bit_pattern_arrive_whole() {
    let (rx, mailbox, rx_loop) = mail_loop(config());
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    let values = [
        0,
        1,
        u64::MAX,
        1 << 63,
        0xffff_ffff,
        0xffff_ffff_0000_0000,
        0x8000_0000,
        0x7fff_ffff,
        0xffff_fffe,
        0xffff_fffe_ffff_ffff,
        0xdead_beef_cafe_f00d,
    ];
    for value in values {
        tx.post(&mailbox, value).wait().unwrap();
        assert_eq!(rx.recv_message().wait(), Ok(value), "{value:#x}");
    }
    drop((rx, tx));
    rx_loop.join(HANG).unwrap();
    tx_loop.join(HANG).unwrap();
}

/// A receiver already waiting is handed the message when it arrives; a message that arrives
/// first waits in the receiving loop until a receiver comes.
#[test]
fn a_receiver_waiting_before_the_message_and_one_coming_after_both_get_it() {
    let (rx, mailbox, rx_loop) = mail_loop(config());
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    let waiting = {
        let rx = rx.clone();
        Background::spawn(move || rx.recv_message().wait())
    };
    thread::sleep(Duration::from_millis(30)); // the receiver is held by the loop by now
    tx.post(&mailbox, 11).wait().unwrap();
    assert_eq!(waiting.join(HANG), Ok(11));

    tx.post(&mailbox, 12).wait().unwrap();
    wait_until(HANG, "the message arrives", || {
        rx.metrics().messages_received == 2
    });
    assert_eq!(rx.recv_message().wait(), Ok(12));
    drop((rx, tx));
    rx_loop.join(HANG).unwrap();
    tx_loop.join(HANG).unwrap();
}

/// The full-queue rule: an inbox holds at most `SLOTS` messages nobody took (counting those on
/// their way); a post beyond is refused with `Full` before anything is sent, so nothing is ever
/// dropped; taking one makes room again.
#[test]
fn a_full_inbox_refuses_posts_with_full_and_takes_them_again_once_read() {
    let (rx, mailbox, rx_loop) = mail_loop(config());
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    for i in 0..8 {
        tx.post(&mailbox, i).wait().unwrap();
    }
    assert_eq!(tx.post(&mailbox, 8).wait(), Err(Error::Full));
    assert_eq!(tx.post(&mailbox, 8).wait(), Err(Error::Full), "still full");
    assert_eq!(rx.recv_message().wait(), Ok(0));
    tx.post(&mailbox, 8).wait().unwrap();
    for i in 1..=8 {
        assert_eq!(rx.recv_message().wait(), Ok(i));
    }
    assert_eq!(
        rx.metrics().messages_received,
        9,
        "the refused posts never arrived"
    );
    drop((rx, tx));
    rx_loop.join(HANG).unwrap();
    tx_loop.join(HANG).unwrap();
}

/// A message to a loop that has stopped (its ring closed, its mailbox still held) is
/// `Closed` to the sender at once: no hang, no crash, nothing posted into a dead ring.
#[test]
fn a_post_to_a_stopped_loop_is_closed() {
    let (rx, mailbox, rx_loop) = mail_loop(config());
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    tx.post(&mailbox, 1).wait().unwrap();
    drop(rx);
    rx_loop.join(HANG).unwrap();
    assert!(mailbox.is_closed());
    let start = Instant::now();
    assert_eq!(tx.post(&mailbox, 2).wait(), Err(Error::Closed));
    assert_eq!(
        tx.post(&mailbox, 3).try_submit().map(|_| ()),
        Err(Error::Closed)
    );
    assert!(start.elapsed() < HANG);
    assert_eq!(
        tx.metrics().submitted,
        1,
        "nothing sent to the stopped loop"
    );
    drop(tx);
    tx_loop.join(HANG).unwrap();
}

/// The stopped loop's unread message is counted, not lost silently.
#[test]
fn messages_nobody_read_before_the_close_are_counted_unread() {
    let (rx, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let mailbox = event_loop.mailbox().unwrap();
    let reader = event_loop.metrics_reader();
    let rx_loop = LoopThread::spawn(event_loop);
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    for i in 0..3 {
        tx.post(&mailbox, i).wait().unwrap();
    }
    assert_eq!(rx.recv_message().wait(), Ok(0));
    drop(rx);
    rx_loop.join(HANG).unwrap();
    let m = reader.get();
    assert_eq!((m.messages_received, m.messages_unread), (3, 2));
    drop(tx);
    tx_loop.join(HANG).unwrap();
}

/// Posts racing the receiver's drain (`Handle::shutdown`): each is either refused (`Closed`) or
/// accounted for by the receiving loop: taken by a receiver, or counted unread. Never both,
/// never neither.
#[test]
fn a_message_posted_during_the_drain_is_delivered_or_reported() {
    for round in 0..5 {
        let (rx, mut event_loop) = static_uring::new::<64, 8, 64>(config()).unwrap();
        let mailbox = event_loop.mailbox().unwrap();
        let reader = event_loop.metrics_reader();
        let rx_loop = LoopThread::spawn(event_loop);
        let (tx, tx_loop) = start::<8, 8, 64>(config());
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (tx, mailbox, stop) = (tx.clone(), mailbox.clone(), stop.clone());
            Background::spawn(move || {
                let (mut sent, mut closed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match tx.post(&mailbox, sent).wait() {
                        Ok(()) => sent += 1,
                        Err(Error::Closed) => closed += 1,
                        Err(Error::Full) => thread::yield_now(),
                        Err(e) => panic!("post: {e}"),
                    }
                    if closed > 0 {
                        break;
                    }
                }
                sent
            })
        };
        let receiver = {
            let rx = rx.clone();
            Background::spawn(move || {
                let mut taken = 0u64;
                loop {
                    match rx.recv_message().wait() {
                        Ok(value) => {
                            assert_eq!(value, taken, "in order");
                            taken += 1;
                        }
                        Err(Error::Closed) => return taken,
                        Err(e) => panic!("recv: {e}"),
                    }
                }
            })
        };
        thread::sleep(Duration::from_millis(5 + round * 3));
        rx.shutdown();
        let taken = receiver.join(HANG);
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join(HANG);
        drop(rx);
        rx_loop.join(HANG).unwrap();
        let m = reader.get();
        assert_eq!(
            taken + m.messages_unread,
            sent,
            "round {round}: every accepted post is taken or counted"
        );
        // A post the kernel made after the close (its sender preempted between reserving and
        // entering) is one of the unread: counted, though it never arrived.
        assert!(m.messages_received <= sent);
        drop(tx);
        tx_loop.join(HANG).unwrap();
    }
}

/// A receiver waiting when the loop drains, with nothing on its way, ends `Closed` at once (it
/// does not hold the drain); a receiver's deadline is `Timeout`; a loop without a mailbox
/// refuses receivers (`InvalidInput`: nothing could ever come).
#[test]
fn receivers_end_closed_at_the_drain_timeout_at_their_deadline_and_need_a_mailbox() {
    let (rx, _mailbox, rx_loop) = mail_loop(config());
    let began = Instant::now();
    assert_eq!(
        rx.recv_message().timeout(Duration::from_millis(20)).wait(),
        Err(Error::Timeout)
    );
    assert!(began.elapsed() >= Duration::from_millis(20), "never early");
    let waiting = {
        let rx = rx.clone();
        Background::spawn(move || rx.recv_message().wait())
    };
    thread::sleep(Duration::from_millis(20));
    rx.shutdown();
    assert_eq!(waiting.join(HANG), Err(Error::Closed));
    drop(rx);
    rx_loop.join(HANG).unwrap();

    let (plain, plain_loop) = start::<8, 8, 64>(config());
    assert_eq!(plain.recv_message().wait(), Err(Error::InvalidInput));
    drop(plain);
    plain_loop.join(HANG).unwrap();
}

/// Loop-thread mode on the receiving side: the future `block_on` runs on the loop thread takes
/// the messages another loop posts, without a cross-thread hop on its side.
#[test]
fn a_block_on_future_receives_messages_on_the_loop_thread() {
    let (rx, mut event_loop): (H, EventLoop<8, 8, 64>) =
        static_uring::new::<8, 8, 64>(config()).unwrap();
    let mailbox = event_loop.mailbox().unwrap();
    let (tx, tx_loop) = start::<8, 8, 64>(config());
    let sender = {
        let tx = tx.clone();
        Background::spawn(move || {
            for i in 0..100u64 {
                while tx.post(&mailbox, i * 3).wait() == Err(Error::Full) {
                    thread::yield_now();
                }
            }
        })
    };
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut got = Vec::new();
            for _ in 0..100 {
                got.push(rx.recv_message().await.unwrap());
            }
            got
        })
    })
    .unwrap();
    assert_eq!(got, (0..100u64).map(|i| i * 3).collect::<Vec<_>>());
    sender.join(HANG);
    drop(tx);
    tx_loop.join(HANG).unwrap();
}
