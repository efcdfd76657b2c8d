//! static-uring behind [`AsyncIo`].

use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use static_uring::{Config, EventLoop, Fd, Handle, IoBuf, IoBufMut};

use super::tasks::{AsyncIo, Started};

/// The sizes used by every benchmark: 256 slots, 128 in the kernel, 1024 wheel slots.
pub type H = Handle<256, 128, 1024>;
/// The loop of those sizes.
pub type L = EventLoop<256, 128, 1024>;

#[derive(Clone)]
pub struct SuIo(pub H);

/// Joins the loop thread once the last handle is gone.
struct Join(Option<JoinHandle<Result<(), static_uring::Error>>>);

impl Drop for Join {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            thread
                .join()
                .expect("loop thread panicked")
                .expect("loop failed");
        }
    }
}

impl SuIo {
    /// A heap-backed loop on its own thread with `idle_spin = spin` and `single_issuer`, the
    /// rest default.
    pub fn start(spin: Duration, single_issuer: bool) -> Started<SuIo> {
        let config = Config {
            idle_spin: spin,
            single_issuer,
            busy_poll: super::profiling_busy_poll(),
            ..Config::default()
        };
        let (handle, event_loop) = static_uring::new::<256, 128, 1024>(config).expect("loop");
        let thread = std::thread::Builder::new()
            .name("static-uring".into())
            .spawn(move || event_loop.run())
            .expect("spawn the loop thread");
        // One round trip: the loop thread is up (its start-up allocations are done) before any
        // timed region.
        handle.nop().wait().expect("first nop");
        Started {
            io: SuIo(handle),
            guard: Box::new(Join(Some(thread))),
        }
    }

    /// Starts a loop built by the caller (registered files or buffers, any `Config`) with
    /// `EventLoop::spawn`, which applies the config's placement (`cpu`); a placement the process
    /// may not use is an `Err` saying so.
    pub fn spawn(handle: H, event_loop: L) -> Result<Started<SuIo>, String> {
        let thread = event_loop
            .spawn("static-uring")
            .map_err(|e| format!("EventLoop::spawn failed: {e}"))?;
        // As in `start`: the loop thread is up before any timed region.
        handle.nop().wait().expect("first nop");
        Ok(Started {
            io: SuIo(handle),
            guard: Box::new(Join(Some(thread))),
        })
    }
}

impl AsyncIo for SuIo {
    type Fd = Fd;
    type RBuf = IoBufMut;
    type SBuf = IoBuf;

    /// Leaked (`Fd::leak`): the harness keeps its descriptors for the whole process, and a
    /// static `Fd` costs no reference count per operation, as the floor's and the channel
    /// loop's raw descriptors cost none.
    fn fd<T: AsFd + Send + Sync + 'static>(&self, owner: Arc<T>) -> Fd {
        Fd::leak(owner)
    }

    fn rbuf(&self, memory: &'static mut [u8]) -> IoBufMut {
        IoBufMut::from(memory)
    }

    fn sbuf(&self, memory: &'static [u8]) -> IoBuf {
        IoBuf::from(memory)
    }

    async fn nop(&self) {
        self.0.nop().await.expect("nop");
    }

    async fn read_at(&self, fd: &Fd, offset: u64, buf: IoBufMut) -> IoBufMut {
        let len = buf.capacity();
        match self.0.read_at(fd, offset, buf).limit(len).await {
            Ok(buf) => buf,
            Err(e) => panic!("read_at: {e}"),
        }
    }

    async fn send(&self, fd: &Fd, buf: IoBuf) -> IoBuf {
        match self.0.send(fd, buf).await {
            Ok(buf) => buf,
            Err(e) => panic!("send: {e}"),
        }
    }

    async fn recv_exact(&self, fd: &Fd, buf: IoBufMut, len: usize) -> IoBufMut {
        match self.0.recv(fd, buf).exact(len).await {
            Ok((buf, _)) => buf,
            Err(e) => panic!("recv: {e}"),
        }
    }

    // Out of line: `scripts/profile` counts a caller's instructions inside this call.
    #[inline(never)]
    fn nop_wait(&self) {
        self.0.nop().wait().expect("nop");
    }

    fn counters(&self) -> Option<(u64, u64)> {
        let m = self.0.metrics();
        Some((m.enters, m.wakeups))
    }

    fn read_at_wait(&self, fd: &Fd, offset: u64, buf: IoBufMut) -> IoBufMut {
        let len = buf.capacity();
        match self.0.read_at(fd, offset, buf).limit(len).wait() {
            Ok(buf) => buf,
            Err(e) => panic!("read_at: {e}"),
        }
    }
}
