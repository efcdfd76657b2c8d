//! A `TaskPool` outlives the loops that run it: what it keeps from a finished runner (its
//! waker) must be harmless, and a pool task obeys the loop-thread rules (no `.wait()`).

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use static_uring::TaskPool;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Issue 16, item 2: after `block_on(pool.run(..))` returned and the loop's storage is gone,
/// spawning into the pool (to prepare it for the next loop) wakes the finished runner's waker:
/// that wake must not write into a descriptor that reused the loop's eventfd number.
#[test]
fn spawning_after_the_runner_finished_touches_no_descriptor() {
    let pool: &'static TaskPool<Task, 4> = TaskPool::leak();
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    with_timeout(HANG, move || {
        event_loop
            .block_on(pool.run(async move {
                handle.nop().await.unwrap();
            }))
            .unwrap()
    });
    let files: Vec<TempFile> = (0..8).map(|_| TempFile::new()).collect();
    assert!(pool.spawn(Box::pin(async {})).is_ok());
    for file in &files {
        assert!(
            file.contents().is_empty(),
            "the pool's kept waker wrote into a reused descriptor"
        );
    }
    // The next loop runs the task spawned in between.
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    with_timeout(HANG, move || {
        event_loop
            .block_on(pool.run(async move { drop(handle) }))
            .unwrap()
    });
    assert!(pool.is_empty());
}

/// Issue 16, item 10: `.wait()` inside a pool task on the loop thread panics with a message
/// instead of hanging; the pool contains the panic and the loop goes on.
#[test]
fn wait_inside_a_pool_task_panics_and_the_pool_goes_on() {
    let pool: &'static TaskPool<Task, 4> = TaskPool::leak();
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let (panics, after) = with_timeout(HANG, move || {
        event_loop
            .block_on(pool.run(async move {
                let h = handle.clone();
                assert!(pool
                    .spawn(Box::pin(async move {
                        let _ = h.nop().wait();
                    }))
                    .is_ok());
                // Let the pool poll the task.
                for _ in 0..4 {
                    handle.nop().await.unwrap();
                }
                (pool.panics(), handle.nop().await)
            }))
            .unwrap()
    });
    assert_eq!(panics, 1, "the task's .wait() panicked");
    assert_eq!(after, Ok(()), "the loop goes on");
}
