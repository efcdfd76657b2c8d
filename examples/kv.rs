//! A key-value server that speaks the Redis protocol (RESP: PING, GET, SET, DEL, ECHO), in
//! loop-thread mode, with the toolkit alone: `net::TcpListener`, one `TaskPool` task per
//! connection, an idle timeout and a per-reply deadline on every operation, a clean stop on
//! `SIGTERM` (`signal::Signals`, then `Handle::shutdown`), and the loop's metrics and the
//! process's allocations per request printed at exit. `redis-cli` and `redis-benchmark` talk to
//! it; `scripts/redis-bench` runs the benchmark against it and `redis-server` side by side.
//!
//! ```text
//! cargo run --release --example kv [port]        # default 6380; stop with Ctrl-C or SIGTERM
//! redis-cli -p 6380 set greeting hello && redis-cli -p 6380 get greeting
//! ```
//!
//! The table has a fixed capacity (`ENTRIES` keys of up to `KEY` bytes, values up to `VALUE`
//! bytes) and is allocated once at start, as are the connections' buffers: serving a request
//! allocates nothing (an accepted connection costs one `Arc` for its descriptor).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use static_uring::net::{TcpListener, TcpStream};
use static_uring::signal::{Signals, SIGINT, SIGTERM};
use static_uring::{BufError, Config, Error, IoBuf, IoBufMut, Storage, TaskPool};

/// The tests' counting global allocator: the process's allocations, reported at exit per request.
#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

/// Connections served at once (more are accepted and closed: the pool is full).
const CONNECTIONS: usize = 128;
/// Keys the table holds, and the largest key and value.
const ENTRIES: usize = 1 << 16;
const KEY: usize = 64;
const VALUE: usize = 512;
/// Bytes of requests buffered per connection (a pipeline of commands fits), and of replies.
const IN: usize = 16 * 1024;
const OUT: usize = 64 * 1024;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// A reply not written within this long (a client that stopped reading) closes the connection.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

type Stream = TcpStream<512, 256, 4096>;
static STORAGE: Storage<512, 256, 4096> = Storage::new();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(6380), |p| p.parse())?;
    let config = Config {
        // At a stop, requests in flight (the accept, idle connections' receives) get this long.
        shutdown_timeout: Some(Duration::from_millis(200)),
        // DEFER_TASKRUN: socket completions run as task work at the loop's next enter, not as
        // interrupts of whatever runs. With 50 clients: about 1.7x the requests per second
        // (92k -> 155k GET/s here, scripts/redis-bench). `KV_PLAIN=1` turns it off.
        single_issuer: std::env::var_os("KV_PLAIN").is_none(),
        ..Config::default()
    };
    let (io, event_loop) = static_uring::with_storage(&STORAGE, config)?;
    // Before any other thread starts (the loop runs on this one).
    let mut signals = Signals::new(&io, &[SIGTERM, SIGINT])?;
    let listener = TcpListener::bind(&io, ([127, 0, 0, 1], port).into())?;
    let reader = event_loop.metrics_reader();
    let state = Rc::new(State {
        table: RefCell::new(Table::new()),
        buffers: RefCell::new(
            (0..CONNECTIONS)
                .map(|_| (IoBufMut::with_capacity(IN), IoBufMut::with_capacity(OUT)))
                .collect(),
        ),
        requests: std::cell::Cell::new(0),
    });
    println!("kv: listening on 127.0.0.1:{port} (RESP: PING, GET, SET, DEL, ECHO)");

    let start_allocs = counting_alloc::AllocCount::now();
    let conns = TaskPool::<_, CONNECTIONS>::leak();
    let acceptor = TaskPool::<_, 1>::leak();
    let s = state.clone();
    let stopper = io.clone();
    let main = async move {
        let accept_loop = async move {
            loop {
                let stream = match listener.accept().await {
                    Ok(stream) => stream,
                    // The shutdown: the accept was abandoned, or refused once it began.
                    Err(Error::Abandoned | Error::Closed) => return,
                    Err(e) => {
                        eprintln!("kv: accept: {e}");
                        continue;
                    }
                };
                let Some(buffers) = s.buffers.borrow_mut().pop() else {
                    continue; // every connection's buffers are in use: close this one
                };
                if let Err(busy) = conns.spawn(serve(stream, buffers, s.clone())) {
                    drop(busy); // the pool is full: the connection closes
                }
            }
        };
        assert!(acceptor.spawn(accept_loop).is_ok());
        match signals.recv().await {
            Ok(SIGINT) => println!("kv: SIGINT: stopping"),
            Ok(_) => println!("kv: SIGTERM: stopping"),
            Err(e) => println!("kv: the loop stopped ({e})"),
        }
        stopper.shutdown();
    };
    drop(io);
    event_loop.block_on(conns.run(acceptor.run(main)))?;

    let allocations = counting_alloc::AllocCount::now().since(start_allocs).allocs;
    let requests = state.requests.get();
    println!(
        "kv: {requests} requests, {allocations} allocations while serving ({:.4} per request)",
        allocations as f64 / requests.max(1) as f64
    );
    println!("kv: {:?}", reader.get());
    Ok(())
}

struct State {
    table: RefCell<Table>,
    /// A request buffer and a reply buffer per connection, made at start and reused.
    buffers: RefCell<Vec<(IoBufMut, IoBufMut)>>,
    requests: std::cell::Cell<u64>,
}

/// Serves one connection until it closes, goes idle or the loop stops; its buffers go back.
async fn serve(stream: Stream, buffers: (IoBufMut, IoBufMut), state: Rc<State>) {
    let (mut input, mut output) = buffers;
    input.clear();
    output.clear();
    loop {
        // Received after what is kept of an incomplete command.
        let kept = input.len();
        let open = match stream.recv(input).offset(kept).timeout(IDLE).await {
            Ok((buf, _)) => {
                input = buf;
                true
            }
            Err(BufError { buf, .. }) => {
                input = buf; // end of stream, idle, or the shutdown
                false
            }
        };
        let (used, served) = answer(&input, &mut output, &mut state.table.borrow_mut());
        state.requests.set(state.requests.get() + served);
        let rest = input.len() - used;
        input.copy_within(used.., 0);
        input.truncate(rest);
        if !output.is_empty() {
            let sent = stream
                .send(IoBuf::from(output))
                .timeout(REPLY_DEADLINE)
                .await;
            let failed = sent.is_err();
            let buf = sent.unwrap_or_else(|e| e.buf);
            output = buf.into_mut().expect("our own buffer");
            output.clear();
            if failed {
                break;
            }
        }
        if !open || rest == input.capacity() {
            break; // closed, idle, stopping, or one command larger than the buffer
        }
    }
    input.clear();
    state.buffers.borrow_mut().push((input, output));
}

/// Answers every complete command at the start of `input` into `output` (while it has room for
/// the largest reply); returns the bytes used and the commands answered.
fn answer(input: &[u8], output: &mut IoBufMut, table: &mut Table) -> (usize, u64) {
    let (mut used, mut served) = (0, 0);
    while output.capacity() - output.len() >= VALUE + 32 {
        let Some((args, n)) = parse(&input[used..]) else {
            break;
        };
        used += n;
        served += 1;
        reply(&args, output, table);
    }
    (used, served)
}

/// Up to this many arguments per command (DEL with more keys is refused).
const ARGS: usize = 8;

/// One command's arguments (slices of the input), and their number.
struct Args<'a> {
    items: [&'a [u8]; ARGS],
    len: usize,
    /// More arguments than `ARGS`, or a malformed command.
    bad: bool,
}

impl<'a> Args<'a> {
    fn get(&self, i: usize) -> &'a [u8] {
        self.items[i]
    }
}

/// The first command in `buf`: a RESP array of bulk strings (`*2\r\n$3\r\nGET\r\n...`) or an
/// inline command (`PING\r\n`); `None` while it is incomplete. Returns its bytes' length.
fn parse(buf: &[u8]) -> Option<(Args<'_>, usize)> {
    let mut args = Args {
        items: [&[]; ARGS],
        len: 0,
        bad: false,
    };
    if buf.first() != Some(&b'*') {
        let end = find_crlf(buf)?;
        for word in buf[..end].split(|&b| b == b' ').filter(|w| !w.is_empty()) {
            push(&mut args, word);
        }
        return Some((args, end + 2));
    }
    let (count, mut at) = number(buf, 1)?;
    for _ in 0..count.max(0) {
        if buf.get(at) != Some(&b'$') {
            args.bad = true;
            return Some((args, buf.len().min(at + 1)));
        }
        let (len, start) = number(buf, at + 1)?;
        let end = start + usize::try_from(len).ok()?;
        if buf.len() < end + 2 {
            return None;
        }
        push(&mut args, &buf[start..end]);
        at = end + 2;
    }
    Some((args, at))
}

fn push<'a>(args: &mut Args<'a>, item: &'a [u8]) {
    match args.items.get_mut(args.len) {
        Some(slot) => {
            *slot = item;
            args.len += 1;
        }
        None => args.bad = true,
    }
}

/// The decimal number at `buf[from..]` up to `\r\n` (-1 if it is not one), and where the next
/// line starts.
fn number(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let end = from + find_crlf(buf.get(from..)?)?;
    let digits = &buf[from..end];
    let valid = !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit);
    let value = match valid {
        true => digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')),
        false => -1,
    };
    Some((value, end + 2))
}

/// Where the first `\r\n` starts.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + buf[from..].iter().position(|&b| b == b'\r')?;
        if buf.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Writes the reply to one command. `output` has room for the largest reply.
fn reply(args: &Args<'_>, output: &mut IoBufMut, table: &mut Table) {
    let out = |output: &mut IoBufMut, bytes: &[u8]| {
        let _ = output.extend_from_slice(bytes);
    };
    if args.bad || args.len == 0 {
        return out(output, b"-ERR malformed or too long command\r\n");
    }
    let command = args.get(0);
    let is = |name: &[u8]| command.eq_ignore_ascii_case(name);
    match args.len {
        1 if is(b"PING") => out(output, b"+PONG\r\n"),
        2 if is(b"PING") || is(b"ECHO") => bulk(output, Some(args.get(1))),
        2 if is(b"GET") => bulk(output, table.get(args.get(1))),
        3 if is(b"SET") => match table.set(args.get(1), args.get(2)) {
            true => out(output, b"+OK\r\n"),
            false => out(
                output,
                b"-ERR key too long, value too long or table full\r\n",
            ),
        },
        n if n >= 2 && is(b"DEL") => {
            let removed = (1..n).filter(|&i| table.del(args.get(i))).count();
            integer(output, removed);
        }
        // What redis-benchmark and redis-cli ask at start: nothing to report.
        _ if is(b"CONFIG") || is(b"COMMAND") => out(output, b"*0\r\n"),
        _ => out(
            output,
            b"-ERR unknown command or wrong number of arguments\r\n",
        ),
    }
}

/// `$<len>\r\n<bytes>\r\n`, or the null bulk string.
fn bulk(output: &mut IoBufMut, value: Option<&[u8]>) {
    let Some(value) = value else {
        let _ = output.extend_from_slice(b"$-1\r\n");
        return;
    };
    let _ = output.extend_from_slice(b"$");
    decimal(output, value.len());
    let _ = output.extend_from_slice(b"\r\n");
    let _ = output.extend_from_slice(value);
    let _ = output.extend_from_slice(b"\r\n");
}

fn integer(output: &mut IoBufMut, n: usize) {
    let _ = output.extend_from_slice(b":");
    decimal(output, n);
    let _ = output.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without allocating.
fn decimal(output: &mut IoBufMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let _ = output.extend_from_slice(&digits[at..]);
}

/// An open-addressing hash table of fixed capacity (linear probing, tombstones), allocated once.
struct Table {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    state: Slot,
    key_len: u8,
    value_len: u16,
    key: [u8; KEY],
    value: [u8; VALUE],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Used,
    Deleted,
}

impl Table {
    fn new() -> Self {
        let empty = Entry {
            state: Slot::Empty,
            key_len: 0,
            value_len: 0,
            key: [0; KEY],
            value: [0; VALUE],
        };
        Table {
            entries: vec![empty; ENTRIES],
        }
    }

    /// FNV-1a.
    fn home(key: &[u8]) -> usize {
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        hash as usize % ENTRIES
    }

    /// The entry holding `key`, or (`Err`) the first free one on its probe path.
    fn find(&self, key: &[u8]) -> Result<usize, Option<usize>> {
        let mut free = None;
        let home = Self::home(key);
        for step in 0..ENTRIES {
            let i = (home + step) % ENTRIES;
            let e = &self.entries[i];
            match e.state {
                Slot::Empty => return Err(free.or(Some(i))),
                Slot::Deleted => free = free.or(Some(i)),
                Slot::Used if &e.key[..e.key_len as usize] == key => return Ok(i),
                Slot::Used => {}
            }
        }
        Err(free)
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let e = &self.entries[self.find(key).ok()?];
        Some(&e.value[..e.value_len as usize])
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> bool {
        if key.len() > KEY || value.len() > VALUE {
            return false;
        }
        let i = match self.find(key) {
            Ok(i) => i,
            Err(Some(i)) => i,
            Err(None) => return false,
        };
        let e = &mut self.entries[i];
        e.state = Slot::Used;
        e.key_len = key.len() as u8;
        e.key[..key.len()].copy_from_slice(key);
        e.value_len = value.len() as u16;
        e.value[..value.len()].copy_from_slice(value);
        true
    }

    fn del(&mut self, key: &[u8]) -> bool {
        match self.find(key) {
            Ok(i) => {
                self.entries[i].state = Slot::Deleted;
                true
            }
            Err(_) => false,
        }
    }
}
