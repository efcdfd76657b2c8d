//! The loop's side of the zero-copy sends (`crate::op::zero_copy`): what the ring's kernel
//! supports (probed once, when the loop is built), and the CQEs of a zero-copy SQE.
//!
//! A `SEND_ZC` or `SENDMSG_ZC` SQE gives a result CQE, with `IORING_CQE_F_MORE` set when a
//! notification follows, then the notification (`IORING_CQE_F_NOTIF`, same `user_data`) once
//! the kernel no longer reads the buffer. `on_cqe` hands every CQE with either flag here first:
//! a result that announces a notification is kept in the operation's notice and the SQE stays in
//! flight (the request, its slot and its buffers remain the loop's: a deadline's cancel, a
//! dropped caller or the shutdown's abandonment all find it in the kernel); the notification then
//! gives the kept result back to `on_cqe`, which applies it as it applies any result (`send`'s
//! rules: a short send is resubmitted, an orphan retired, a result finished). The message header
//! of a `SENDMSG_ZC` is given back at the result CQE: the kernel copied it at submission.

use io_uring::cqueue;

use super::table::{owned_request, Table};
use super::EventLoop;
use crate::metrics::Counters;

/// `IORING_CQE_F_MORE`: another CQE of this SQE follows.
const F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_NOTIF`: a zero-copy notification.
const F_NOTIF: u32 = 1 << 3;
/// `IORING_SEND_ZC_REPORT_USAGE` (Linux 6.2): the notification's result tells whether the kernel
/// copied the bytes after all.
const REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: in a notification's result, the kernel copied the bytes (a
/// loopback or otherwise local destination, or a device without scatter-gather).
const ZC_COPIED: u32 = 1 << 31;

/// What the ring's kernel supports of the zero-copy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZeroCopy {
    /// `IORING_OP_SEND_ZC` (Linux 6.0).
    pub(crate) send: bool,
    /// `IORING_OP_SENDMSG_ZC` (Linux 6.1).
    pub(crate) send_msg: bool,
    /// `IORING_SEND_ZC_REPORT_USAGE` (Linux 6.2; older kernels refuse the flag with `EINVAL`).
    pub(crate) report_usage: bool,
}

impl ZeroCopy {
    /// Before the probe (and in unit tests that build SQEs without a ring): assumed supported,
    /// without usage reports.
    pub(crate) const ASSUMED: ZeroCopy = ZeroCopy {
        send: true,
        send_msg: true,
        report_usage: false,
    };

    /// What `ring`'s kernel supports: its opcode probe (a kernel without one, before 5.6, has
    /// none of them), and its release for the usage report, which no opcode reveals.
    pub(crate) fn probe(ring: &super::ring::Ring) -> ZeroCopy {
        let Some(probe) = ring.probe() else {
            return ZeroCopy {
                send: false,
                send_msg: false,
                report_usage: false,
            };
        };
        let send = probe.is_supported(io_uring::opcode::SendZc::CODE);
        ZeroCopy {
            send,
            send_msg: probe.is_supported(io_uring::opcode::SendMsgZc::CODE),
            report_usage: send && release_at_least(6, 2),
        }
    }

    /// The `zc_flags` (SQE `ioprio`) of a zero-copy send.
    #[inline]
    pub(crate) fn zc_flags(self) -> u16 {
        if self.report_usage {
            REPORT_USAGE
        } else {
            0
        }
    }
}

/// Whether the running kernel's release is `major.minor` or later (`uname`).
fn release_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain data; uname fills it.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname wrote a NUL-terminated release string into the array.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    let mut parts = release
        .to_bytes()
        .split(|&b| !b.is_ascii_digit())
        .map(|digits| std::str::from_utf8(digits).ok()?.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// `on_cqe`'s early branch, for the current request `index` with an SQE in flight: the
    /// result `on_cqe` applies now, or `None` when the SQE stays in flight until its
    /// notification. Every CQE without `F_MORE` or `F_NOTIF` passes through untouched, and so
    /// does every CQE of an operation that is not a zero-copy send.
    #[inline]
    pub(super) fn zero_copy_cqe(
        &self,
        t: &mut Table<S, R, W>,
        index: u32,
        result: i32,
        flags: u32,
    ) -> Option<i32> {
        if flags & (F_MORE | F_NOTIF) == 0 {
            return Some(result);
        }
        self.notice(t, index, result, flags)
    }

    /// A zero-copy CQE: keeps an announced result, or gives it back at the notification.
    fn notice(&self, t: &mut Table<S, R, W>, index: u32, result: i32, flags: u32) -> Option<i32> {
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let Some(notice) = r.work.notice() else {
            return Some(result);
        };
        if cqueue::notif(flags) {
            let metrics = &self.storage.metrics;
            Counters::bump(&metrics.zero_copy_notifications);
            if result as u32 & ZC_COPIED != 0 {
                Counters::bump(&metrics.zero_copy_copied);
            }
            return notice.notified();
        }
        let now = notice.announced(result);
        if let Some(msg) = r.msg_done(&t.msgs) {
            // The kernel copied the header at submission. Cannot fail: it came from this list,
            // which holds at most RING.
            let _ = t.free_msgs.push(msg);
        }
        now
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::event_loop::Mode;
    use crate::op::Notice;
    use crate::{Config, IoBuf, IoBufs};

    #[test]
    fn a_kernel_without_the_opcodes_fails_them_with_eopnotsupp_and_no_sqe() {
        let (handle, mut el) = crate::new::<8, 2, 64>(Config {
            idle_spin: std::time::Duration::ZERO,
            ..Config::default()
        })
        .expect("loop");
        // This kernel (6.0+) has both, and 6.2's usage report.
        let probed = el.table_mut().registry.zero_copy;
        assert!(probed.send && probed.send_msg, "{probed:?}");
        // As the probe of an older kernel would find it.
        el.table_mut().registry.zero_copy = ZeroCopy {
            send: false,
            send_msg: false,
            report_usage: false,
        };
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = std::sync::Arc::new(a);
        let single = handle
            .send_zc(a.clone(), IoBuf::from(&b"zc"[..]))
            .try_submit()
            .unwrap();
        let bufs: IoBufs = [IoBuf::from(&b"zc"[..])].into_iter().collect();
        let vectored = handle.send_vectored_zc(a, bufs).try_submit().unwrap();
        // SAFETY: the test thread plays the loop thread; nothing else uses this table.
        let t = unsafe { el.table.as_mut() };
        el.stage(t, Mode::Serve);
        assert_eq!(el.storage.metrics.snapshot().submitted, 0, "no SQE");
        let e = single.wait().unwrap_err();
        assert_eq!(
            (e.error, &e.buf[..]),
            (Error::Os(libc::EOPNOTSUPP), &b"zc"[..])
        );
        let e = vectored.wait().unwrap_err();
        assert_eq!((e.error, e.buf.len()), (Error::Os(libc::EOPNOTSUPP), 1));
    }

    #[test]
    fn a_result_waits_for_its_notification_in_either_order() {
        // The result CQE first (the kernel's order): kept until the notification gives it back.
        let mut notice = Notice::Idle;
        assert_eq!(notice.announced(5), None);
        assert_eq!(notice, Notice::Announced(5));
        assert_eq!(notice.notified(), Some(5));
        assert_eq!(notice, Notice::Idle);
        // The notification first: the result applies as soon as it comes.
        assert_eq!(notice.notified(), None);
        assert_eq!(notice.announced(-libc::ECANCELED), Some(-libc::ECANCELED));
        assert_eq!(notice, Notice::Idle);
    }

    #[test]
    fn the_release_parser_compares_versions_and_usage_reports_set_their_flag() {
        assert!(
            release_at_least(2, 6),
            "any kernel with io_uring is past 2.6"
        );
        assert!(!release_at_least(999, 0));
        let zc = ZeroCopy::ASSUMED;
        assert_eq!(zc.zc_flags(), 0, "no usage report unless probed");
        let reported = ZeroCopy {
            report_usage: true,
            ..zc
        };
        assert_eq!(reported.zc_flags(), REPORT_USAGE);
        // The flags are the kernel's, as the io-uring crate reads them.
        assert!(cqueue::more(F_MORE) && !cqueue::more(F_NOTIF));
        assert!(cqueue::notif(F_NOTIF) && !cqueue::notif(F_MORE));
    }
}
