//! A TCP echo server through the loop alone: the loop accepts connections, and each connection
//! is served by a thread that receives and sends through the loop; a client (also through the
//! loop) connects, sends a few messages and checks the echoes.
//!
//! ```text
//! cargo run --example tcp_echo [connections]
//! ```

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{echo, tcp_socket};
use static_uring::{Config, Error, Fd, Handle, IoBuf, IoBufMut, Storage};

type Loop = Handle<64, 32, 1024>;

/// All of the loop's memory, in a static.
static STORAGE: Storage<64, 32, 1024> = Storage::new();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connections: usize = std::env::args().nth(1).map_or(Ok(4), |s| s.parse())?;
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, Config::default())?;
    let loop_thread = event_loop.spawn("echo-loop")?;

    let listener = Arc::new(TcpListener::bind("127.0.0.1:0")?);
    let addr = listener.local_addr()?;
    let server = {
        let handle = handle.clone();
        std::thread::spawn(move || serve(&handle, listener, connections))
    };

    let start = Instant::now();
    for client in 0..connections {
        let socket: Fd = tcp_socket(addr).into();
        handle.connect(&socket, addr).wait()?;
        for round in 0..3 {
            let message = format!("client {client} round {round}").into_bytes();
            let len = message.len();
            handle
                .send(&socket, IoBuf::from(message))
                .wait()
                .map_err(|e| e.error)?;
            let deadline = Some(Instant::now() + Duration::from_secs(5));
            let (echo, _) = handle
                .recv(&socket, IoBufMut::with_capacity(len))
                .exact(len)
                .deadline(deadline)
                .wait()
                .map_err(|e| e.error)?;
            println!("{}", String::from_utf8_lossy(&echo));
        }
    }
    println!("{connections} connections echoed in {:?}", start.elapsed());
    server.join().expect("server thread")?;
    drop(handle);
    loop_thread.join().expect("loop thread")?;
    Ok(())
}

/// Accepts `connections` connections and echoes each on its own thread until its peer closes.
fn serve(handle: &Loop, listener: Arc<TcpListener>, connections: usize) -> Result<(), Error> {
    let mut workers = Vec::new();
    for _ in 0..connections {
        let stream: Fd = handle.accept(listener.clone()).wait()?.into();
        let handle = handle.clone();
        workers.push(std::thread::spawn(move || echo(&handle, &stream)));
    }
    for worker in workers {
        worker.join().expect("echo thread")?;
    }
    Ok(())
}
