//! Where the loop thread runs: CPU affinity, a real-time priority and locked memory, applied to
//! the calling thread before the loop starts. Each setting the process may not use comes back as
//! the kernel's error, never a silent no-op.

use std::io;

use crate::config::Config;

/// Applies `config`'s placement to the calling thread: pins it to `cpu`, makes it `SCHED_FIFO`
/// at `priority`, and locks the process's memory.
pub(crate) fn apply(config: &Config) -> io::Result<()> {
    if let Some(cpu) = config.cpu {
        pin_to_cpu(cpu)?;
    }
    if let Some(priority) = config.priority {
        set_fifo_priority(priority)?;
    }
    if config.lock_memory {
        lock_memory()?;
    }
    Ok(())
}

/// Pins the calling thread to `cpu` (EINVAL if the CPU does not exist or is not allowed).
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET is given an index below CPU_SETSIZE (checked
    // above); sched_setaffinity(0) targets the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the calling thread `SCHED_FIFO` at `priority` (EPERM without the right to).
fn set_fifo_priority(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Locks the process's current and future pages in memory (ENOMEM or EPERM past the limit).
fn lock_memory() -> io::Result<()> {
    // SAFETY: plain syscall with constant flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
