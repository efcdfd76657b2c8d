//! End-to-end behaviour of the loop against the public API: the model's test catalogue (Part B
//! 9.1 and 9.2 of the shared spec's semantics; docs/behaviour.md is the repository's statement of
//! the behaviour, and its section 10 maps the tags), the per-operation rows of B 2.6 and the race
//! matrix of B 2.9 that can be observed from outside, translated with Part A.
//!
//! `unit: request::tests::...` names a unit test in `src/event_loop/request.rs`.
//!
//! # Mapping
//!
//! "unit:" names a unit test in `src/` that pins an internal behaviour; "n/a:" says why an item
//! has no counterpart. The race rows use a waker that holds the loop thread while it delivers a
//! result (see `Stall` in `common/mod.rs`), which orders kernel events against the loop's steps. `lifecycle.rs` holds the orphan, backpressure and shutdown-with-waiters
//! tests; `zero_alloc.rs` the allocation count.
//!
//! ## 9.1 `iouring/mod.rs`
//! | #  | upstream test                                              | here |
//! |----|------------------------------------------------------------|------|
//! | 1  | rounds_ring_size_up_to_power_of_two                        | n/a: sizes are const generics; a non-power of two is a compile error (`Storage::VALID`), nothing is rounded |
//! | 2  | submit_and_wait_non_etime_error_is_not_misclassified       | n/a end to end: needs the ring fd closed under the loop; `EventLoop::enter` maps only ETIME/EINTR/EAGAIN/EBUSY to "go on", anything else fails `run` (A13) |
//! | 3  | new_ring_iopoll_builder_path_is_exercised                  | `tests/io_poll.rs` (a polled ring builds, serves nop and O_DIRECT reads or returns the kernel's errno, and shuts down, A15) |
//! | 4  | fill_sq_..._when_cancel_staging_fills_sq                   | e2e analogue `many_recvs_sharing_one_deadline_all_time_out` (8 in flight on RING = 8 all cancelled in one pass) |
//! | 5  | fill_sq_..._when_ready_staging_fills_sq                    | e2e analogue `fresh_staging_that_fills_the_sq_admits_the_rest_later` |
//! | 6  | fill_sq_..._when_fresh_staging_fills_sq                    | `fresh_staging_that_fills_the_sq_admits_the_rest_later` (8 queued on RING = 8 plus the initial wake-poll SQE) |
//! | 7  | fill_sq_skips_cancel_for_ready_queue_timeout               | `partial_cqe_then_deadline_in_one_iteration_times_out_without_a_cancel` (local Timeout, `cancel_sqes == 0`) |
//! | 8  | fill_sq_expired_deadline_completes_immediately             | `expired_deadline_times_out_without_io` |
//! | 9  | handle_recv_panics_on_invalid_buffer_bounds                | `invalid_input_hands_the_buffer_back` (A7: `Error::InvalidInput`, not a panic) |
//! | 10 | timeout_slot_reuse_does_not_cancel_new_waiter_early        | `slot_reuse_does_not_cancel_a_new_waiter_early` |
//! | 11 | stage_request_panics_on_stale_ready_queue_entry            | n/a: an internal assertion of the model; the ready queue only holds admitted indices (`EventLoop::on_cqe`) |
//! | 12 | advance_timeouts_ignores_stale_entry_after_slot_reuse      | unit: `wheel::tests::reused_slot_fires_only_at_its_new_tick`, `removed_entries_never_fire_and_leave_nothing_behind`; e2e `slot_reuse_does_not_cancel_a_new_waiter_early` |
//! | 13 | cancel_completion_returns_saved_op_result                  | `success_after_a_requested_cancel_wins` (the late cancel CQE is ignored too); unit `request::tests::send_paths`, `recv_paths` |
//! | 14 | staged_cancel_cqe_is_ignored_after_timeout_completion      | `partial_progress_after_a_requested_cancel_is_timeout` (cancel staged, partial CQE -> Timeout, late cancel CQE ignored); `deadline_fires_on_a_partially_filled_exact_recv` (next occupant of the only slot unaffected) |
//! | 15 | wake_path_progress_scenarios                               | `recv_and_send_through_one_loop_make_progress` |
//! | 16 | timeout                                                    | `recv_without_data_times_out_at_its_deadline` |
//! | 17 | shutdown_no_timeout                                        | `sync_on_a_socket_is_einval_and_the_loop_exits_cleanly` |
//! | 18 | shutdown_no_timeout_continues_deadline_processing          | `shutdown_without_timeout_keeps_processing_deadlines` |
//! | 19 | shutdown_timeout                                           | `shutdown_timeout_abandons_a_request_still_in_the_kernel` (reply channel closed -> `Error::Abandoned`) |
//! | 20 | shutdown_timeout_preserves_deadline_result                 | `shutdown_timeout_preserves_a_deadline_result` |
//! | 21 | shutdown_timeout_abandons_timed_op_after_cutoff            | `shutdown_timeout_abandons_a_timed_request_after_the_cutoff` |
//! | 22 | deadline_timeout_ensure_enough_capacity                    | `many_recvs_sharing_one_deadline_all_time_out` |
//! | 23 | exact_recv_partial_progress                                | `exact_recv_accumulates_partial_progress` |
//! | 24 | shutdown_no_timeout_processes_ready_queue                  | `shutdown_without_timeout_restages_partial_requests` |
//! | 25 | timeout_fires_while_request_in_ready_queue                 | `deadline_fires_on_a_partially_filled_exact_recv` |
//! | 26 | ready_queue_timeout_skips_cancel_staging                   | `partial_cqe_then_deadline_in_one_iteration_times_out_without_a_cancel` |
//! | 27 | drain_breaks_after_local_ready_queue_timeout_...           | `shutdown_without_timeout_keeps_processing_deadlines` (partial exact recv times out during the drain, the loop exits) |
//! | 28 | fill_sq_completes_cancelled_ready_queue_entry_locally      | as 26 |
//! | 29 | fill_sq_orphans_closed_request_before_first_submit         | `orphan_before_first_submit_frees_the_slot`; lifecycle `orphan_dropped_while_queued_is_never_submitted` |
//! | 30 | fill_sq_orphans_closed_ready_queue_entry_locally           | lifecycle `orphan_dropped_in_flight_retires_at_its_deadline` (orphaned partial exact recv retired, slot and deadline freed) |
//! | 31 | single_issuer                                              | `single_issuer_ring_serves_requests` |
//! | -  | (9.8, A11) shutdown with the table full, requests behind it | `shutdown_is_observed_with_the_request_table_full`, `shutdown_admits_requests_queued_behind_a_full_table` |
//!
//! ## 9.2 `iouring/request.rs`
//! | # | upstream test                                  | here |
//! |---|------------------------------------------------|------|
//! | 1 | cqe_result_from_raw_retryable_codes            | unit: `request::tests::retryable_codes_requeue_unless_cancel_requested` (the kernel cannot be made to return EAGAIN on demand) |
//! | 2 | request_deadline_helpers_and_invariants        | every op takes a deadline (A4): `expired_deadline_times_out_without_io`; bound violations: `invalid_input_hands_the_buffer_back`; "read_at read > len" n/a (the cursor is internal) |
//! | 3 | active_send_paths                              | unit: `request::tests::send_paths`; e2e `large_send_is_resubmitted_until_whole`, `closed_peer_is_unexpected_eof`; vectored rows: `tests/vectored.rs` |
//! | 4 | active_recv_paths                              | unit: `request::tests::recv_paths`; e2e `recv_fills_from_offset_and_reports_filled`, `closed_peer_is_unexpected_eof`, `recv_without_data_times_out_at_its_deadline` |
//! | 5 | active_read_at_paths                           | unit: `request::tests::read_write_sync_and_nop_paths`; e2e `read_at_past_end_of_file_is_unexpected_eof`, `kernel_errors_are_os_errors` |
//! | 6 | active_write_at_paths                          | unit: `request::tests::read_write_sync_and_nop_paths`; e2e `write_at_then_read_at_round_trip_with_offsets`, `kernel_errors_are_os_errors` |
//! | 7 | active_sync_paths                              | unit: `request::tests::read_write_sync_and_nop_paths`; e2e `sync_on_a_socket_is_einval_and_the_loop_exits_cleanly`, `write_at_then_read_at_round_trip_with_offsets` |
//! | 8 | finish_without_cqe_uses_fallback_results       | A10/A13: no fallback value exists; never-submitted -> `operations_after_the_last_handle_is_dropped_are_closed`, abandoned -> `shutdown_timeout_abandons_a_request_still_in_the_kernel` |
//! | 9 | finish_timeout_delivers_timeout_results        | `expired_deadline_times_out_without_io` (every op: `Timeout`, buffers handed back, A5) |
//!
//! ## 2.6 per-operation rows observable end to end
//! | row                                              | here |
//! |--------------------------------------------------|------|
//! | send: whole buffer / short send advances          | `large_send_is_resubmitted_until_whole` |
//! | send: error or zero (closed peer)                 | `closed_peer_is_unexpected_eof` (EPIPE -> `UnexpectedEof`, A6) |
//! | recv: non-exact completes on first bytes          | `recv_fills_from_offset_and_reports_filled`, `recv_and_send_through_one_loop_make_progress` |
//! | recv: exact short -> requeue                      | `exact_recv_accumulates_partial_progress` |
//! | recv: exact short after cancel -> Timeout         | `deadline_fires_on_a_partially_filled_exact_recv` |
//! | recv: zero (peer closed)                          | `closed_peer_is_unexpected_eof` |
//! | recv/send: cancelled -> Timeout                   | `recv_without_data_times_out_at_its_deadline` |
//! | read_at: complete / short / zero (EOF)            | `write_at_then_read_at_round_trip_with_offsets`, `read_at_past_end_of_file_is_unexpected_eof` |
//! | read_some_at: short at EOF / zero past it -> Ok   | `read_some_at_returns_what_the_file_holds` |
//! | errors through `?` into `io::Result`              | `errors_cross_question_mark_into_io_result_keeping_errno_and_kind` |
//! | read_at/write_at/sync: error                      | `kernel_errors_are_os_errors`, `sync_on_a_socket_is_einval_and_the_loop_exits_cleanly` |
//! | write_at: all written                             | `write_at_then_read_at_round_trip_with_offsets` |
//! | sync: zero/positive -> Ok                         | `write_at_then_read_at_round_trip_with_offsets` |
//! | sync_data (fdatasync): as sync                    | `sync_data_persists_a_write_and_reports_errors_like_sync`; unit `sync_data_sets_the_datasync_flag` |
//! | full success after a requested cancel -> Ok       | `success_after_a_requested_cancel_wins` |
//! | short result after a requested cancel -> Timeout  | `partial_progress_after_a_requested_cancel_is_timeout` |
//! | zero/error after a requested cancel -> the error  | `error_after_a_requested_cancel_wins_over_timeout` |
//! | Retry (EAGAIN/EINTR) rows                         | unit only (`request::tests::retryable_codes_requeue_unless_cancel_requested`): the kernel cannot be made to return them on demand |
//!
//! ## 2.9 race matrix rows observable end to end
//! | row                                                     | here |
//! |---------------------------------------------------------|------|
//! | deadline already past at admission                      | `expired_deadline_times_out_without_io` |
//! | op CQE (complete) drained in the iteration that processes the deadline | `complete_cqe_drained_before_its_deadline_is_processed_wins` |
//! | op CQE (partial) drained in that iteration: ready queue, no cancel     | `partial_cqe_then_deadline_in_one_iteration_times_out_without_a_cancel` |
//! | deadline first, then the whole request completes: success              | `success_after_a_requested_cancel_wins` |
//! | deadline first, then partial progress: Timeout                         | `partial_progress_after_a_requested_cancel_is_timeout`, `deadline_fires_on_a_partially_filled_exact_recv` |
//! | deadline first, then a hard error or 0: the error wins                 | `error_after_a_requested_cancel_wins_over_timeout` |
//! | AsyncCancel submitted after its target completed (ENOENT)              | the three tests above (the cancel CQE is ignored; later requests are unaffected) |
//! | pending cancel not yet staged when the op CQE retires the waiter       | n/a: expiry and staging run back to back, nothing can be delivered between them; `EventLoop::stage_cancels` drops such entries |
//! | deadline first, cancel succeeds                         | `recv_without_data_times_out_at_its_deadline` |
//! | cancel CQE after the waiter was retired (slot reused)   | `slot_reuse_does_not_cancel_a_new_waiter_early`, `deadline_fires_on_a_partially_filled_exact_recv` |
//! | op never completed by the kernel -> abandonment         | `shutdown_timeout_abandons_a_request_still_in_the_kernel` |
//! | caller dropped, in flight with a deadline               | `fd_stays_alive_while_a_request_uses_it`; lifecycle `orphan_dropped_in_flight_retires_at_its_deadline` |
//! | shutdown budget exhausted before the deadline           | `shutdown_timeout_abandons_a_timed_request_after_the_cutoff` |
//! | deadline beyond an explicit cap fires at the cap (3.2)  | `deadlines_are_clamped_to_max_request_timeout`, `an_explicit_max_request_timeout_caps_and_counts` |
//! | deadline beyond the horizon, no cap: never early (A4)   | `a_deadline_beyond_the_horizon_never_fires_early` |
//! | cancel CQE before the op CQE                            | n/a: the kernel's ordering cannot be forced; the loop ignores every cancel CQE (`EventLoop::on_cqe`) |
//! | op never completed, even after AsyncCancel              | n/a (no such op on demand); the no-deadline form, a request the kernel keeps until shutdown: `shutdown_timeout_abandons_a_request_still_in_the_kernel` |
//!
//! ## 9.6 / 9.7 rows that concern the loop itself
//! 9.6.5 -> `deadline_fires_on_a_partially_filled_exact_recv`; 9.6.7 -> `fd_stays_alive_while_a_request_uses_it`;
//! 9.6.9 -> `recv_fills_from_offset_and_reports_filled`; 9.6.11, 9.7.7 ->
//! `zero_length_operations_complete_without_the_loop`; 9.6.15, 9.7.15, 9.7.17 ->
//! `operations_after_the_last_handle_is_dropped_are_closed`; 9.7.5 ->
//! `read_at_past_end_of_file_is_unexpected_eof`; 9.7.19 -> `sync_on_a_socket_is_einval_and_the_loop_exits_cleanly`.
//! The rest of 9.6/9.7 concerns commonware's network and blob wrappers, which this crate does not have.

mod common;

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::BufError;
use static_uring::{
    op, Config, Error, Fd, Handle, IoBuf, IoBufMut, Metrics, Op, OpResult, Storage,
};

/// A buffer of `len` initialised bytes (so every byte below any recv offset is defined).
fn zeroed(len: usize) -> IoBufMut {
    IoBufMut::from(vec![0u8; len])
}

/// True if the socket has nothing to read right now.
fn nothing_to_read(sock: &std::os::unix::net::UnixStream) -> bool {
    sock.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let empty =
        matches!((&*sock).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    sock.set_nonblocking(false).unwrap();
    empty
}

#[test]
fn futures_and_handles_are_send_static() {
    // API spec: operation futures are `Send + 'static` (they can be spawned anywhere) and the
    // handle is `Clone + Send + Sync`; `EventLoop` is `Send`.
    fn send_static<T: Send + 'static>(_: &T) {}
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    send_sync(&handle);
    send_static(&event_loop);
    let (a, _b) = socket_pair();
    send_static(&handle.nop());
    send_static(&handle.send(a.clone(), IoBuf::from(&b"x"[..])));
    send_static(&handle.recv(a, zeroed(1)).limit(1));
}

#[test]
fn recv_without_data_times_out_at_its_deadline() {
    // 9.1.16: a recv whose peer never writes must come back as Timeout no earlier than its
    // deadline (and not much later), with its buffer, without consuming later data.
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let start_at = Instant::now();
    let deadline = start_at + Duration::from_millis(100);
    let op = handle
        .recv(b.clone(), zeroed(16))
        .limit(16)
        .deadline(deadline);
    let (buf, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    let returned = Instant::now();
    assert_eq!(e, Error::Timeout);
    assert_eq!(buf.capacity(), 16, "the buffer comes back with the error");
    assert!(
        returned >= deadline,
        "timed out {:?} early",
        deadline - returned
    );
    assert!(
        returned - start_at < Duration::from_secs(2),
        "timeout took {:?}",
        returned - start_at
    );
    let m = handle.metrics();
    assert_eq!((m.timed_out, m.cancel_sqes, m.completed), (1, 1, 1));
    // The cancelled recv took nothing: the next one gets the bytes.
    (&*a).write_all(b"late").unwrap();
    let (buf, n) = handle.recv(b, zeroed(16)).limit(16).wait().unwrap();
    assert_eq!(&buf[..n], b"late");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn deadlines_are_clamped_to_max_request_timeout() {
    // 3.2 / A4: an explicit max_request_timeout is a cap: a deadline beyond it fires at the cap
    // (up to a tick early, documented), never later. Without a cap nothing fires early
    // (`a_deadline_beyond_the_horizon_never_fires_early`).
    let cfg = Config {
        max_request_timeout: Some(Duration::from_millis(100)),
        ..config()
    };
    let (handle, lp) = start::<4, 4, 64>(cfg);
    let (_a, b) = socket_pair();
    let start_at = Instant::now();
    let op = handle
        .recv(b, zeroed(4))
        .limit(4)
        .deadline(start_at + Duration::from_secs(30));
    let (_, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    let elapsed = start_at.elapsed();
    assert_eq!(e, Error::Timeout);
    // Up to one tick (5 ms) early is allowed for clamped deadlines.
    assert!(
        elapsed >= Duration::from_millis(95),
        "fired after only {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "clamp not applied: {elapsed:?}"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn slot_reuse_does_not_cancel_a_new_waiter_early() {
    // 9.1.10 / 9.1.12: with one slot, every request reuses it; a deadline (or cancel) left over
    // from an earlier occupant must never end the new one before its own deadline.
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(b"hello").unwrap();
    // #1: short deadline, data already there: succeeds at once.
    let first = Instant::now() + Duration::from_millis(30);
    let (buf, n) = handle
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .deadline(first)
        .wait()
        .unwrap();
    assert!(n > 0);
    assert_eq!(&buf[..n], &b"hello"[..n]);
    // #2: same slot, longer deadline, no data: must last until its own deadline, well past #1's.
    let second = Instant::now() + Duration::from_millis(150);
    let op = handle.recv(b.clone(), zeroed(8)).limit(8).deadline(second);
    let (_, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert!(
        Instant::now() >= second,
        "cancelled before its own deadline"
    );
    // #3: after a timed-out occupant (whose cancel CQE may come late), the slot still works.
    (&*a).write_all(b"!").unwrap();
    let third = Instant::now() + Duration::from_millis(200);
    let (buf, n) = handle
        .recv(b, zeroed(8))
        .limit(8)
        .deadline(third)
        .wait()
        .unwrap();
    assert_eq!(&buf[..n], b"!");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn shutdown_without_timeout_keeps_processing_deadlines() {
    // 9.1.18 / 9.1.27: with no shutdown timeout, the drain still fires deadlines, so a request
    // waiting on a silent peer ends with Timeout and the loop thread exits.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(50);
    let silent = handle
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    // A partially filled exact recv: it sits between SQEs when its deadline fires.
    let (c, d) = socket_pair();
    (&*c).write_all(b"0123").unwrap();
    let partial = handle
        .recv(d.clone(), zeroed(100))
        .exact(100)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    drop(handle);
    let (_, e) = with_timeout(HANG, move || silent.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    let (buf, e) = with_timeout(HANG, move || partial.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert_eq!(buf.capacity(), 100);
    assert!(Instant::now() >= deadline);
    lp.join(HANG).unwrap();
    drop((a, b, c, d));
}

#[test]
fn shutdown_timeout_abandons_a_request_still_in_the_kernel() {
    // 9.1.19 / A10: when the shutdown budget runs out with a request still in the kernel, its
    // caller gets Error::Abandoned (not a hang, not Timeout) and the loop thread exits.
    let cfg = Config {
        shutdown_timeout: Some(Duration::from_millis(200)),
        ..config()
    };
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(cfg).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (a, b) = socket_pair();
    let op = handle.recv(b, zeroed(8)).limit(8).try_submit().unwrap();
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    thread::sleep(Duration::from_millis(10));
    let dropped = Instant::now();
    drop(handle);
    let result = with_timeout(HANG, move || op.wait());
    let (_, e) = result.unwrap_err().into_parts();
    assert_eq!(e, Error::Abandoned);
    // The reader outlives the handles: the abandonment is counted; a socket recv is released by
    // the kernel at the cancel, so its slot is not parked.
    assert_eq!(reader.get().abandoned, 1);
    assert_eq!(reader.get().pending_operations, 0);
    // The budget is charged for waiting: the loop waited it out before abandoning.
    assert!(
        dropped.elapsed() >= Duration::from_millis(200),
        "abandoned after {:?}",
        dropped.elapsed()
    );
    lp.join(HANG).unwrap();
    // The peer can still write: nothing was torn down under it.
    let _ = (&*a).write_all(b"x");
}

#[test]
fn shutdown_is_observed_with_the_request_table_full() {
    // A11 (the 2026.4.0 hang, 9.8 shutdown_timeout_when_waiters_full_and_channel_empty): with
    // every ring entry taken by a request that never completes, the loop must still notice the
    // last handle going, drain, and abandon at the budget.
    let cfg = Config {
        shutdown_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let (handle, lp) = start::<1, 1, 64>(cfg);
    let (_a, b) = socket_pair();
    let op = handle.recv(b, zeroed(4)).limit(4).try_submit().unwrap();
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    drop(handle);
    let (_, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Abandoned);
    lp.join(HANG).unwrap();
}

#[test]
fn shutdown_admits_requests_queued_behind_a_full_table() {
    // A11 / 6.1 (9.8 shutdown_drains_buffered_request_behind_full_waiter_capacity): requests
    // still queued when the last handle goes are admitted and run before the loop exits, even
    // if the table was full at that moment.
    let (handle, lp) = start::<2, 1, 64>(config());
    let (a, b) = socket_pair();
    let file = TempFile::new();
    let first = handle.recv(b, zeroed(4)).exact(4).try_submit().unwrap();
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    let second = handle
        .write_at(file.file.clone(), 0, IoBuf::from(&b"behind"[..]))
        .try_submit()
        .unwrap();
    drop(handle);
    thread::sleep(Duration::from_millis(20));
    assert!(!lp.is_finished());
    (&*a).write_all(b"free").unwrap();
    let (buf, _) = with_timeout(HANG, move || first.wait()).unwrap();
    assert_eq!(&buf[..], b"free");
    assert_eq!(
        &with_timeout(HANG, move || second.wait()).unwrap()[..],
        b"behind"
    );
    lp.join(HANG).unwrap();
    assert_eq!(file.contents(), b"behind");
}

#[test]
fn shutdown_timeout_preserves_a_deadline_result() {
    // 9.1.20: a deadline that falls inside the shutdown budget still produces Timeout.
    let cfg = Config {
        shutdown_timeout: Some(Duration::from_millis(500)),
        ..config()
    };
    let (handle, lp) = start::<4, 4, 64>(cfg);
    let (_a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(50);
    let op = handle
        .recv(b, zeroed(8))
        .limit(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    drop(handle);
    let (buf, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert_eq!(
        buf.capacity(),
        8,
        "a timed-out request hands its buffer back"
    );
    lp.join(HANG).unwrap();
}

#[test]
fn shutdown_timeout_abandons_a_timed_request_after_the_cutoff() {
    // 9.1.21: a deadline beyond the shutdown budget does not keep the loop alive: the caller
    // gets Abandoned (the cutoff came first), long before the deadline.
    let cfg = Config {
        shutdown_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let (handle, lp) = start::<4, 4, 256>(cfg);
    let (_a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(1000);
    let op = handle
        .recv(b, zeroed(8))
        .limit(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    thread::sleep(Duration::from_millis(10));
    drop(handle);
    let (_, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Abandoned);
    assert!(
        Instant::now() < deadline,
        "ended by the deadline, not by the cutoff"
    );
    lp.join(HANG).unwrap();
}

#[test]
fn many_recvs_sharing_one_deadline_all_time_out() {
    // 9.1.22: 64 recvs through 8 slots and 8 SQ entries, one shared deadline: cancel traffic
    // fills the SQ, callers wait for slots, late admissions are already expired. All 64 must
    // end as Timeout, none may hang.
    let cfg = Config {
        max_request_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let (_a, b) = socket_pair();
    let start_at = Instant::now();
    let deadline = start_at + Duration::from_millis(50);
    let ops = (0..64).map(|_| {
        handle
            .recv(b.clone(), zeroed(8))
            .limit(8)
            .deadline(deadline)
    });
    let results = block_on(HANG, join_all(ops));
    assert_eq!(results.len(), 64);
    for r in results {
        assert_eq!(r.unwrap_err().error, Error::Timeout);
    }
    let elapsed = start_at.elapsed();
    assert!(Instant::now() >= deadline);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    wait_until(HANG, "all retired", || {
        handle.metrics().pending_operations == 0
    });
    let m = handle.metrics();
    assert_eq!((m.timed_out, m.completed), (64, 64));
    assert!(m.cancel_sqes >= 8, "the first 8 were in flight: {m:?}");
    assert!(m.submitted <= 64, "no request is submitted twice: {m:?}");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn fresh_staging_that_fills_the_sq_admits_the_rest_later() {
    // 9.1.5 / 9.1.6: eight requests queued before the loop starts meet a SQ of 8 that also holds
    // the initial wake-poll SQE: staging stops at the full SQ, submits, and admits the rest.
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let file = TempFile::with_contents(b"abc");
    let ops: Vec<_> = (0..8)
        .map(|_| handle.sync(file.file.clone()).try_submit().unwrap())
        .collect();
    assert_eq!(err(handle.nop().try_submit()), Error::Full);
    let lp = LoopThread::spawn(event_loop);
    for op in ops {
        with_timeout(HANG, move || op.wait()).unwrap();
    }
    let m = handle.metrics();
    assert_eq!((m.submitted, m.completed), (8, 8));
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn exact_recv_accumulates_partial_progress() {
    // 9.1.23: an exact recv resubmits after a short read until every byte arrived.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let op = handle.recv(b, zeroed(100)).exact(100).try_submit().unwrap();
    let payload: Vec<u8> = (0..100u8).collect();
    (&*a).write_all(&payload[..40]).unwrap();
    thread::sleep(Duration::from_millis(20));
    (&*a).write_all(&payload[40..]).unwrap();
    let (buf, filled) = with_timeout(HANG, move || op.wait()).unwrap();
    assert_eq!(filled, 100);
    assert_eq!(&buf[..], &payload[..]);
    let m = handle.metrics();
    assert!(
        m.requeued >= 1 && m.submitted >= 2,
        "the short read was resubmitted: {m:?}"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn shutdown_without_timeout_restages_partial_requests() {
    // 9.1.24: the drain keeps restaging requests between SQEs, so an exact recv that was partly
    // filled when the last handle went away, and is filled further during the drain, completes.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let op = handle.recv(b, zeroed(100)).exact(100).try_submit().unwrap();
    (&*a).write_all(&[1u8; 10]).unwrap();
    wait_until(HANG, "short read processed", || {
        handle.metrics().requeued >= 1
    });
    drop(handle);
    thread::sleep(Duration::from_millis(20));
    assert!(
        !lp.is_finished(),
        "the loop must not exit with a request in flight"
    );
    // Another short read during the drain: the request goes back to the ready queue, which the
    // drain must restage.
    (&*a).write_all(&[2u8; 40]).unwrap();
    thread::sleep(Duration::from_millis(20));
    (&*a).write_all(&[2u8; 50]).unwrap();
    let (buf, filled) = with_timeout(HANG, move || op.wait()).unwrap();
    assert_eq!(filled, 100);
    assert_eq!(&buf[..10], &[1u8; 10]);
    assert_eq!(&buf[10..], &[2u8; 90]);
    lp.join(HANG).unwrap();
}

#[test]
fn deadline_fires_on_a_partially_filled_exact_recv() {
    // 9.1.25 / 9.1.14 / 9.6.5: a deadline that fires between the pieces of an exact recv ends it
    // with Timeout (not a hang, not a short Ok); the late cancel CQE must not touch the next
    // occupant of the (only) slot.
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a, b) = socket_pair();
    let start_at = Instant::now();
    let deadline = start_at + Duration::from_millis(80);
    let op = handle
        .recv(b.clone(), zeroed(100))
        .exact(100)
        .deadline(deadline);
    (&*a).write_all(&[7u8; 10]).unwrap();
    let (buf, e) = with_timeout(HANG, move || op.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert_eq!(buf.capacity(), 100);
    assert!(Instant::now() >= deadline);
    assert!(start_at.elapsed() < Duration::from_secs(2));
    // Same slot, next request: unaffected.
    (&*a).write_all(b"abc").unwrap();
    let next = Instant::now() + Duration::from_millis(200);
    let (buf, n) = handle
        .recv(b, zeroed(8))
        .limit(8)
        .deadline(next)
        .wait()
        .unwrap();
    assert_eq!(&buf[..n], b"abc");
    handle.nop().wait().unwrap();
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn expired_deadline_times_out_without_io() {
    // 9.1.8 / 9.2.9 / A4 / A5: a deadline already past at admission is Timeout for every
    // operation, with no SQE, no cancel, and the buffers handed back untouched.
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let file = TempFile::new();
    let past = Some(Instant::now() - Duration::from_secs(1));

    let (buf, e) = handle
        .send(a.clone(), IoBuf::from(&b"hi"[..]))
        .deadline(past)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Timeout, &b"hi"[..]));
    (&*a).write_all(b"q").unwrap(); // data present, yet the recv must not take it
    let (buf, e) = handle
        .recv(b.clone(), IoBufMut::from(vec![5u8; 4]))
        .limit(4)
        .deadline(past)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Timeout, &[5u8; 4][..]));
    let (buf, e) = handle
        .read_at(file.file.clone(), 0, zeroed(4))
        .limit(4)
        .deadline(past)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 4));
    let (buf, e) = handle
        .write_at(file.file.clone(), 0, IoBuf::from(&b"data"[..]))
        .deadline(past)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Timeout, &b"data"[..]));
    assert_eq!(
        handle.sync(file.file.clone()).deadline(past).wait(),
        Err(Error::Timeout)
    );
    assert_eq!(handle.nop().deadline(past).wait(), Err(Error::Timeout));

    let m = handle.metrics();
    assert_eq!((m.submitted, m.cancel_sqes), (0, 0), "no I/O: {m:?}");
    assert_eq!((m.timed_out, m.completed, m.pending_operations), (6, 6, 0));
    // Only the byte written by hand is in the socket: the send sent nothing, the recv took nothing.
    b.set_nonblocking(true).unwrap();
    let mut bytes = [0u8; 8];
    assert_eq!((&*b).read(&mut bytes).unwrap(), 1);
    assert_eq!(bytes[0], b'q');
    assert!(
        file.contents().is_empty(),
        "the timed-out write wrote nothing"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_before_first_submit_frees_the_slot() {
    // 9.1.29: a request whose caller left before the loop ever saw it is retired without I/O,
    // its deadline leaves nothing behind, and its slot serves the next caller.
    let (handle, event_loop) = static_uring::new::<2, 2, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let file = TempFile::with_contents(b"content");
    let deadline = Some(Instant::now() + Duration::from_millis(200));
    drop(
        handle
            .send(a.clone(), IoBuf::from(&b"never"[..]))
            .deadline(deadline)
            .try_submit()
            .unwrap(),
    );
    drop(
        handle
            .read_at(file.file.clone(), 0, zeroed(4))
            .limit(4)
            .try_submit()
            .unwrap(),
    );
    assert_eq!(
        err(handle.nop().try_submit()),
        Error::Full,
        "both slots are held until retired"
    );
    let lp = LoopThread::spawn(event_loop);
    wait_until(HANG, "both orphans retired", || {
        handle.metrics().orphaned == 2
    });
    let m = handle.metrics();
    assert_eq!((m.submitted, m.pending_operations), (0, 0), "{m:?}");
    let ops = [
        handle.nop().try_submit().unwrap(),
        handle.nop().try_submit().unwrap(),
    ];
    for op in ops {
        op.wait().unwrap();
    }
    assert!(nothing_to_read(&b), "the orphaned send was never issued");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn single_issuer_ring_serves_requests() {
    // 9.1.31: with SINGLE_ISSUER + DEFER_TASKRUN the loop thread is the only submitter and
    // completions are only posted while it waits; recv and send must still complete.
    let cfg = Config {
        single_issuer: true,
        ..config()
    };
    let (handle, lp) = start::<4, 4, 64>(cfg);
    let (a, b) = socket_pair();
    let recv = handle
        .recv(b, zeroed(5))
        .exact(5)
        .deadline(Instant::now() + Duration::from_secs(2));
    let send = handle
        .send(a, IoBuf::from(&b"hello"[..]))
        .deadline(Instant::now() + Duration::from_secs(2));
    let (received, sent) = block_on(Duration::from_secs(2), join2(recv, send));
    let (buf, n) = received.unwrap();
    assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
    assert_eq!(&sent.unwrap()[..], b"hello");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn recv_and_send_through_one_loop_make_progress() {
    // 9.1.15: a recv waiting for data and the send that provides it, both through one loop,
    // finish promptly (the wake path lets the send in while the recv is parked in the kernel).
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let recv = handle.recv(b, zeroed(5)).limit(5);
    let send = handle.send(a, IoBuf::from(&b"hello"[..]));
    let (received, sent) = block_on(Duration::from_secs(2), join2(recv, send));
    let (buf, n) = received.unwrap();
    assert!(n > 0);
    assert_eq!(&buf[..n], &b"hello"[..n]);
    assert_eq!(&sent.unwrap()[..], b"hello");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn sync_on_a_socket_is_einval_and_the_loop_exits_cleanly() {
    // 9.1.17 / 9.7.19 / A6: a kernel error is the caller's Os(errno), the loop survives it, and
    // a request still queued when the last handle goes is answered before the loop exits.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, _b) = socket_pair();
    assert_eq!(handle.sync(a.clone()).wait(), Err(Error::Os(libc::EINVAL)));
    handle.nop().wait().expect("the loop still serves requests");
    let queued = handle.sync(a).try_submit().unwrap();
    drop(handle);
    assert_eq!(
        with_timeout(HANG, move || queued.wait()),
        Err(Error::Os(libc::EINVAL))
    );
    lp.join(HANG).unwrap();
}

#[test]
fn sync_data_persists_a_write_and_reports_errors_like_sync() {
    // sync_data is sync's data-only form: same rules (run to completion, Os errors, deadlines,
    // try_ on a full table), on a file it succeeds after a write.
    let (handle, lp) = start::<2, 2, 64>(config());
    let file = TempFile::new();
    handle
        .write_at(file.file.clone(), 0, IoBuf::from(&b"abc"[..]))
        .wait()
        .unwrap();
    assert_eq!(handle.sync_data(file.file.clone()).wait(), Ok(()));
    assert_eq!(file.contents(), b"abc");
    let (a, _b) = socket_pair();
    assert_eq!(
        handle.sync_data(a.clone()).wait(),
        Err(Error::Os(libc::EINVAL))
    );
    let past = Some(Instant::now() - Duration::from_secs(1));
    assert_eq!(
        handle.sync_data(file.file.clone()).deadline(past).wait(),
        Err(Error::Timeout)
    );
    let op = handle.sync_data(file.file.clone()).try_submit().unwrap();
    assert_eq!(op.wait(), Ok(()));
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn kernel_errors_are_os_errors() {
    // A6: a negative CQE is the kernel's errno, with the buffer handed back.
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::with_contents(b"abc");
    let read_only = file.read_only();
    let (buf, e) = handle
        .write_at(read_only, 0, IoBuf::from(&b"xyz"[..]))
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::Os(libc::EBADF), &b"xyz"[..]));
    let dir = Arc::new(std::fs::File::open(std::env::temp_dir()).unwrap());
    let (buf, e) = handle
        .read_at(dir, 0, zeroed(4))
        .limit(4)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::Os(libc::EISDIR), 4));
    assert_eq!(file.contents(), b"abc");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn read_at_past_end_of_file_is_unexpected_eof() {
    // 9.7.5 / 2.6 read_at Zero rows / A6: end of file before `len` bytes, even after a short read,
    // is UnexpectedEof with the buffer back; an exact fit is Ok.
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::with_contents(b"abc");
    let (buf, e) = handle
        .read_at(file.file.clone(), 0, zeroed(8))
        .limit(5)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 8));
    assert_eq!(&buf[..], b"abc", "the bytes read before the end are kept");
    let (buf, e) = handle
        .read_at(file.file.clone(), 10, zeroed(2))
        .limit(2)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity(), buf.len()), (Error::UnexpectedEof, 2, 0));
    let buf = handle
        .read_at(file.file.clone(), 1, zeroed(8))
        .limit(2)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"bc", "the length is set to exactly len");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn read_some_at_returns_what_the_file_holds() {
    // pread semantics beside the exact read_at: a read that reaches the end returns the bytes
    // there (Ok, length set), one at or past the end returns Ok with none, and a read inside the
    // file returns at least one byte. Argument checks are read_at's.
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::with_contents(b"abcdef");
    let some = |offset, len, cap| {
        handle
            .read_some_at(file.file.clone(), offset, zeroed(cap))
            .limit(len)
            .wait()
    };
    let buf = some(2, 64, 64).unwrap();
    assert_eq!((&buf[..], buf.capacity()), (&b"cdef"[..], 64));
    let buf = some(1, 3, 8).unwrap();
    assert_eq!(&buf[..], b"bcd", "never more than len");
    assert!(some(6, 4, 4).unwrap().is_empty(), "at the end: Ok, empty");
    assert!(
        some(100, 4, 4).unwrap().is_empty(),
        "past the end: Ok, empty"
    );
    assert!(some(0, 0, 4).unwrap().is_empty(), "len 0: Ok at once");
    let (buf, e) = some(0, 9, 8).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::InvalidInput, 8),
        "len > capacity"
    );
    let (buf, e) = some(u64::MAX, 1, 8).unwrap_err().into_parts();
    assert_eq!(
        (e, buf.capacity()),
        (Error::InvalidInput, 8),
        "offset beyond i64"
    );
    let op = handle
        .read_some_at(file.file.clone(), 4, zeroed(8))
        .limit(8)
        .try_submit();
    assert_eq!(&op.unwrap().wait().unwrap()[..], b"ef");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn errors_cross_question_mark_into_io_result_keeping_errno_and_kind() {
    // Issue 10.2: `buf_err()` names the (buffer, Error) pair; `?` turns it into an io::Error
    // with the errno (Os) or the kind (the crate's own variants); a caller who wants the buffer
    // gets it from the BufError.
    use static_uring::BufError;
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::with_contents(b"abc");
    let dir = Fd::from(Arc::new(std::fs::File::open(std::env::temp_dir()).unwrap()));
    let read_exact = |fd: Fd, len: usize| -> std::io::Result<IoBufMut> {
        let buf = handle.read_at(fd, 0, zeroed(8)).limit(len).wait()?;
        Ok(buf)
    };
    assert_eq!(
        &read_exact(file.file.clone().into(), 3).unwrap()[..],
        b"abc"
    );
    let e = read_exact(file.file.clone().into(), 5).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    let e = read_exact(dir.clone(), 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "the errno survives");
    let timed_out = || -> std::io::Result<()> {
        handle
            .nop()
            .deadline(Instant::now() - Duration::from_secs(1))
            .wait()?;
        Ok(())
    };
    assert_eq!(
        timed_out().unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
    let err: BufError<IoBufMut> = handle
        .read_at(dir, 0, zeroed(8))
        .limit(1)
        .wait()
        .unwrap_err();
    assert_eq!(err.error, Error::Os(libc::EISDIR));
    assert_eq!(err.to_string(), Error::Os(libc::EISDIR).to_string());
    let (buf, _) = err.into_parts();
    assert_eq!(buf.capacity(), 8, "the buffer comes back");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn write_at_then_read_at_round_trip_with_offsets() {
    // 9.2.5 / 9.2.6 / 9.2.7: positioned writes land at their offsets (holes read as zeros),
    // positioned reads return exactly what is there, sync succeeds, buffers come back.
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::new();
    let hello = IoBuf::from(b"hello".to_vec());
    let address = hello.as_ptr();
    let hello = handle.write_at(file.file.clone(), 0, hello).wait().unwrap();
    assert_eq!(hello.as_ptr(), address, "the same buffer comes back");
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    handle
        .write_at(file.file.clone(), 4096, IoBuf::from(big.clone()))
        .wait()
        .unwrap();
    handle.sync(file.file.clone()).wait().unwrap();

    let on_disk = file.contents();
    assert_eq!(on_disk.len(), 4096 + big.len());
    assert_eq!(&on_disk[..5], b"hello");
    assert!(on_disk[5..4096].iter().all(|&b| b == 0));
    assert_eq!(&on_disk[4096..], &big[..]);

    let buf = handle
        .read_at(file.file.clone(), 1, zeroed(16))
        .limit(4)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"ello");
    let buf = handle
        .read_at(
            file.file.clone(),
            4096 + 1000,
            IoBufMut::with_capacity(20_000),
        )
        .limit(20_000)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], &big[1000..21_000]);
    let buf = handle
        .read_at(file.file.clone(), 4094, zeroed(4))
        .limit(4)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], &[0, 0, big[0], big[1]]);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn large_send_is_resubmitted_until_whole() {
    // 2.6 send rows: send returns only when the whole buffer is accepted, resubmitting after
    // short sends; the receiver sees every byte in order.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let recv = handle
        .recv(b, IoBufMut::with_capacity(payload.len()))
        .exact(payload.len());
    let send = handle.send(a, IoBuf::from(payload.clone()));
    let (received, sent) = block_on(HANG, join2(recv, send));
    assert_eq!(sent.unwrap().len(), payload.len());
    let (buf, n) = received.unwrap();
    assert_eq!(n, payload.len());
    assert!(buf[..] == payload[..], "bytes arrive whole and in order");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn closed_peer_is_unexpected_eof() {
    // 2.6 send/recv Zero and Error rows with A6: a closed peer is UnexpectedEof for both
    // directions (EPIPE for send, a 0 result for recv), buffers handed back.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let recv = handle
        .recv(b.clone(), zeroed(4))
        .exact(4)
        .try_submit()
        .unwrap();
    (&*a).write_all(b"ab").unwrap();
    thread::sleep(Duration::from_millis(10));
    drop(a);
    let (buf, e) = with_timeout(HANG, move || recv.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::UnexpectedEof, 4));
    let (buf, e) = handle
        .send(b, IoBuf::from(&b"to nobody"[..]))
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, &buf[..]), (Error::UnexpectedEof, &b"to nobody"[..]));
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn recv_fills_from_offset_and_reports_filled() {
    // 9.6.9: recv with `.offset(2).limit(8)` fills buf[2..8]; the buffer's length is set to the
    // end filled (offset + bytes received), the result names the bytes received; bytes below the
    // offset are left as they were.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(b"abc").unwrap();
    let buf = IoBufMut::from(vec![0xEEu8; 8]);
    let (buf, received) = handle.recv(b, buf).offset(2).limit(8).wait().unwrap();
    assert_eq!((received, buf.len()), (3, 5));
    assert_eq!(&buf[..], &[0xEE, 0xEE, b'a', b'b', b'c']);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn recv_never_exposes_bytes_it_did_not_define() {
    // Safety of the buffer API: offset + received becomes the buffer's length, so the bytes between the
    // buffer's old length and `offset` become readable; they must be defined (zeroed), never
    // stale or uninitialised memory. Also for the offset == len short circuit.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(b"abc").unwrap();
    let mut buf = IoBufMut::from(vec![0xAAu8; 8]);
    buf.clear();
    let (buf, received) = handle
        .recv(b.clone(), buf)
        .offset(3)
        .limit(8)
        .wait()
        .unwrap();
    assert_eq!((received, buf.len()), (3, 6));
    assert_eq!(&buf[..], &[0, 0, 0, b'a', b'b', b'c']);
    let mut buf = IoBufMut::from(vec![0xAAu8; 8]);
    buf.truncate(1);
    let (buf, received) = handle.recv(b, buf).offset(4).exact(4).wait().unwrap();
    assert_eq!((received, buf.len()), (0, 4));
    assert_eq!(
        &buf[..],
        &[0xAA, 0, 0, 0],
        "bytes below the old length are kept"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn zero_length_operations_complete_without_the_loop() {
    // A8 / 9.6.11 / 9.7.7: zero-length send/write_at/read_at and recv with offset == len complete
    // Ok at once, touching no slot, even when no loop runs (never started, or dropped).
    fn check<const S: usize, const R: usize, const W: usize>(
        handle: &static_uring::Handle<S, R, W>,
        file: &TempFile,
    ) {
        let (a, _b) = socket_pair();
        for buf in [
            IoBuf::from(Vec::new()),
            IoBuf::from(&b""[..]),
            IoBuf::from(Vec::new().into_boxed_slice()),
        ] {
            assert!(handle.send(a.clone(), buf).wait().unwrap().is_empty());
        }
        assert!(handle
            .send(a.clone(), IoBuf::from(&b""[..]))
            .try_submit()
            .unwrap()
            .wait()
            .unwrap()
            .is_empty());
        assert!(handle
            .write_at(file.file.clone(), 0, IoBuf::from(Vec::new()))
            .wait()
            .unwrap()
            .is_empty());
        assert!(handle
            .write_at(file.file.clone(), 9, IoBuf::from(&b""[..]))
            .try_submit()
            .unwrap()
            .wait()
            .unwrap()
            .is_empty());
        let buf = handle
            .read_at(file.file.clone(), 0, IoBufMut::from(vec![1u8; 3]))
            .limit(0)
            .wait()
            .unwrap();
        assert_eq!(
            (buf.len(), buf.capacity()),
            (0, 3),
            "a 0-byte read returns an empty buffer"
        );
        assert!(handle
            .read_at(file.file.clone(), 0, zeroed(3))
            .limit(0)
            .try_submit()
            .unwrap()
            .wait()
            .unwrap()
            .is_empty());
        let (buf, received) = handle
            .recv(a.clone(), IoBufMut::from(vec![4u8; 6]))
            .offset(3)
            .exact(3)
            .wait()
            .unwrap();
        assert_eq!((received, &buf[..]), (0, &[4u8; 3][..]));
        let (buf, received) = handle
            .recv(a.clone(), zeroed(6))
            .offset(6)
            .limit(6)
            .try_submit()
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!((received, buf.len()), (0, 6));
    }
    let file = TempFile::with_contents(b"x");
    // Never run; its only slot is taken, so any slot use would fail.
    let (handle, event_loop) = static_uring::new::<1, 1, 64>(config()).unwrap();
    let _held = handle.nop().try_submit().unwrap();
    check(&handle, &file);
    // Dropped.
    drop(event_loop);
    check(&handle, &file);
    assert_eq!(file.contents(), b"x");
}

#[test]
fn invalid_input_hands_the_buffer_back() {
    // 9.1.9 / 9.2.2 / A7: bounds that cannot describe an operation are InvalidInput with the
    // buffer handed back intact and nothing submitted; they never panic.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (_a, b) = socket_pair();
    let file = TempFile::with_contents(b"abcdef");
    let intact = |buf: &IoBufMut, address: *const u8| {
        assert_eq!(buf.as_ptr(), address);
        assert_eq!(&buf[..], &[9u8; 4]);
        assert_eq!(buf.capacity(), 4);
    };
    // offset > len
    let buf = IoBufMut::from(vec![9u8; 4]);
    let address = buf.as_ptr();
    let (buf, e) = handle
        .recv(b.clone(), buf)
        .offset(5)
        .limit(4)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::InvalidInput);
    intact(&buf, address);
    // len > capacity
    let (buf, e) = handle
        .recv(b.clone(), buf)
        .exact(5)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::InvalidInput);
    intact(&buf, address);
    let (buf, e) = err(handle.recv(b.clone(), buf).offset(5).limit(4).try_submit()).into_parts();
    assert_eq!(e, Error::InvalidInput);
    intact(&buf, address);
    let (buf, e) = handle
        .read_at(file.file.clone(), 0, buf)
        .limit(5)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::InvalidInput);
    intact(&buf, address);
    let (buf, e) = err(handle
        .read_at(file.file.clone(), 0, buf)
        .limit(5)
        .try_submit())
    .into_parts();
    assert_eq!(e, Error::InvalidInput);
    intact(&buf, address);
    let m = handle.metrics();
    assert_eq!(
        (m.submitted, m.completed),
        (0, 0),
        "nothing reached the loop"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn operations_after_the_last_handle_is_dropped_are_closed() {
    // 9.6.15 / 9.7.15 / 9.7.17 / 1.4 row 2: an operation created while the loop lived but first
    // polled after the last handle went is Closed, with its buffer back and no effect.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let file = TempFile::with_contents(b"data");
    let nop = handle.nop();
    let send = handle.send(a.clone(), IoBuf::from(&b"out"[..]));
    let recv = handle
        .recv(b.clone(), IoBufMut::from(vec![3u8; 4]))
        .limit(4);
    let read = handle
        .read_at(file.file.clone(), 0, IoBufMut::from(vec![3u8; 4]))
        .limit(4);
    let write = handle.write_at(file.file.clone(), 0, IoBuf::from(&b"XX"[..]));
    let sync = handle.sync(file.file.clone());
    let async_nop = handle.nop();
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(nop.wait(), Err(Error::Closed));
    assert_eq!(block_on(HANG, async_nop), Err(Error::Closed));
    let (buf, e) = send.wait().unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Closed, &b"out"[..]));
    let (buf, e) = recv.wait().unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Closed, &[3u8; 4][..]));
    let (buf, e) = read.wait().unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Closed, &[3u8; 4][..]));
    let (buf, e) = write.wait().unwrap_err().into_parts();
    assert_eq!((e, &buf[..]), (Error::Closed, &b"XX"[..]));
    assert_eq!(sync.wait(), Err(Error::Closed));
    assert_eq!(file.contents(), b"data");
    assert!(nothing_to_read(&b));
}

#[test]
fn a_dropped_event_loop_closes_its_handles() {
    // A13 / API spec: if the loop is dropped without running, callers get Closed instead of waiting
    // forever, and try_* hands the buffer back.
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let queued = handle.nop().try_submit().unwrap();
    drop(event_loop);
    assert_eq!(
        with_timeout(HANG, move || queued.wait()),
        Err(Error::Closed)
    );
    assert_eq!(handle.nop().wait(), Err(Error::Closed));
    assert_eq!(err(handle.nop().try_submit()), Error::Closed);
    let (a, _b) = socket_pair();
    let (buf, e) = err(handle.send(a, IoBuf::from(&b"kept"[..])).try_submit()).into_parts();
    assert_eq!((e, &buf[..]), (Error::Closed, &b"kept"[..]));
}

#[test]
fn try_ops_report_full_when_every_slot_is_taken() {
    // A2: with every slot outstanding, try_* fails fast with Full (buffer back) instead of
    // waiting; as soon as a slot frees, it succeeds.
    let (handle, lp) = start::<2, 2, 64>(config());
    let (a, b) = socket_pair();
    let file = TempFile::with_contents(b"abc");
    let first = handle
        .recv(b.clone(), zeroed(4))
        .exact(4)
        .try_submit()
        .unwrap();
    let second = handle
        .recv(b.clone(), zeroed(4))
        .exact(4)
        .try_submit()
        .unwrap();
    assert_eq!(err(handle.nop().try_submit()), Error::Full);
    assert_eq!(
        err(handle.sync(file.file.clone()).try_submit()),
        Error::Full
    );
    let (buf, e) = err(handle.send(a.clone(), IoBuf::from(&b"xy"[..])).try_submit()).into_parts();
    assert_eq!((e, &buf[..]), (Error::Full, &b"xy"[..]));
    let (buf, e) = err(handle
        .recv(b.clone(), IoBufMut::from(vec![1u8; 2]))
        .limit(2)
        .try_submit())
    .into_parts();
    assert_eq!((e, &buf[..]), (Error::Full, &[1u8; 2][..]));
    let (buf, e) = err(handle
        .read_at(file.file.clone(), 0, IoBufMut::from(vec![1u8; 2]))
        .limit(2)
        .try_submit())
    .into_parts();
    assert_eq!((e, &buf[..]), (Error::Full, &[1u8; 2][..]));
    let (buf, e) = err(handle
        .write_at(file.file.clone(), 0, IoBuf::from(&b"zz"[..]))
        .try_submit())
    .into_parts();
    assert_eq!((e, &buf[..]), (Error::Full, &b"zz"[..]));
    (&*a).write_all(b"12345678").unwrap();
    let one = with_timeout(HANG, move || first.wait()).unwrap();
    let two = with_timeout(HANG, move || second.wait()).unwrap();
    let mut got = one.0[..].to_vec();
    got.extend_from_slice(&two.0[..]);
    got.sort_unstable();
    assert_eq!(got, b"12345678");
    handle.nop().try_submit().unwrap().wait().unwrap();
    assert_eq!(file.contents(), b"abc");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn config_errors_come_from_the_constructor() {
    // A7 / A15 / API spec: bad configurations are Error::Config from `new`/`with_storage`, never a
    // panic on the loop thread, and a refused config does not keep the storage claimed.
    fn refused(config: Config) -> &'static str {
        match static_uring::new::<8, 8, 64>(config) {
            Err(Error::Config(why)) => why,
            other => panic!("expected Error::Config, got {:?}", other.map(|_| ())),
        }
    }
    assert!(!refused(Config {
        timeout_wheel_tick: Duration::ZERO,
        ..config()
    })
    .is_empty());
    assert!(!refused(Config {
        max_request_timeout: Some(Duration::ZERO),
        ..config()
    })
    .is_empty());
    // WHEEL = 64 with a 5 ms tick: the horizon is 63 ticks = 315 ms.
    assert!(!refused(Config {
        max_request_timeout: Some(Duration::from_millis(316)),
        ..config()
    })
    .is_empty());
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config {
        max_request_timeout: Some(Duration::from_millis(315)),
        ..config()
    })
    .expect("exactly the horizon is allowed");
    drop((handle, event_loop));

    static STORAGE: Storage<4, 4, 64> = Storage::new();
    let bad = Config {
        timeout_wheel_tick: Duration::ZERO,
        ..config()
    };
    assert!(matches!(
        static_uring::with_storage(&STORAGE, bad),
        Err(Error::Config(_))
    ));
    let (handle, event_loop) =
        static_uring::with_storage(&STORAGE, config()).expect("not claimed by the refused attempt");
    let lp = LoopThread::spawn(event_loop);
    handle.nop().wait().unwrap();
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn static_storage_is_claimed_by_one_loop_at_a_time() {
    // API spec: a second claim of a static storage is Error::InUse (not UB); once the loop returned
    // and every handle is gone it can be claimed again, with fresh counters.
    static STORAGE: Storage<4, 4, 64> = Storage::new();
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    assert!(matches!(
        static_uring::with_storage(&STORAGE, config()),
        Err(Error::InUse)
    ));
    let lp = LoopThread::spawn(event_loop);
    for _ in 0..4 {
        handle.nop().wait().unwrap();
    }
    assert_eq!(handle.metrics().completed, 4);
    let clone = handle.clone();
    drop(handle);
    assert!(
        matches!(
            static_uring::with_storage(&STORAGE, config()),
            Err(Error::InUse)
        ),
        "a clone still holds it"
    );
    drop(clone);
    lp.join(HANG).unwrap();

    let (handle, event_loop) =
        static_uring::with_storage(&STORAGE, config()).expect("claimable again");
    assert_eq!(handle.metrics().completed, 0, "counters start over");
    // A loop dropped without running: the claim lasts until its handles are gone too.
    drop(event_loop);
    assert!(matches!(
        static_uring::with_storage(&STORAGE, config()),
        Err(Error::InUse)
    ));
    drop(handle);
    let (handle, event_loop) =
        static_uring::with_storage(&STORAGE, config()).expect("claimable again");
    let lp = LoopThread::spawn(event_loop);
    let ops: Vec<_> = (0..4).map(|_| handle.nop().try_submit().unwrap()).collect();
    for op in ops {
        op.wait().unwrap();
    }
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn fd_stays_alive_while_a_request_uses_it() {
    // 9.6.7: a request holds its descriptor (an Arc clone) while the kernel may use it, so the
    // number cannot be closed and reused under it; it lets go when the request is retired.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    assert_eq!(Arc::strong_count(&b), 1);
    let op = handle
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    assert_eq!(
        Arc::strong_count(&b),
        2,
        "the pending request holds a clone"
    );
    let weak = Arc::downgrade(&b);
    drop(b);
    thread::sleep(Duration::from_millis(20));
    assert!(
        weak.upgrade().is_some(),
        "still open while the recv is in flight"
    );
    (&*a).write_all(b"ping").unwrap();
    let (buf, n) = with_timeout(HANG, move || op.wait()).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert!(
        weak.upgrade().is_none(),
        "released once the request completed"
    );

    // An orphaned in-flight request keeps it until its deadline retires it.
    let (_c, d) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(60);
    let op = handle
        .recv(d.clone(), zeroed(8))
        .limit(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    // The gauge may still show the first recv: wait for this one's SQE instead.
    wait_until(HANG, "in flight", || handle.metrics().submitted == 2);
    drop(op);
    assert_eq!(
        Arc::strong_count(&d),
        2,
        "an orphan in flight keeps the descriptor"
    );
    wait_until(HANG, "orphan retired at its deadline", || {
        Arc::strong_count(&d) == 1
    });
    let now = Instant::now();
    assert!(
        now >= deadline,
        "retired {:?} before its deadline: {:?}",
        deadline - now,
        handle.metrics()
    );
    assert_eq!(handle.metrics().orphaned, 1);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn metrics_count_what_the_loop_does() {
    // API spec / A14: the counters are what operators watch; each must move with the event it
    // names and the gauge must return to zero when idle.
    let (handle, lp) = start::<4, 4, 64>(config());
    for _ in 0..10 {
        handle.nop().wait().unwrap();
    }
    let m = handle.metrics();
    assert_eq!(
        (m.submitted, m.completed, m.timed_out, m.cancel_sqes),
        (10, 10, 0, 0)
    );
    assert_eq!((m.orphaned, m.requeued, m.abandoned), (0, 0, 0));
    assert!(m.enters >= 1);
    // The gauge is refreshed once per loop iteration, after the caller may already have its result.
    wait_until(HANG, "gauge back to 0", || {
        handle.metrics().pending_operations == 0
    });

    // A submission to a sleeping loop rings the eventfd.
    let mut woke = false;
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(20));
        let before = handle.metrics().wakeups;
        handle.nop().wait().unwrap();
        if handle.metrics().wakeups > before {
            woke = true;
            break;
        }
    }
    assert!(
        woke,
        "no wake-up counted for a submission to a sleeping loop"
    );

    // Timeout through AsyncCancel, with the gauge up while in flight.
    let (a, b) = socket_pair();
    let before = handle.metrics();
    let op = handle
        .recv(b.clone(), zeroed(4))
        .limit(4)
        .deadline(Instant::now() + Duration::from_millis(40))
        .try_submit()
        .unwrap();
    wait_until(HANG, "recv in flight", || {
        handle.metrics().submitted == before.submitted + 1
    });
    wait_until(HANG, "gauge counts the admitted recv", || {
        handle.metrics().pending_operations == 1
    });
    assert_eq!(
        with_timeout(HANG, move || op.wait()).unwrap_err().error,
        Error::Timeout
    );
    let m = handle.metrics();
    assert_eq!(m.timed_out - before.timed_out, 1);
    assert_eq!(m.cancel_sqes - before.cancel_sqes, 1);
    assert_eq!(m.completed - before.completed, 1);
    wait_until(HANG, "gauge back to 0", || {
        handle.metrics().pending_operations == 0
    });

    // A short read is requeued.
    let before = handle.metrics();
    let op = handle
        .recv(b.clone(), zeroed(8))
        .exact(8)
        .try_submit()
        .unwrap();
    (&*a).write_all(b"1234").unwrap();
    wait_until(HANG, "short read requeued", || {
        handle.metrics().requeued > before.requeued
    });
    (&*a).write_all(b"5678").unwrap();
    assert_eq!(with_timeout(HANG, move || op.wait()).unwrap().1, 8);
    assert!(handle.metrics().submitted - before.submitted >= 2);

    // An orphan is counted when retired.
    let before = handle.metrics();
    let op = handle
        .recv(b, zeroed(4))
        .limit(4)
        .deadline(Instant::now() + Duration::from_millis(30))
        .try_submit()
        .unwrap();
    drop(op);
    wait_until(HANG, "orphan retired", || {
        handle.metrics().orphaned == before.orphaned + 1
    });
    wait_until(HANG, "gauge back to 0", || {
        handle.metrics().pending_operations == 0
    });
    assert_eq!(handle.metrics().abandoned, 0);
    drop(handle);
    lp.join(HANG).unwrap();
}

// Race-matrix tests (2.9). A `Stall` waker holds the loop thread inside a result delivery, which
// happens either while it drains CQEs (a recv completing) or while it stages fresh requests (a
// request whose deadline is already past is answered at admission). Holding it at one of these
// points lets a test decide what is in the CQ, and whether a deadline has passed, when the
// loop moves on to its next step.

type Pair = (
    Arc<std::os::unix::net::UnixStream>,
    Arc<std::os::unix::net::UnixStream>,
);

/// Holds the loop thread in its CQE drain (delivering a recv result) until released.
fn stall_in_reap(
    handle: &Handle<8, 8, 64>,
) -> (Arc<Stall>, Pin<Box<Op<op::Recv, 8, 8, 64>>>, Pair) {
    let (x, y) = socket_pair();
    let stall = Stall::new();
    let mut op = Box::pin(handle.recv(y.clone(), zeroed(1)).limit(1));
    assert!(poll_with(op.as_mut(), &stall.waker()).is_none());
    (&*x).write_all(b"!").unwrap();
    stall.wait_entered();
    (stall, op, (x, y))
}

/// Call while the loop is held elsewhere: in its next staging pass the loop admits an
/// already-expired nop and is held delivering its Timeout, until released.
fn stall_in_stage(handle: &Handle<8, 8, 64>) -> (Arc<Stall>, Pin<Box<Op<op::Nop, 8, 8, 64>>>) {
    let stall = Stall::new();
    let mut op = Box::pin(
        handle
            .nop()
            .deadline(Instant::now() - Duration::from_secs(1)),
    );
    assert!(poll_with(op.as_mut(), &stall.waker()).is_none());
    (stall, op)
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// An exact recv of 8 bytes whose data (`bytes`) arrives while it is between CQE and deadline:
/// the CQE is drained in the same iteration in which its deadline is then processed.
fn cqe_drained_then_deadline(bytes: &'static [u8]) -> (OpResult<op::Recv>, Metrics) {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(300);
    let op = handle
        .recv(b, zeroed(8))
        .exact(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    wait_until(HANG, "recv staged", || handle.metrics().submitted == 1);
    let (reap, held, _pair) = stall_in_reap(&handle);
    let (stage, expired) = stall_in_stage(&handle);
    reap.release();
    stage.wait_entered();
    assert!(
        Instant::now() < deadline,
        "setup too slow: the deadline passed before the loop was held"
    );
    // The CQE is posted while the loop is held in staging; the deadline passes too.
    (&*a).write_all(bytes).unwrap();
    sleep_until(deadline + Duration::from_millis(20));
    stage.release();
    let result = with_timeout(HANG, move || op.wait());
    assert_eq!(block_on(HANG, expired), Err(Error::Timeout));
    assert_eq!(block_on(HANG, held).unwrap().1, 1);
    wait_until(HANG, "idle", || handle.metrics().pending_operations == 0);
    let metrics = handle.metrics();
    drop(handle);
    lp.join(HANG).unwrap();
    (result, metrics)
}

#[test]
fn partial_cqe_then_deadline_in_one_iteration_times_out_without_a_cancel() {
    // 9.1.7 / 9.1.26 / 9.1.28, 2.9 row 3: a request parked between SQEs (ready queue) when its
    // deadline fires gets no AsyncCancel (nothing of it is in the kernel); it times out locally
    // when staged instead of being resubmitted.
    let (result, m) = cqe_drained_then_deadline(b"part");
    let (buf, e) = result.unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 8));
    assert_eq!((m.cancel_sqes, m.requeued), (0, 1), "{m:?}");
    assert_eq!(m.timed_out, 2, "the recv and the expired nop: {m:?}");
}

#[test]
fn complete_cqe_drained_before_its_deadline_is_processed_wins() {
    // 2.9 row 2: a completion already in the CQ when the deadline is processed in the same
    // iteration is delivered as success, even though it is reported after the deadline.
    let (result, m) = cqe_drained_then_deadline(b"complete");
    let (buf, n) = result.unwrap();
    assert_eq!((n, &buf[..]), (8, &b"complete"[..]));
    assert_eq!((m.cancel_sqes, m.timed_out), (0, 1), "{m:?}");
}

/// An exact recv of 4 bytes whose deadline is processed first (its AsyncCancel staged but not
/// yet submitted), after which `event` reaches its socket and the op CQE is posted.
fn deadline_then_cqe(
    event: impl FnOnce(&std::os::unix::net::UnixStream),
) -> (OpResult<op::Recv>, Metrics) {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(100);
    let op = handle
        .recv(b, zeroed(4))
        .exact(4)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    wait_until(HANG, "recv staged", || handle.metrics().submitted == 1);
    let (reap, held, _pair) = stall_in_reap(&handle);
    let (stage, expired) = stall_in_stage(&handle);
    sleep_until(deadline + Duration::from_millis(20));
    // Next: the deadline is processed (cancel requested and staged), then the loop is held
    // admitting the expired nop, before it submits the cancel.
    reap.release();
    stage.wait_entered();
    assert_eq!(handle.metrics().cancel_sqes, 1, "the cancel was staged");
    event(&a);
    thread::sleep(Duration::from_millis(20));
    stage.release();
    let result = with_timeout(HANG, move || op.wait());
    assert_eq!(block_on(HANG, expired), Err(Error::Timeout));
    assert_eq!(block_on(HANG, held).unwrap().1, 1);
    // The late cancel CQE (nothing left to cancel) must not disturb the next requests.
    for _ in 0..8 {
        handle.nop().wait().unwrap();
    }
    wait_until(HANG, "idle", || handle.metrics().pending_operations == 0);
    let metrics = handle.metrics();
    drop(handle);
    lp.join(HANG).unwrap();
    (result, metrics)
}

#[test]
fn success_after_a_requested_cancel_wins() {
    // 9.1.13, 2.9 row 4, A5: the cancel lost the race: the whole request completed, so the caller
    // gets its data, not Timeout.
    let (result, m) = deadline_then_cqe(|a| (&*a).write_all(b"data").unwrap());
    let (buf, n) = result.unwrap();
    assert_eq!((n, &buf[..]), (4, &b"data"[..]));
    assert_eq!((m.cancel_sqes, m.timed_out), (1, 1), "{m:?}");
}

#[test]
fn partial_progress_after_a_requested_cancel_is_timeout() {
    // 9.1.14, 2.9 row 5: after the deadline, a short result ends the request as Timeout (some
    // bytes were consumed: the connection is unusable, as documented on Error::Timeout).
    let (result, m) = deadline_then_cqe(|a| (&*a).write_all(b"da").unwrap());
    let (buf, e) = result.unwrap_err().into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 4));
    assert_eq!((m.cancel_sqes, m.timed_out), (1, 2), "{m:?}");
}

#[test]
fn error_after_a_requested_cancel_wins_over_timeout() {
    // 2.9 row 7: a hard result (here the peer closing: 0 bytes) decides the outcome even after
    // the deadline was processed.
    let (result, m) = deadline_then_cqe(|a| a.shutdown(std::net::Shutdown::Write).unwrap());
    let (_, e) = result.unwrap_err().into_parts();
    assert_eq!(e, Error::UnexpectedEof);
    assert_eq!((m.cancel_sqes, m.timed_out), (1, 1), "{m:?}");
}

/// Issue 16, item 9 (semantics A4 as amended): with `max_request_timeout: None`, a deadline
/// beyond the wheel's horizon (here 63 ticks of 1 ms) never fires early: it is re-armed at the
/// horizon until due.
#[test]
fn a_deadline_beyond_the_horizon_never_fires_early() {
    let cfg = Config {
        timeout_wheel_tick: Duration::from_millis(1),
        ..config()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let (_a, b) = socket_pair();
    for wait in [Duration::from_millis(300), Duration::from_millis(130)] {
        let deadline = Instant::now() + wait;
        let h = handle.clone();
        let b = b.clone();
        let result = with_timeout(HANG, move || {
            h.recv(b, IoBufMut::with_capacity(4))
                .exact(4)
                .deadline(deadline)
                .wait()
        });
        let now = Instant::now();
        assert!(
            matches!(
                result,
                Err(BufError {
                    error: Error::Timeout,
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(
            now >= deadline,
            "fired {:?} early (asked {wait:?})",
            deadline - now
        );
    }
    assert_eq!(handle.metrics().capped_deadlines, 0);
    drop(handle);
    lp.join(HANG).unwrap();
}

/// An explicit `max_request_timeout` is a cap the user chose: a farther deadline fires at the
/// cap, and the `capped_deadlines` metric counts it.
#[test]
fn an_explicit_max_request_timeout_caps_and_counts() {
    let cfg = Config {
        timeout_wheel_tick: Duration::from_millis(1),
        max_request_timeout: Some(Duration::from_millis(40)),
        ..config()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let (_a, b) = socket_pair();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let h = handle.clone();
    let result = with_timeout(HANG, move || {
        h.recv(b, IoBufMut::with_capacity(4))
            .exact(4)
            .deadline(deadline)
            .wait()
    });
    assert!(
        matches!(
            result,
            Err(BufError {
                error: Error::Timeout,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "capped near 40 ms"
    );
    assert_eq!(handle.metrics().capped_deadlines, 1);
    drop(handle);
    lp.join(HANG).unwrap();
}
