//! Domains without lookups: watch learns which domain an address came from
//! by reading the host's own DNS answers. A test resolver on loopback
//! (port 53 of a 127/8 address of its own) answers a test domain with a
//! loopback address; the test queries it directly and connects there. No
//! lookup leaves the host: the only name is the test's own, in an
//! indicator file, with the built-in (pool) indicators off.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use simple_dns::{
    rdata::{RData, A},
    Name, Packet, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
};
use tracer_tests::{running_as_root, watch::Watch, Scratch};

/// A DNS server on `ADDR:53` that answers every A question with `answer`.
struct TestResolver {
    socket: UdpSocket,
    tcp: TcpListener,
    answer: Ipv4Addr,
}

impl TestResolver {
    /// Binds port 53 on a 127/8 address derived from the test's PID, so
    /// no other test (or the host's stub resolver on 127.0.0.53) collides.
    fn start(answer: Ipv4Addr) -> TestResolver {
        let pid = std::process::id();
        for n in 0..64u32 {
            let x = pid.wrapping_add(n * 7919);
            let addr = Ipv4Addr::new(127, 53, (x >> 8) as u8, (x as u8).clamp(1, 254));
            if let (Ok(socket), Ok(tcp)) =
                (UdpSocket::bind((addr, 53)), TcpListener::bind((addr, 53)))
            {
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                return TestResolver {
                    socket,
                    tcp,
                    answer,
                };
            }
        }
        panic!("no free loopback address for the test resolver's port 53");
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Answers one query.
    fn serve_one(&self) {
        let mut buf = [0u8; 512];
        let (n, from) = self.socket.recv_from(&mut buf).expect("a query");
        self.socket.send_to(&self.reply(&buf[..n]), from).unwrap();
    }

    /// Answers one query over TCP (each message after its 2-byte length).
    fn serve_one_tcp(&self) {
        let (mut conn, _) = self.tcp.accept().expect("a TCP query");
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).unwrap();
        let mut query = vec![0u8; u16::from_be_bytes(len).into()];
        conn.read_exact(&mut query).unwrap();
        let reply = self.reply(&query);
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        conn.write_all(&framed).unwrap();
    }

    /// The answer to `query`: each A question answered with `answer`.
    fn reply(&self, query: &[u8]) -> Vec<u8> {
        let query = Packet::parse(query).expect("a DNS query");
        let mut reply = Packet::new_reply(query.id());
        for q in &query.questions {
            reply.questions.push(q.clone());
            reply.answers.push(ResourceRecord::new(
                q.qname.clone(),
                CLASS::IN,
                5, // a short TTL: watch keeps it longer (MIN_KEEP)
                RData::A(A {
                    address: u32::from(self.answer),
                }),
            ));
        }
        reply.build_bytes_vec().unwrap()
    }
}

/// A query for the A record of `name`.
fn question(name: &str) -> Vec<u8> {
    let mut q = Packet::new_query(0x7e57);
    q.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    q.build_bytes_vec().unwrap()
}

/// Asks `resolver` for `name` from a client socket, as a program would,
/// and returns the address answered.
fn query(resolver: &TestResolver, name: &str) -> Ipv4Addr {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(&question(name), resolver.addr()).unwrap();
    resolver.serve_one();
    let mut buf = [0u8; 512];
    let n = client.recv(&mut buf).expect("the test resolver's answer");
    first_address(&buf[..n])
}

/// The same over TCP, as a resolver does after a truncated answer.
fn query_tcp(resolver: &TestResolver, name: &str) -> Ipv4Addr {
    let mut client = TcpStream::connect(resolver.addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let q = question(name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    client.write_all(&framed).unwrap();
    resolver.serve_one_tcp();
    let mut len = [0u8; 2];
    client.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u16::from_be_bytes(len).into()];
    client.read_exact(&mut answer).unwrap();
    first_address(&answer)
}

fn first_address(message: &[u8]) -> Ipv4Addr {
    let answer = Packet::parse(message).unwrap();
    match &answer.answers[0].rdata {
        RData::A(a) => Ipv4Addr::from(a.address),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// One test's "pool": a domain listed in an indicator file, a listener on
/// a loopback address of its own (each test its own `net`: every watch on
/// the host learns every answer), and the resolver that answers it.
struct Pool {
    domain: String,
    _dir: Scratch,
    /// `--ioc FILE` and the options every test gives watch.
    args: Vec<String>,
    _listener: TcpListener,
    addr: Ipv4Addr,
    port: u16,
    resolver: TestResolver,
}

impl Pool {
    fn new(name: &str, net: u8) -> Pool {
        let pid = std::process::id();
        let domain = format!("{name}-{pid}.tracer-test.invalid");
        let dir = Scratch::under(&std::env::temp_dir(), "tracer-dns");
        let iocs = dir.write("iocs.txt", &format!("# test pool\n{domain}\n"), 0o644);
        let addr = Ipv4Addr::new(127, net, (pid >> 8) as u8, (pid as u8).clamp(1, 254));
        let listener = TcpListener::bind((addr, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let args = ["--connect-only", "--no-default-iocs", "--ioc"]
            .map(String::from)
            .into_iter()
            .chain([iocs.display().to_string()])
            .collect();
        Pool {
            domain,
            _dir: dir,
            args,
            _listener: listener,
            addr,
            port,
            resolver: TestResolver::start(addr),
        }
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// A program's lookup of the domain (answered by the test resolver),
    /// then its connect to the address answered.
    fn resolve_and_connect(&self, over_tcp: bool) {
        let answered = if over_tcp {
            query_tcp(&self.resolver, &self.domain)
        } else {
            query(&self.resolver, &self.domain)
        };
        assert_eq!(answered, self.addr);
        drop(TcpStream::connect((answered, self.port)).unwrap());
    }
}

#[test]
fn a_connect_to_an_address_a_dns_answer_named_raises_the_domain_alert() {
    if !running_as_root("a_connect_to_an_address_a_dns_answer_named_raises_the_domain_alert") {
        return;
    }
    let p = Pool::new("pool", 54);
    let (watch, start) = Watch::start_with(&p.args(), &[]);
    assert!(
        start["dns"]
            .as_str()
            .unwrap()
            .starts_with("AF_PACKET sockets"),
        "watch reads DNS answers: {start}"
    );
    // Before any answer: a connect to the pool address is not tagged.
    drop(TcpStream::connect((p.addr, p.port)).unwrap());
    let untagged = watch.wait_for("the connect before the answer", |v| {
        v["type"] == "connect" && v["dport"].as_u64() == Some(p.port.into())
    });
    assert!(untagged.get("domain").is_none(), "{untagged}");

    p.resolve_and_connect(false);
    let alert = watch.wait_for("the domain alert", |v| {
        v["type"] == "alert" && v["connect"]["dport"].as_u64() == Some(p.port.into())
    });
    assert_eq!(alert["indicator"], p.domain.as_str(), "{alert}");
    assert_eq!(alert["connect"]["domain"], p.domain.as_str(), "{alert}");
    assert_eq!(alert["connect"]["daddr"], p.addr.to_string());
    assert_eq!(
        alert["connect"]["pid"].as_u64(),
        Some(std::process::id().into())
    );
    assert!(alert["indicator_source"]
        .as_str()
        .unwrap()
        .ends_with("iocs.txt:2"));
    // An address named by a domain indicator: high, or critical with a
    // second sign (none expected of the test binary, but its path is CI's).
    assert!(
        ["high", "critical"].contains(&alert["severity"].as_str().unwrap()),
        "{alert}"
    );
    let (code, stderr) = watch.stop_collecting();
    assert_eq!(code, 0, "{stderr}");
    // Nothing was looked up: a lookup of this name would have failed
    // (.invalid) and said so.
    assert!(!stderr.contains("resolve"), "{stderr}");
}

#[test]
fn human_lines_name_the_domain_of_the_connect_and_the_alert() {
    if !running_as_root("human_lines_name_the_domain_of_the_connect_and_the_alert") {
        return;
    }
    let p = Pool::new("human", 55);
    let watch = Watch::spawn_with(&p.args(), &[]);
    while !watch.next_line("the start lines").contains("  dns ") {}

    p.resolve_and_connect(false);
    let wanted = format!("{}:{} ({})", p.addr, p.port, p.domain);
    let (mut connect, mut alert) = (None, None);
    while connect.is_none() || alert.is_none() {
        let line = watch.next_line("the connect and alert lines");
        if line.contains(&wanted) && line.contains("CONNECT") {
            connect = Some(line);
        } else if line.contains(&wanted) && line.contains("ALERT") {
            alert = Some(line);
        }
    }
    assert!(alert.unwrap().contains(&format!("matches {}", p.domain)));
    assert_eq!(watch.stop_collecting().0, 0);
}

#[test]
fn an_answer_over_tcp_tags_the_connect_too() {
    if !running_as_root("an_answer_over_tcp_tags_the_connect_too") {
        return;
    }
    let p = Pool::new("tcp", 56);
    let (watch, _) = Watch::start_with(&p.args(), &[]);
    p.resolve_and_connect(true);
    let alert = watch.wait_for("the domain alert", |v| {
        v["type"] == "alert" && v["connect"]["dport"].as_u64() == Some(p.port.into())
    });
    assert_eq!(alert["connect"]["domain"], p.domain.as_str(), "{alert}");
    assert_eq!(alert["indicator"], p.domain.as_str(), "{alert}");
}
