//! A producer that claimed a position in the submission ring and stalled before publishing
//! (preempted between the two): the loop neither hangs on it nor spins, and the drain waits
//! for it (`handoff/wake.rs`, docs/behaviour.md sections 5 and 6.2).

use std::time::{Duration, Instant};

use crate::event_loop::request::Request;
use crate::handoff::submit_queue::Claimed;
use crate::handoff::wake::GAP_WAIT;
use crate::storage::StorageRef;
use crate::{op, Config};

const STALL: Duration = Duration::from_millis(30);
/// The bound on every wait for the loop: generous, never a hang.
const PATIENCE: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        idle_spin: Duration::ZERO,
        ..Config::default()
    }
}

/// Writes a nop into a free slot and claims its ring position, as a submit does, but does not
/// publish it: the stalled producer.
fn claim_and_stall(storage: &StorageRef<8, 8, 64>) -> (u32, Claimed) {
    let index = storage.free.pop().expect("a free slot");
    let slot = &storage.slots[index as usize];
    slot.mark_filled();
    let position = storage.queue.claim(storage.epoch()).expect("open");
    // SAFETY: FILLED: this thread owns the request.
    unsafe { slot.with_request(|r| *r = Request::new(op::Nop.into(), None, None)) };
    slot.mark_queued(false);
    (index, position)
}

/// Waits for the stalled producer's request to finish, takes its outcome and frees its slot.
fn finish(storage: &StorageRef<8, 8, 64>, index: u32) -> Option<Result<usize, crate::Error>> {
    let slot = &storage.slots[index as usize];
    let deadline = Instant::now() + PATIENCE;
    while !slot.is_done() {
        assert!(
            Instant::now() < deadline,
            "the published request never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: DONE: the caller owns the request.
    let outcome = unsafe { slot.with_request(|r| r.outcome.take()) };
    storage.free_slot(index);
    outcome
}

fn wait_for(thread: &std::thread::JoinHandle<impl Sized>) {
    let deadline = Instant::now() + PATIENCE;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the thread did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_stalled_claim_makes_the_loop_nap_and_it_finds_the_push_without_a_wake() {
    let (handle, event_loop) = crate::new::<8, 8, 64>(config()).unwrap();
    let storage = event_loop.storage.clone();
    let reader = event_loop.metrics_reader();
    let runner = std::thread::spawn(move || event_loop.run());
    handle.nop().wait().unwrap();

    let (index, position) = claim_and_stall(&storage);
    // A request claimed after the stalled one waits behind it: the loop cannot see past the gap.
    let behind = {
        let handle = handle.clone();
        std::thread::spawn(move || handle.nop().wait())
    };
    let before = reader.get().enters;
    let stalled_at = Instant::now();
    std::thread::sleep(STALL);
    assert!(!behind.is_finished(), "a request behind the gap was taken");
    // The producer resumes and publishes; it writes no eventfd (as one whose claim came before
    // the loop's arm, which owes none).
    let _ = storage.queue.publish(position, index);
    assert_eq!(finish(&storage, index), Some(Ok(0)), "the stalled nop ran");
    wait_for(&behind);
    assert_eq!(behind.join().unwrap(), Ok(()));
    // The loop napped instead of spinning: each nap is a kernel wait of at least GAP_WAIT (a
    // timeout never fires early), plus a few enters for the wakes and the requests themselves.
    let naps = reader.get().enters - before;
    let bound = stalled_at.elapsed().as_nanos() / GAP_WAIT.as_nanos() + 16;
    assert!(
        naps as u128 <= bound,
        "{naps} enters over the stall: the loop spun"
    );
    drop(handle);
    runner.join().unwrap().unwrap();
}

#[test]
fn the_drain_waits_for_a_position_claimed_before_the_ring_closed() {
    let (handle, event_loop) = crate::new::<8, 8, 64>(config()).unwrap();
    let storage = event_loop.storage.clone();
    let runner = std::thread::spawn(move || event_loop.run());
    handle.nop().wait().unwrap();

    let (index, position) = claim_and_stall(&storage);
    // The last handle goes: the ring closes, the loop drains, and must not finish (nor sweep
    // the position as empty) while a claimed position is unpublished.
    drop(handle);
    assert!(
        storage.queue.claim(storage.epoch()).is_none(),
        "the ring is closed"
    );
    std::thread::sleep(STALL);
    assert!(
        !runner.is_finished(),
        "the loop ended over a claimed position"
    );
    let _ = storage.queue.publish(position, index);
    wait_for(&runner);
    runner.join().unwrap().unwrap();
    assert_eq!(
        finish(&storage, index),
        Some(Ok(0)),
        "the drain admitted the late request and ran it"
    );
}
