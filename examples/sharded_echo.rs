//! One loop per core: a static array of storages, one loop pinned to each CPU, and TCP
//! connections sharded over them round-robin. Each connection is accepted through loop 0 and then
//! served (recv + send) through the loop of its shard; a client per connection checks the echo.
//!
//! ```text
//! cargo run --release --example sharded_echo [connections] [messages]
//! ```

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{echo, tcp_socket};
use static_uring::{Config, Error, Fd, Handle, IoBuf, IoBufMut, Storage};

const SLOTS: usize = 64;
const RING: usize = 32;
const WHEEL: usize = 1024;
type Io = Handle<SLOTS, RING, WHEEL>;

/// The most loops this example starts (one per CPU, up to this many).
const MAX_SHARDS: usize = 8;

/// All the loops' memory, in one static array: nothing is allocated per loop.
static STORAGES: [Storage<SLOTS, RING, WHEEL>; MAX_SHARDS] = [const { Storage::new() }; MAX_SHARDS];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connections: usize = std::env::args().nth(1).map_or(Ok(8), |s| s.parse())?;
    let messages: usize = std::env::args().nth(2).map_or(Ok(1000), |s| s.parse())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = cpus.min(MAX_SHARDS);

    // One loop per CPU, pinned there.
    let mut handles: Vec<Io> = Vec::new();
    let mut loops = Vec::new();
    for (cpu, storage) in STORAGES.iter().take(shards).enumerate() {
        let config = Config {
            cpu: Some(cpu),
            idle_spin: Duration::ZERO,
            ..Config::default()
        };
        let (handle, event_loop) = static_uring::with_storage(storage, config)?;
        loops.push(event_loop.spawn(&format!("shard-{cpu}"))?);
        handles.push(handle);
    }
    println!("{shards} loops on {cpus} CPUs, {connections} connections, {messages} messages each");

    let listener = Arc::new(TcpListener::bind("127.0.0.1:0")?);
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..connections {
        let shard = handles[i % shards].clone();
        let client_io = handles[(i + 1) % shards].clone();
        clients.push(std::thread::spawn(move || {
            client(&client_io, addr, messages)
        }));
        let stream: Fd = handles[0].accept(listener.clone()).wait()?.into();
        servers.push(std::thread::spawn(move || echo(&shard, &stream)));
    }
    for client in clients {
        client.join().expect("client thread")?;
    }
    for server in servers {
        server.join().expect("server thread")?;
    }
    let elapsed = start.elapsed();
    let round_trips = (connections * messages) as f64;
    println!(
        "{} round trips in {elapsed:?}: {:.0} round trips/s",
        connections * messages,
        round_trips / elapsed.as_secs_f64()
    );
    drop(handles);
    for event_loop in loops {
        event_loop.join().expect("loop thread")?;
    }
    Ok(())
}

/// Connects, sends `messages` 64-byte messages and checks each echo.
fn client(io: &Io, addr: SocketAddr, messages: usize) -> Result<(), Error> {
    let socket: Fd = tcp_socket(addr).into();
    io.connect(&socket, addr).wait()?;
    let mut out = IoBuf::from(vec![7u8; 64]);
    let mut inb = IoBufMut::with_capacity(64);
    for _ in 0..messages {
        out = io.send(&socket, out).wait().map_err(|e| e.error)?;
        inb.clear();
        let (buf, _) = io
            .recv(&socket, inb)
            .exact(64)
            .wait()
            .map_err(|e| e.error)?;
        assert_eq!(&buf[..], &out[..]);
        inb = buf;
    }
    Ok(())
}
