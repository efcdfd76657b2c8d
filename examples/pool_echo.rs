//! A TCP echo server on the loop thread itself: `EventLoop::block_on` runs an accept loop that
//! spawns one `TaskPool` task per connection, so every receive and send is staged in the loop's
//! own iteration (no cross-thread hop, no eventfd). Clients on ordinary threads use blocking std
//! sockets and report round trips per second.
//!
//! ```text
//! cargo run --release --example pool_echo [connections] [round trips per connection]
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use static_uring::BufError;
use static_uring::{Config, Error, Fd, Handle, IoBuf, IoBufMut, Storage, TaskPool};

type Io = Handle<64, 64, 1024>;

static STORAGE: Storage<64, 64, 1024> = Storage::new();

/// The most connections served at once (more are accepted and closed: the pool is `Busy`).
const TASKS: usize = 16;

/// Echoes 64-byte messages until the peer closes. Each operation is awaited as a `LocalOp`
/// (`.local()`): it stays on the loop thread, so the loop hands its result over without a
/// locked read-modify-write.
async fn echo(io: Io, stream: Fd) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(64);
    loop {
        match io.recv(&stream, buf).exact(64).local().await {
            Ok((data, _)) => {
                let sent = io.send(&stream, IoBuf::from(data)).local().await;
                buf = sent
                    .map_err(|e| e.error)?
                    .into_mut()
                    .expect("a Vec-backed buffer");
                buf.clear();
            }
            Err(BufError {
                error: Error::UnexpectedEof,
                ..
            }) => return Ok(()),
            Err(BufError { error: e, .. }) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().map_or(Ok(4), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(20_000), |s| s.parse())?;
    assert!(connections <= TASKS, "at most {TASKS} connections");

    let (io, event_loop) = static_uring::with_storage(&STORAGE, Config::default())?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let listener = Fd::from(listener);

    let server = std::thread::spawn(move || {
        let pool = TaskPool::<_, TASKS>::leak();
        let accept_loop = async move {
            for _ in 0..connections {
                let stream = Fd::from(io.accept(&listener).await?);
                let task_io = io.clone();
                let task = async move {
                    if let Err(e) = echo(task_io, stream).await {
                        eprintln!("connection: {e}");
                    }
                };
                if pool.spawn(task).is_err() {
                    eprintln!("pool full: connection refused");
                }
            }
            Ok::<(), Error>(())
        };
        event_loop.block_on(pool.run(accept_loop))
    });

    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let (mut out, mut back) = ([7u8; 64], [0u8; 64]);
                for i in 0..rounds {
                    out[0] = i as u8;
                    stream.write_all(&out)?;
                    stream.read_exact(&mut back)?;
                    assert_eq!(back, out, "echoed as sent");
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread")?;
    }
    let elapsed = start.elapsed();
    server.join().expect("loop thread")??;
    let total = connections * rounds;
    println!(
        "{total} round trips over {connections} connections in {elapsed:.2?}: {:.0} round trips/s",
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
