use static_uring::{Config, IoBuf, IoBufMut};
use std::sync::Arc;

#[test]
fn nop_and_read_round_trip() {
    let (handle, event_loop) = static_uring::new::<8, 4, 64>(Config::default()).unwrap();
    let thread = std::thread::spawn(move || event_loop.run());
    for _ in 0..100 {
        handle.nop(None).wait().unwrap();
    }
    let file = Arc::new(std::fs::File::open("/proc/self/exe").unwrap());
    let buf = handle
        .read_at(file, 0, 4, IoBufMut::with_capacity(4), None)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"\x7fELF");
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let sent = handle
        .send(a.clone(), IoBuf::from(&b"hello"[..]), None)
        .wait()
        .unwrap();
    assert_eq!(&sent[..], b"hello");
    let (buf, filled) = handle
        .recv(b.clone(), IoBufMut::with_capacity(16), 0, 5, true, None)
        .wait()
        .unwrap();
    assert_eq!((filled, &buf[..]), (5, &b"hello"[..]));
    drop(handle);
    thread.join().unwrap().unwrap();
}
