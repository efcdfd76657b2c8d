//! [`Config`] and its validation.

use std::time::Duration;

use crate::error::Error;
use crate::event_loop::wheel::{duration_to_nanos_saturating, horizon_ticks};

/// Settings of one loop. `Config::default()` follows commonware's defaults (5 ms tick, no
/// shutdown timeout, no iopoll, no single issuer), adds a short idle spin, and asks for the
/// cheaper ring setup features the kernel has (`no_sqarray`, `coop_taskrun`, `registered_ring`:
/// each probed, each falls back to the plain ring when refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `IORING_SETUP_IOPOLL`: the loop polls the device for completions instead of taking
    /// interrupts, for `O_DIRECT` reads and writes on block devices with poll queues (NVMe with
    /// `poll_queues`). On such a ring the kernel runs only operations it can poll (reads, writes,
    /// `nop`); the others (sockets, `sync`, `poll`, `accept`...) end with its errno (`EINVAL` or
    /// `EOPNOTSUPP`), and a deadline cannot cancel a request the device holds (AsyncCancel is not
    /// pollable): it ends when the device answers (`Ok` if whole, else `Timeout`). The loop then
    /// never sleeps in the kernel: it polls, as with `busy_poll`, and sees the last handle go
    /// without the eventfd. Off by default.
    pub io_poll: bool,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (kernel 6.1+). The ring is
    /// created disabled by the constructor and enabled on the loop thread when the loop starts,
    /// and that thread becomes its only submitter. Socket completions then wait for the loop's
    /// next enter instead of interrupting it, which suits loop-thread mode
    /// ([`EventLoop::block_on`](crate::EventLoop::block_on)) well. Measured here (Linux 6.18,
    /// loop-thread mode, both ends of a 64-byte ping-pong on the loop thread, 3 interleaved
    /// rounds): Unix sockets 1.03x to 1.04x (one round 0.94x), TCP 1.01x to 1.03x; page-cache
    /// reads and nops within noise. (1.06x to 1.08x on Unix sockets while receives went ahead of
    /// the sends feeding them and completed through task work; the SQ now puts sends first,
    /// docs/behaviour.md section 1.5.) Off by default.
    pub single_issuer: bool,
    /// A cap on deadlines. `None` (the default): no cap; a deadline farther than the wheel's
    /// horizon, `(WHEEL - 1) * tick`, never fires early: the loop re-arms it at the horizon until
    /// it is due. `Some(t)`: a deadline farther than `t` fires at `t` (up to one tick earlier), and
    /// each such request is counted in `Metrics::capped_deadlines`. Zero, or beyond the horizon,
    /// is `Error::Config`. docs/behaviour.md section 3.1 has the tick math.
    pub max_request_timeout: Option<Duration>,
    /// Budget for the drain after the last handle is dropped, charged for time spent waiting
    /// only. `None` waits for every in-flight request; `Some(0)` abandons at once.
    pub shutdown_timeout: Option<Duration>,
    /// Granularity of the timeout wheel. Zero is `Error::Config`.
    pub timeout_wheel_tick: Duration,
    /// The most an idle loop polls for new requests and completions before it sleeps in the
    /// kernel, and the most `.wait()` polls before parking (at most 4.29 s there). Waking a
    /// sleeping thread costs tens of microseconds; spinning trades CPU for that latency. Each
    /// thread's actual spin adapts between `idle_spin / 64` and `idle_spin` to how soon its waits
    /// end. `Duration::ZERO` = pure blocking.
    pub idle_spin: Duration,
    /// Busy-poll: the loop never sleeps in the kernel; idle, it polls for requests and
    /// completions without end (still firing deadlines), so a request never waits for a wake-up,
    /// and its core runs at 100 % all the time. For a loop pinned (`cpu`) to a core of its own.
    /// Off by default; `idle_spin` still governs `.wait()`.
    pub busy_poll: bool,
    /// `IORING_SETUP_SQPOLL` with this idle time: a kernel thread polls the SQ, so submitting
    /// needs no syscall while it is awake (with `idle_spin`, the loop then makes none at all while
    /// requests keep coming). The poller keeps a core busy while requests arrive and for this long
    /// after the last one, then sleeps until the next submission wakes it. `None` = off.
    pub sqpoll_idle: Option<Duration>,
    /// Pin the loop thread to this CPU. `None` = leave the affinity alone. Like `priority` and
    /// `lock_memory`, applied to the thread that runs the loop, however it is run: by `run` and
    /// `block_on` on the calling thread before the loop starts (an error is their `Err`), by
    /// `spawn` and `spawn_with` on the new thread (an error is theirs, and the loop never runs).
    pub cpu: Option<usize>,
    /// Cancel on drop. On: a dropped in-flight request that only reads or waits is cancelled at
    /// the loop's next pass (so a dropped `recv` stops consuming data), and a dropped send runs
    /// to completion. Off (the default, the model's semantics): a dropped in-flight request is
    /// not cancelled and is retired at its next completion, short or not. Durable writes and
    /// syncs run to completion either way. Which operation does what in each mode is stated in
    /// docs/behaviour.md section 4, "Dropped futures".
    pub cancel_on_drop: bool,
    /// Real-time priority of the loop thread: `SCHED_FIFO` at this priority (1 to 99; needs
    /// `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` that allows it, else the kernel's `EPERM`). `None` =
    /// the default scheduler. Applied wherever `cpu` is (`run`, `block_on`, `spawn`,
    /// `spawn_with`); it stays with the thread after the loop returns.
    pub priority: Option<u8>,
    /// Lock the process's memory (`mlockall(MCL_CURRENT | MCL_FUTURE)`) when the loop starts,
    /// wherever `cpu` is applied (`run`, `block_on`, `spawn`, `spawn_with`), so that no page fault
    /// to swap delays it (needs an `RLIMIT_MEMLOCK` large enough, or `CAP_IPC_LOCK`).
    pub lock_memory: bool,
    /// `IORING_SETUP_NO_SQARRAY` (Linux 6.6): the kernel takes SQEs straight from the ring by
    /// index, without the SQ indirection array (one less shared array to write and read per
    /// SQE). On by default; probed: a kernel that refuses it gets a ring without it, never an
    /// error ([`RingFeatures::no_sqarray`](crate::RingFeatures) says which). Measured here
    /// (Linux 6.18, `bench_matrix --filter ring_setup`): within noise, loop-thread nop@1 0.99x to
    /// 1.02x.
    pub no_sqarray: bool,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (Linux 5.19): a completion that
    /// needs the loop thread's task work (sockets, polls, the wake poll) no longer interrupts the
    /// loop thread with an IPI; it waits for the loop's next kernel entry, and the kernel flags
    /// it in the SQ ring (`IORING_SQ_TASKRUN`) so that a spinning loop enters at once. Only
    /// without `single_issuer` (which defers task work anyway) and without `sqpoll_idle` (the
    /// kernel refuses the pair). On by default; probed, refused means off
    /// ([`RingFeatures::coop_taskrun`](crate::RingFeatures)). Measured here: within noise on nops
    /// (which need no task work), loop-thread nop@1 0.95x to 1.01x.
    pub coop_taskrun: bool,
    /// Registers the ring's descriptor with the loop thread when the loop starts running on it
    /// (`IORING_REGISTER_RING_FDS`, Linux 5.18), so that each `io_uring_enter` names the ring by
    /// index (`IORING_ENTER_REGISTERED_RING`) and the kernel skips the descriptor lookup and
    /// reference count per call. Unregistered when the loop returns. On by default; refused
    /// (older kernel, the thread's 16 registered rings in use) means the loop enters with the
    /// plain descriptor ([`RingFeatures::registered_ring`](crate::RingFeatures); each enter made
    /// through it counts in `Metrics::registered_enters`). Measured here: one `io_uring_enter`
    /// 1.03x to 1.06x faster (20 to 40 ns), loop-thread nop@1 1.01x to 1.06x.
    pub registered_ring: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            io_poll: false,
            single_issuer: false,
            max_request_timeout: None,
            shutdown_timeout: None,
            timeout_wheel_tick: Duration::from_millis(5),
            idle_spin: Duration::from_micros(50),
            busy_poll: false,
            sqpoll_idle: None,
            cpu: None,
            cancel_on_drop: false,
            priority: None,
            lock_memory: false,
            no_sqarray: true,
            coop_taskrun: true,
            registered_ring: true,
        }
    }
}

/// A config checked against the wheel size, in the units the loop uses.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) tick_ns: u64,
    /// The farthest a deadline's wheel entry is scheduled ahead, in ticks (<= WHEEL - 1): the
    /// cap of an explicit `max_request_timeout`, else the horizon at which far deadlines are
    /// re-armed.
    pub(crate) horizon: u64,
    pub(crate) config: Config,
}

impl Config {
    /// Validates against a wheel of `wheel` slots.
    pub(crate) fn check(&self, wheel: usize) -> Result<Checked, Error> {
        let tick_ns = duration_to_nanos_saturating(self.timeout_wheel_tick);
        if tick_ns == 0 {
            return Err(Error::Config("timeout_wheel_tick must be non-zero"));
        }
        let max_horizon = wheel as u64 - 1;
        let horizon = match self.max_request_timeout {
            None => max_horizon,
            Some(max) if max.is_zero() => {
                return Err(Error::Config("max_request_timeout must be non-zero"));
            }
            Some(max) => {
                let ticks = horizon_ticks(duration_to_nanos_saturating(max), tick_ns);
                if ticks > max_horizon {
                    return Err(Error::Config(
                        "max_request_timeout exceeds the wheel horizon (WHEEL - 1) * timeout_wheel_tick",
                    ));
                }
                ticks
            }
        };
        if self
            .sqpoll_idle
            .is_some_and(|idle| idle.as_millis() > u32::MAX as u128)
        {
            return Err(Error::Config("sqpoll_idle must fit in u32 milliseconds"));
        }
        if self
            .cpu
            .is_some_and(|cpu| cpu >= libc::CPU_SETSIZE as usize)
        {
            return Err(Error::Config("cpu is beyond CPU_SETSIZE"));
        }
        if self.priority.is_some_and(|p| !(1..=99).contains(&p)) {
            return Err(Error::Config(
                "priority must be a SCHED_FIFO priority, 1 to 99",
            ));
        }
        Ok(Checked {
            tick_ns,
            horizon,
            config: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_uses_the_full_horizon() {
        // Default must stay valid (the shared spec's API contract); None means (WHEEL - 1) ticks.
        let checked = Config::default().check(1024).unwrap();
        assert_eq!(checked.tick_ns, 5_000_000);
        assert_eq!(checked.horizon, 1023);
    }

    #[test]
    fn invalid_values_are_config_errors_not_panics() {
        // Configuration problems are errors from the constructor, never a panic.
        let zero_tick = Config {
            timeout_wheel_tick: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(zero_tick.check(1024), Err(Error::Config(_))));
        let zero_max = Config {
            max_request_timeout: Some(Duration::ZERO),
            ..Config::default()
        };
        assert!(matches!(zero_max.check(1024), Err(Error::Config(_))));
        // 1024 slots x 5 ms: horizon 1023 ticks = 5.115 s.
        let beyond = Config {
            max_request_timeout: Some(Duration::from_millis(5120)),
            ..Config::default()
        };
        assert!(matches!(beyond.check(1024), Err(Error::Config(_))));
        let at = Config {
            max_request_timeout: Some(Duration::from_millis(5115)),
            ..Config::default()
        };
        assert_eq!(at.check(1024).unwrap().horizon, 1023);
        let poll = Config {
            io_poll: true,
            ..Config::default()
        };
        assert!(
            poll.check(1024).is_ok(),
            "a polled ring is the kernel's to refuse"
        );
    }
}
