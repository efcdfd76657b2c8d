//! One loop per core: a static array of storages, one loop pinned to each CPU, and TCP
//! connections handed to them by an acceptor loop through loop-to-loop messages.
//!
//! The acceptor accepts each connection through its own loop and posts its raw descriptor
//! (descriptors are process-wide) to the least loaded shard's mailbox with `Handle::post`
//! (`IORING_OP_MSG_RING`: a CQE in the shard's ring, no eventfd, no shared queue). Each shard
//! runs in loop-thread mode (`spawn_with`): its `block_on` future takes the descriptors with
//! `recv_message` and serves each connection as a `TaskPool` task (recv + send on the loop
//! thread). A client thread per connection checks the echo.
//!
//! ```text
//! cargo run --release --example sharded_echo [connections] [messages]
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use static_uring::{
    BufError, Config, Error, Fd, Handle, IoBuf, IoBufMut, Mailbox, Storage, TaskPool,
};

const SLOTS: usize = 64;
const RING: usize = 32;
const WHEEL: usize = 1024;
type Io = Handle<SLOTS, RING, WHEEL>;

/// The most shard loops this example starts (one per CPU, up to this many).
const MAX_SHARDS: usize = 8;
/// The most connections one shard serves at once (its task pool).
const TASKS: usize = 32;

/// All the loops' memory, in one static array (the shards, then the acceptor): nothing is
/// allocated per loop.
static STORAGES: [Storage<SLOTS, RING, WHEEL>; MAX_SHARDS + 1] =
    [const { Storage::new() }; MAX_SHARDS + 1];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connections: usize = std::env::args().nth(1).map_or(Ok(8), |s| s.parse())?;
    let messages: usize = std::env::args().nth(2).map_or(Ok(1000), |s| s.parse())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = cpus.min(MAX_SHARDS);

    // Live connections per shard: the acceptor adds one when it hands a connection over, the
    // shard takes it off when the connection ends.
    let load: Arc<Vec<AtomicUsize>> = Arc::new((0..shards).map(|_| AtomicUsize::new(0)).collect());

    // One loop per CPU, pinned there, serving the connections it is sent.
    let mut mailboxes: Vec<Mailbox> = Vec::new();
    let mut shard_handles: Vec<Io> = Vec::new();
    let mut loops = Vec::new();
    for (cpu, storage) in STORAGES.iter().take(shards).enumerate() {
        let config = Config {
            cpu: Some(cpu),
            idle_spin: Duration::ZERO,
            ..Config::default()
        };
        let (io, mut event_loop) = static_uring::with_storage(storage, config)?;
        mailboxes.push(event_loop.mailbox()?);
        shard_handles.push(io.clone());
        let load = load.clone();
        loops.push(
            event_loop.spawn_with(&format!("shard-{cpu}"), move || serve_shard(io, load, cpu))?,
        );
    }

    // The acceptor: its own loop, on a thread of its own.
    let (acceptor, acceptor_loop) =
        static_uring::with_storage(&STORAGES[MAX_SHARDS], Config::default())?;
    let acceptor_loop = acceptor_loop.spawn("acceptor")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let listener = Fd::from(listener);
    println!(
        "{shards} shard loops on {cpus} CPUs, {connections} connections, {messages} messages each"
    );

    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| std::thread::spawn(move || client(addr, messages)))
        .collect();
    let mut handed = vec![0usize; shards];
    for _ in 0..connections {
        let stream = acceptor.accept(&listener).wait()?;
        let shard = (0..shards)
            .min_by_key(|&s| load[s].load(Ordering::Relaxed))
            .expect("at least one shard");
        load[shard].fetch_add(1, Ordering::Relaxed);
        let fd = stream.into_raw_fd();
        if let Err(e) = acceptor.post(&mailboxes[shard], fd as u64).wait() {
            // Not handed over (the shard's inbox is full or it stopped): still ours to close.
            load[shard].fetch_sub(1, Ordering::Relaxed);
            // SAFETY: `fd` came from `into_raw_fd` above and nobody else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            eprintln!("connection refused: {e}");
            continue;
        }
        handed[shard] += 1;
    }
    for client in clients {
        client.join().expect("client thread")?;
    }
    let elapsed = start.elapsed();
    let round_trips = (connections * messages) as f64;
    println!(
        "{} round trips in {elapsed:?}: {:.0} round trips/s; connections per shard {handed:?}",
        connections * messages,
        round_trips / elapsed.as_secs_f64()
    );

    // Stop the shards: their waiting `recv_message` ends `Closed`, their tasks have returned.
    for io in &shard_handles {
        io.shutdown();
    }
    drop((shard_handles, acceptor));
    for shard in loops {
        shard.join().expect("shard thread")??;
    }
    acceptor_loop.join().expect("acceptor thread")?;
    Ok(())
}

/// A shard's loop-thread future: takes the descriptors posted to this loop and serves each as a
/// task, until the loop stops.
async fn serve_shard(io: Io, load: Arc<Vec<AtomicUsize>>, shard: usize) -> Result<(), Error> {
    let pool = TaskPool::<_, TASKS>::leak();
    pool.run(async move {
        loop {
            let fd = match io.recv_message().await {
                Ok(fd) => fd as i32,
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            // SAFETY: the acceptor gave this descriptor up (`into_raw_fd`) and posted it here
            // once: this task is its only owner.
            let stream = Fd::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let (task_io, load) = (io.clone(), load.clone());
            let task = async move {
                match echo(&task_io, &stream).await {
                    // `Closed`: the shard stopped between two messages of a finished client.
                    Ok(()) | Err(Error::Closed) => {}
                    Err(e) => eprintln!("shard {shard}: connection: {e}"),
                }
                load[shard].fetch_sub(1, Ordering::Relaxed);
            };
            if pool.spawn(task).is_err() {
                eprintln!("shard {shard}: pool full, connection closed");
            }
        }
    })
    .await
}

/// Echoes whatever arrives until the peer closes.
async fn echo(io: &Io, stream: &Fd) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(256);
    loop {
        buf.clear();
        match io.recv(stream, buf).limit(256).await {
            Ok((data, _)) => {
                let sent = io.send(stream, IoBuf::from(data)).await;
                buf = sent
                    .map_err(|e| e.error)?
                    .into_mut()
                    .expect("a Vec-backed buffer");
            }
            Err(BufError {
                error: Error::UnexpectedEof,
                ..
            }) => return Ok(()),
            Err(BufError { error: e, .. }) => return Err(e),
        }
    }
}

/// Connects, sends `messages` 64-byte messages and checks each echo.
fn client(addr: std::net::SocketAddr, messages: usize) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let (mut out, mut back) = ([7u8; 64], [0u8; 64]);
    for i in 0..messages {
        out[0] = i as u8;
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        assert_eq!(back, out, "echoed as sent");
    }
    Ok(())
}
