//! A stand-in for a dropped crypto-miner, for the README walk-through
//! test: `fake_miner -o HOST:PORT` connects to its "pool" (a loopback
//! listener the test owns) and holds the connection until killed.
use std::{io::Read, net::TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pool = args
        .iter()
        .position(|a| a == "-o")
        .and_then(|i| args.get(i + 1))
        .expect("usage: fake_miner -o HOST:PORT");
    let mut stream = TcpStream::connect(pool).expect("connect to the pool");
    // Blocks until the pool closes the connection or the miner is killed.
    let _ = stream.read(&mut [0u8; 1]);
}
