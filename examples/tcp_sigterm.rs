//! A new user's TCP server in loop-thread mode that stops on SIGTERM, with the toolkit alone
//! (the README's quick start, with clients added to measure it): one pool task per connection,
//! deadlines on every operation, `Signals` and `Handle::shutdown`. Client threads make 64-byte
//! round trips, then the program sends itself SIGTERM (with the `kill` command) and the server
//! stops cleanly.
//!
//! ```text
//! cargo run --release --example tcp_sigterm [clients] [round trips per client]
//! ```

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use static_uring::net::TcpListener;
use static_uring::signal::{Signals, SIGTERM};
use static_uring::{Config, IoBuf, IoBufMut, TaskPool};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|s| s.parse::<usize>());
    let (clients, rounds) = (
        args.next().unwrap_or(Ok(4))?,
        args.next().unwrap_or(Ok(20_000))?,
    );
    let config = Config {
        shutdown_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let (io, event_loop) = static_uring::new::<256, 128, 4096>(config)?;
    let mut signals = Signals::new(&io, &[SIGTERM])?; // before any other thread starts
    let listener = TcpListener::bind(&io, "127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;

    let load = std::thread::spawn(move || -> std::io::Result<f64> {
        let start = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                std::thread::spawn(move || -> std::io::Result<()> {
                    let mut stream = std::net::TcpStream::connect(addr)?;
                    let (msg, mut back) = ([1u8; 64], [0u8; 64]);
                    for _ in 0..rounds {
                        stream.write_all(&msg)?;
                        stream.read_exact(&mut back)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client")?;
        }
        let rate = (clients * rounds) as f64 / start.elapsed().as_secs_f64();
        std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()?;
        Ok(rate)
    });

    let connections = TaskPool::<_, 64>::leak();
    let acceptor = TaskPool::<_, 1>::leak();
    let main = async move {
        let accept_loop = async move {
            while let Ok(stream) = listener.accept().await {
                let echo = async move {
                    let mut buf = IoBufMut::with_capacity(4096);
                    while let Ok((data, _)) =
                        stream.recv(buf).timeout(Duration::from_secs(30)).await
                    {
                        let Ok(sent) = stream
                            .send(IoBuf::from(data))
                            .timeout(Duration::from_secs(5))
                            .await
                        else {
                            break;
                        };
                        buf = sent.into_mut().expect("our buffer");
                        buf.clear();
                    }
                };
                let _ = connections.spawn(echo);
            }
        };
        let _ = acceptor.spawn(accept_loop);
        let _ = signals.recv().await;
        io.shutdown();
    };
    event_loop.block_on(connections.run(acceptor.run(main)))?;
    let rate = load.join().expect("the clients")?;
    println!("tcp_sigterm: {rate:.0} round trips/s over {clients} connections; stopped on SIGTERM");
    Ok(())
}
