//! Pool and C2 indicators: which outbound connections point at a mining pool
//! or a known command-and-control address, and how much that says.
//!
//! Indicators come from `--ioc FILE`s and from a built-in list of mining-pool
//! ports and domains (`default_iocs.txt`, sources named in the file). One
//! indicator a line: an IPv4 or IPv6 address, a CIDR, `ADDR:PORT`
//! (`[v6]:PORT` for IPv6), `:PORT`, or a domain name (optionally
//! `DOMAIN:PORT`); `#` starts a comment. A malformed line is an error naming
//! the file and line, raised before anything is resolved.
//!
//! Domains match in two ways. Without any lookup (the default): watch learns
//! the names behind each address from the host's own DNS answers
//! (`views::dns`) and [`Indicators::match_connect_named`] matches them, a
//! name matching an indicator for itself or for a domain above it. With
//! `--resolve-domains` (opt-in: a lookup from a compromised host lands in
//! the incident's DNS logs and the SOC's alerts), domains are also
//! resolved in background threads: at load, tracer waits at most
//! [`LOAD_RESOLVE_WAIT`] for those of --ioc files (not for the built-in
//! ones), then goes on; `refresh()` never blocks: it takes in answers that
//! arrived since, and starts a new round every [`RESOLVE_INTERVAL`]. Call it
//! every few seconds so that late answers apply soon. A domain that does not
//! resolve is a one-line warning on stderr, never a failure (hosts without
//! DNS are common during an incident).
//!
//! A port alone is a weak sign (8080 and 25 are everywhere), so a port-only
//! match is low severity unless the process also shows a sign of its own
//! ([`exec_signs`]: a stratum URL or wallet in its arguments, a program in
//! /tmp or deleted, ...), which watch can also flag when the process execs.
use std::{
    collections::{hash_map::RandomState, HashMap, HashSet},
    hash::BuildHasher,
    io::Read,
    net::{IpAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hashbrown::HashTable;
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

use crate::{
    error::UserError,
    model::{HostStr, Process, Severity},
    respond::program,
};

/// The built-in list: mining-pool ports and domains from public rule sets.
const DEFAULT_IOCS: &str = include_str!("default_iocs.txt");
/// Directive in the built-in list naming where the next entries come from.
const SOURCE_DIRECTIVE: &str = "# source:";
/// Longest wait for the first resolution of domains at load.
pub const LOAD_RESOLVE_WAIT: Duration = Duration::from_millis(1500);
/// How often domains are resolved again (pools rotate their addresses).
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(300);

/// A connection that matched an indicator.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct IndicatorMatch {
    /// The indicator as written in its file.
    pub indicator: String,
    /// `FILE:LINE` for an --ioc file, `built-in: <source>` for the defaults.
    pub source: String,
    /// Only the port matched: a weak sign on its own.
    pub port_only: bool,
}

/// What one indicator line designates.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Addr { addr: IpAddr, port: Option<u16> },
    Network(Network),
    Port(u16),
    Domain { name: Box<str>, port: Option<u16> },
}

/// An address block (CIDR), stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| Network {
            base: mask(addr, prefix),
            prefix,
        })
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// One indicator line, stored compactly: threat-intel feeds have millions
/// (1,000,000 take well under 200 MB). Its text lives in the shared
/// `texts` buffer, its file in `origins`.
#[derive(Clone, Debug)]
struct Indicator {
    text_at: u32,
    text_len: u32,
    /// Index into `origins`.
    origin: u32,
    line: u32,
    target: Target,
}

/// A file of indicators, or a group of the built-in list.
#[derive(Clone, Debug)]
struct Origin {
    name: String,
    /// The built-in list (its resolution failures are summarised).
    built_in: bool,
}

/// Parsed indicators, before they are indexed.
#[derive(Default, Debug)]
struct Parsed {
    texts: String,
    origins: Vec<Origin>,
    entries: Vec<Indicator>,
}

impl Parsed {
    fn push(&mut self, origin: usize, line: usize, text: &str, target: Target) -> Result<()> {
        let at = u32::try_from(self.texts.len())
            .ok()
            .filter(|_| self.entries.len() < u32::MAX as usize)
            .ok_or_else(|| {
                UserError::BadInput("too many indicators (over 4 GiB of text)".into())
            })?;
        self.texts.push_str(text);
        self.entries.push(Indicator {
            text_at: at,
            text_len: text.len() as u32,
            origin: origin as u32,
            line: line as u32,
            target,
        });
        Ok(())
    }

    fn add_origin(&mut self, name: String, built_in: bool) -> usize {
        self.origins.push(Origin { name, built_in });
        self.origins.len() - 1
    }

    fn text(&self, i: usize) -> &str {
        let e = &self.entries[i];
        &self.texts[e.text_at as usize..(e.text_at + e.text_len) as usize]
    }

    /// `FILE:LINE` for an --ioc file, `built-in: <source>` for the defaults.
    fn source(&self, i: usize) -> String {
        let e = &self.entries[i];
        let o = &self.origins[e.origin as usize];
        if o.built_in {
            format!("built-in: {}", o.name)
        } else {
            format!("{}:{}", o.name, e.line)
        }
    }

    fn built_in(&self, i: usize) -> bool {
        self.origins[self.entries[i].origin as usize].built_in
    }

    fn to_match(&self, i: usize) -> IndicatorMatch {
        IndicatorMatch {
            indicator: self.text(i).to_string(),
            source: self.source(i),
            port_only: matches!(self.entries[i].target, Target::Port(_)),
        }
    }

    /// The domains to resolve, by entry index.
    fn domains(&self) -> impl Iterator<Item = (usize, &str)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.target {
                Target::Domain { name, .. } => Some((i, &**name)),
                _ => None,
            })
    }
}

impl Indicator {
    /// The domain name, for a domain entry.
    fn domain(&self) -> Option<&str> {
        match &self.target {
            Target::Domain { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The indicator's port, if it names one, accepts `port`.
    fn port_accepts(&self, port: u16) -> bool {
        match self.target {
            Target::Addr { port: p, .. } | Target::Domain { port: p, .. } => {
                p.is_none_or(|p| p == port)
            }
            _ => true,
        }
    }
}

/// Port 0 never names a port in an indicator (parse_port refuses it), so it
/// stands for "any port" in the address index.
const ANY_PORT: u16 = 0;

/// The loaded indicators, indexed so that matching one connect costs the
/// same with ten indicators or ten million: hash lookups for addresses and
/// ports, a longest-prefix match in a prefix trie for CIDRs.
#[derive(Debug)]
pub struct Indicators {
    parsed: Parsed,
    /// Literal IPv4 addresses by (address, port or ANY_PORT); first listed wins.
    v4_addrs: HashMap<(u32, u16), u32>,
    v6_addrs: HashMap<(u128, u16), u32>,
    /// CIDR entries; the first listed wins for the same block.
    v4_nets: PrefixMap<Ipv4Net, u32>,
    v6_nets: PrefixMap<Ipv6Net, u32>,
    /// Port-only entries; the first listed wins.
    by_port: HashMap<u16, u32>,
    /// Addresses the domains resolved to, last time they did.
    resolved: HashMap<IpAddr, Vec<u32>>,
    /// Domain entries (indices into `parsed.entries`) hashed by their name
    /// (lower case, no trailing dot): each name is stored once, in its
    /// entry, however large the feed. Lookups hash names from DNS answers,
    /// the attacker's: a keyed hash (SipHash, random keys).
    by_domain: HashTable<u32>,
    domain_hasher: RandomState,
    /// Whether domains are looked up (`--resolve-domains`).
    resolve: bool,
    resolver: Resolver,
}

impl Default for Indicators {
    fn default() -> Self {
        Self::index(Parsed::default())
    }
}

/// Above this many domains in --ioc files, load does not wait for their
/// first answers (a feed of thousands cannot resolve in a start-up wait):
/// they come in through `refresh()`, and a line on stderr says so.
const MAX_AWAITED_DOMAINS: usize = 256;

impl Indicators {
    /// Parses every file (and the built-in list when `with_defaults`).
    /// Fails on the first malformed line. Looks nothing up: domains match
    /// on DNS answers seen, unless [`Self::resolve_domains`] is called.
    pub fn load(files: &[PathBuf], with_defaults: bool) -> Result<Self> {
        Self::parse(files, with_defaults)
    }

    /// Opt-in (`--resolve-domains`): starts resolving domains, and from now
    /// on again every [`RESOLVE_INTERVAL`]; waits at most
    /// [`LOAD_RESOLVE_WAIT`] for those of the files (when there are at most
    /// [`MAX_AWAITED_DOMAINS`]).
    pub fn resolve_domains(&mut self) {
        let indicators = self;
        indicators.resolve = true;
        indicators.resolver.start_round(indicators.parsed.domains());
        // Wait for the domains the user listed; the built-in ones come in
        // through refresh(), so that a host without DNS starts at once.
        let from_files: HashSet<usize> = (indicators.parsed.domains())
            .filter(|(i, _)| !indicators.parsed.built_in(*i))
            .map(|(i, _)| i)
            .collect();
        if from_files.len() > MAX_AWAITED_DOMAINS {
            eprintln!(
                "tracer: {} indicator domains are resolving in the background; \
                 each matches once its answer arrives",
                from_files.len()
            );
            return;
        }
        indicators.resolver.wait_for(&from_files, LOAD_RESOLVE_WAIT);
        indicators.apply_resolutions();
        // A resolver that hangs gives no answer at all: say so now, not never.
        let mut unanswered: Vec<usize> = from_files
            .intersection(&indicators.resolver.pending)
            .copied()
            .collect();
        unanswered.sort_unstable();
        let what = format!(
            "did not resolve within {} ms",
            LOAD_RESOLVE_WAIT.as_millis()
        );
        indicators.warn_unresolved(unanswered, &what);
    }

    /// Reads, parses and indexes the indicators without resolving any
    /// domain (what `load` does before its lookups; `tracer __ioc-bench`
    /// measures this part).
    pub fn parse(files: &[PathBuf], with_defaults: bool) -> Result<Self> {
        let mut parsed = Parsed::default();
        if with_defaults {
            parse_built_in(&mut parsed, DEFAULT_IOCS).context("the built-in indicator list")?;
        }
        for file in files {
            let text = read_indicator_file(file)?;
            parse_file(&mut parsed, &file.display().to_string(), &text)?;
        }
        Ok(Self::index(parsed))
    }

    fn index(parsed: Parsed) -> Self {
        let mut i = Indicators {
            parsed,
            v4_addrs: HashMap::new(),
            v6_addrs: HashMap::new(),
            v4_nets: PrefixMap::new(),
            v6_nets: PrefixMap::new(),
            by_port: HashMap::new(),
            resolved: HashMap::new(),
            by_domain: HashTable::new(),
            domain_hasher: RandomState::new(),
            resolve: false,
            resolver: Resolver::default(),
        };
        for (n, e) in i.parsed.entries.iter().enumerate() {
            let n = n as u32;
            match &e.target {
                Target::Addr {
                    addr: IpAddr::V4(a),
                    port,
                } => {
                    let key = (u32::from(*a), port.unwrap_or(ANY_PORT));
                    i.v4_addrs.entry(key).or_insert(n);
                }
                Target::Addr {
                    addr: IpAddr::V6(a),
                    port,
                } => {
                    let key = (u128::from(*a), port.unwrap_or(ANY_PORT));
                    i.v6_addrs.entry(key).or_insert(n);
                }
                Target::Network(net) => match net.base {
                    IpAddr::V4(a) => {
                        if let Ok(p) = Ipv4Net::new(a, net.prefix) {
                            if i.v4_nets.get(&p).is_none() {
                                i.v4_nets.insert(p, n);
                            }
                        }
                    }
                    IpAddr::V6(a) => {
                        if let Ok(p) = Ipv6Net::new(a, net.prefix) {
                            if i.v6_nets.get(&p).is_none() {
                                i.v6_nets.insert(p, n);
                            }
                        }
                    }
                },
                Target::Port(p) => {
                    i.by_port.entry(*p).or_insert(n);
                }
                Target::Domain { name, .. } => {
                    let hash = i.domain_hasher.hash_one(&**name);
                    let entries = &i.parsed.entries;
                    i.by_domain.insert_unique(hash, n, |&e| {
                        i.domain_hasher
                            .hash_one(entries[e as usize].domain().unwrap_or(""))
                    });
                }
            }
        }
        i.v4_addrs.shrink_to_fit();
        i.v6_addrs.shrink_to_fit();
        i
    }

    /// Number of indicators loaded.
    pub fn len(&self) -> usize {
        self.parsed.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parsed.entries.is_empty()
    }

    /// Takes in domain answers that arrived since the last call, and starts
    /// a new resolution round when [`RESOLVE_INTERVAL`] has passed. Never
    /// blocks: lookups run in background threads.
    pub fn refresh(&mut self) {
        if !self.resolve {
            return;
        }
        self.apply_resolutions();
        if self.resolver.round_due() {
            self.resolver.start_round(self.parsed.domains());
        }
    }

    /// The indicator an outbound connection to `daddr:dport` matches, if
    /// any. Address matches (literal, CIDR, resolved domain) win over
    /// port-only ones.
    pub fn match_connect(&self, daddr: IpAddr, dport: u16) -> Option<IndicatorMatch> {
        let daddr = daddr.to_canonical(); // ::ffff:a.b.c.d is the IPv4 peer
                                          // With and without a port, the line listed first wins.
        let literal = match daddr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let with_port = self.v4_addrs.get(&(a, dport));
                with_port
                    .into_iter()
                    .chain(self.v4_addrs.get(&(a, ANY_PORT)))
                    .min()
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let with_port = self.v6_addrs.get(&(a, dport));
                with_port
                    .into_iter()
                    .chain(self.v6_addrs.get(&(a, ANY_PORT)))
                    .min()
            }
        };
        // The most specific block that holds the address.
        let network = || match daddr {
            IpAddr::V4(a) => self.v4_nets.get_lpm(&Ipv4Net::from(a)).map(|(_, &i)| i),
            IpAddr::V6(a) => self.v6_nets.get_lpm(&Ipv6Net::from(a)).map(|(_, &i)| i),
        };
        let domain = || {
            self.resolved
                .get(&daddr)?
                .iter()
                .copied()
                .find(|&i| self.parsed.entries[i as usize].port_accepts(dport))
        };
        literal
            .copied()
            .or_else(network)
            .or_else(domain)
            .or_else(|| self.by_port.get(&dport).copied())
            .map(|i| self.parsed.to_match(i as usize))
    }

    /// Domain indicators, counted (to say that they match only on DNS
    /// answers seen when they are not resolved).
    pub fn domain_count(&self) -> usize {
        self.by_domain.len()
    }

    /// Like [`Self::match_connect`], with the names DNS answers gave for
    /// `daddr` (see `views::dns`): after literal addresses and blocks, a
    /// domain indicator matches one of `names` itself or a domain above it
    /// (`pool.example.org` matches `example.org`), its port if it names
    /// one; the first name (the one asked for) first.
    pub fn match_connect_named(
        &self,
        daddr: IpAddr,
        dport: u16,
        names: &[HostStr],
    ) -> Option<IndicatorMatch> {
        let found = self.match_connect(daddr, dport);
        if names.is_empty() || found.as_ref().is_some_and(|m| !m.port_only) {
            return found;
        }
        self.match_names(names, dport).or(found)
    }

    /// The first domain indicator one of `names` falls under.
    fn match_names(&self, names: &[HostStr], dport: u16) -> Option<IndicatorMatch> {
        for name in names {
            let name = name.as_str().trim_end_matches('.');
            let mut suffix = Some(name);
            while let Some(s) = suffix {
                if let Some(i) = self.domain_entry(s, dport) {
                    return Some(self.parsed.to_match(i as usize));
                }
                suffix = s.split_once('.').map(|(_, rest)| rest);
            }
        }
        None
    }

    /// The first listed domain entry named `name` whose port accepts `dport`.
    fn domain_entry(&self, name: &str, dport: u16) -> Option<u32> {
        let entries = &self.parsed.entries;
        self.by_domain
            .iter_hash(self.domain_hasher.hash_one(name))
            .copied()
            .filter(|&i| {
                let e = &entries[i as usize];
                e.domain() == Some(name) && e.port_accepts(dport)
            })
            .min()
    }

    /// How bad a match is for this process: see [`severity_of`].
    pub fn severity(&self, m: &IndicatorMatch, process: &Process) -> Severity {
        severity_of(m, &exec_signs(process))
    }

    /// Rebuilds the resolved-address index from the resolver's answers, and
    /// warns about domains that did not resolve.
    fn apply_resolutions(&mut self) {
        let answers = self.resolver.take_answers();
        if answers.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for (i, outcome) in answers {
            match outcome {
                Ok(addrs) if !addrs.is_empty() => {
                    self.resolver.warned.remove(&i);
                    self.resolver.addrs.insert(i, addrs);
                }
                // Keep the last good addresses: a failed re-resolution is
                // more likely our DNS than the pool moving.
                Ok(_) | Err(_) => failed.push(i),
            }
        }
        self.warn_unresolved(failed, "did not resolve");
        self.resolved.clear();
        for (&i, addrs) in &self.resolver.addrs {
            for a in addrs {
                self.resolved
                    .entry(a.to_canonical())
                    .or_default()
                    .push(i as u32);
            }
        }
        for ids in self.resolved.values_mut() {
            ids.sort_unstable(); // file order, whatever order answers came in
        }
    }

    /// One warning line per domain from an --ioc file, one line for all
    /// built-in ones; each domain once until it resolves again.
    fn warn_unresolved(&mut self, ids: Vec<usize>, what: &str) {
        let every = RESOLVE_INTERVAL.as_secs();
        let mut built_in = 0;
        for i in ids {
            if !self.resolver.warned.insert(i) {
                continue;
            }
            if self.parsed.built_in(i) {
                built_in += 1;
            } else {
                eprintln!(
                    "tracer: warning: indicator {} ({}) {what}; retrying every {every} s",
                    self.parsed.text(i),
                    self.parsed.source(i)
                );
            }
        }
        if built_in > 0 {
            eprintln!(
                "tracer: warning: {built_in} built-in pool domains {what} (no DNS?); \
                 ports and addresses still match, domains are retried every {every} s"
            );
        }
    }
}

/// How bad a match is, given the signs the process shows (from
/// [`exec_signs`], plus any other detector's, e.g. masquerade):
/// - port only, no sign: low (8080 and 25 are everywhere);
/// - port only, with a sign: high;
/// - address or domain: high; with a sign: critical.
pub fn severity_of(m: &IndicatorMatch, signs: &[String]) -> Severity {
    match (m.port_only, signs.is_empty()) {
        (true, true) => Severity::Low,
        (true, false) | (false, true) => Severity::High,
        (false, false) => Severity::Critical,
    }
}

/// Signs of a miner in a process's command line and executable, visible at
/// exec time: stratum URLs, miner options (`--donate-level`, ...), pool
/// login options (`-o HOST:PORT -u USER`), Monero wallet addresses, and a
/// program deleted or run from /tmp, /var/tmp or /dev/shm. Each sign is one
/// short sentence.
pub fn exec_signs(p: &Process) -> Vec<String> {
    let mut signs: Vec<String> = program::dropped_location(p).into_iter().collect();
    signs.extend(argv_signs(p));
    signs
}

/// Where in a command line (as one string) the first sign of a miner
/// sits: a stratum URL, a miner-only option or a pool login (`-o`), for
/// showing that part of a long command line.
pub fn first_sign_at(cmdline: &str) -> Option<usize> {
    let lower = cmdline.to_ascii_lowercase();
    STRATUM_SCHEMES
        .iter()
        .chain(MINER_OPTIONS.iter())
        .chain([" -o ", " --url"].iter())
        .filter_map(|needle| lower.find(needle))
        .min()
}

/// The signs of [`exec_signs`] that are in the command line alone.
pub fn argv_signs(p: &Process) -> Vec<String> {
    let mut signs = Vec::new();
    let joined = HostStr::join(&p.cmdline, " ");
    let lower = joined.to_ascii_lowercase();
    if let Some(url) = p.cmdline.iter().find(|a| {
        let a = a.to_ascii_lowercase();
        STRATUM_SCHEMES.iter().any(|s| a.contains(s))
    }) {
        signs.push(format!("stratum URL in arguments: {}", shorten(url)));
    }
    for opt in MINER_OPTIONS {
        if p.cmdline.iter().any(|a| {
            a.strip_prefix(opt)
                .is_some_and(|r| r.is_empty() || r.starts_with('='))
        }) {
            signs.push(format!("miner option {opt} in arguments"));
        }
    }
    if let Some(enc) = BASE64_MINER_STRINGS.iter().find(|s| joined.contains(*s)) {
        signs.push(format!("base64-encoded miner option in arguments ({enc})"));
    }
    if lower.contains("modprobe msr allow_writes=on") {
        signs.push("enables MSR writes (XMRig's RandomX tweak)".to_string());
    }
    if let Some((pool, user)) = pool_login(&p.cmdline) {
        signs.push(format!(
            "pool login options: -o {} -u {}",
            shorten(pool),
            shorten(user)
        ));
    }
    if let Some(wallet) = p
        .cmdline
        .iter()
        .flat_map(|a| a.split(WALLET_SEPARATORS))
        .find(|t| is_monero_address(t))
    {
        signs.push(format!(
            "Monero wallet address in arguments: {}",
            shorten(wallet)
        ));
    }
    signs
}

/// Pool URL schemes understood by stratum miners (XMRig, cpuminer, ...).
const STRATUM_SCHEMES: [&str; 4] = [
    "stratum+tcp://",
    "stratum+ssl://",
    "stratum+tls://",
    "stratum+udp://",
];
/// Options only miners take (XMRig's; Sigma "Linux Crypto Mining Indicators").
const MINER_OPTIONS: [&str; 4] = [
    "--donate-level",
    "--cpu-priority",
    "--nicehash",
    "--randomx-1gb-pages",
];
/// Base64 forms of `--donate-level=` and `stratum+tcp://`/`stratum+udp://`
/// at each alignment (Sigma "Linux Crypto Mining Indicators").
const BASE64_MINER_STRINGS: [&str; 9] = [
    "LS1kb25hdGUtbGV2ZWw9",
    "0tZG9uYXRlLWxldmVsP",
    "tLWRvbmF0ZS1sZXZlbD",
    "c3RyYXR1bSt0Y3A6Ly",
    "N0cmF0dW0rdGNwOi8v",
    "zdHJhdHVtK3RjcDovL",
    "c3RyYXR1bSt1ZHA6Ly",
    "N0cmF0dW0rdWRwOi8v",
    "zdHJhdHVtK3VkcDovL",
];
/// Miners take `WALLET.WORKER`, `WALLET+DIFF`, `user=WALLET` and the like.
const WALLET_SEPARATORS: &[char] = &['.', '+', ':', '=', '/', ',', '@', ' '];
const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A Monero address: base58, 95 characters starting with 4 (standard) or 8
/// (subaddress), or 106 starting with 4 (integrated).
fn is_monero_address(t: &str) -> bool {
    let ok_len = match t.as_bytes().first() {
        Some(b'4') => t.len() == 95 || t.len() == 106,
        Some(b'8') => t.len() == 95,
        _ => false,
    };
    ok_len && t.chars().all(|c| BASE58.contains(c))
}

/// XMRig/cpuminer-style pool login: `-o|--url HOST:PORT` together with
/// `-u|--user USER`. Returns (pool, user).
fn pool_login(args: &[HostStr]) -> Option<(&str, &str)> {
    let value_of = |short: &str, long: &str| -> Option<&str> {
        args.iter().enumerate().find_map(|(i, a)| {
            if a == short || a == long {
                args.get(i + 1).map(|a| a.as_str())
            } else {
                a.strip_prefix(&format!("{long}=")).or_else(|| {
                    a.strip_prefix(short)
                        .filter(|v| !v.is_empty() && !v.starts_with('-'))
                })
            }
        })
    };
    let pool = value_of("-o", "--url")?;
    let has_port = pool
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.trim_end_matches('/').parse::<u16>().is_ok());
    let user = value_of("-u", "--user")?;
    has_port.then_some((pool, user))
}

/// Long arguments cut for a one-line sign.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX - 8).collect();
        let tail: String = s
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}…{tail}")
    }
}

/// Largest indicator file read: room for millions of indicators, not for
/// a disk image given by mistake.
pub const MAX_IOC_FILE_BYTES: u64 = 256 << 20;
/// Longest piece of a bad line quoted in an error.
const QUOTE_CHARS: usize = 60;

/// An --ioc file's text, or one line saying why it cannot be one: not
/// readable, not a regular file (a FIFO or /dev/zero would never end), too
/// large, or binary (a NUL byte, or bytes that are not UTF-8).
pub fn read_indicator_file(file: &Path) -> Result<String> {
    let name = file.display();
    let bad = |why: String| -> anyhow::Error {
        UserError::BadInput(format!("indicator file {name}: {why}")).into()
    };
    let mut f = std::fs::File::open(file)
        .map_err(|e| bad(format!("cannot be read ({e}); give a readable text file")))?;
    let meta = f
        .metadata()
        .map_err(|e| bad(format!("cannot be read ({e})")))?;
    if !meta.is_file() {
        return Err(bad(
            "is not a regular file; give a text file of indicators".into()
        ));
    }
    if meta.len() > MAX_IOC_FILE_BYTES {
        return Err(bad(format!(
            "is {} bytes, more than the {} MiB an indicator list may have",
            meta.len(),
            MAX_IOC_FILE_BYTES >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut f)
        .take(MAX_IOC_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot be read ({e})")))?;
    check_text(&bytes).map_err(bad)?;
    Ok(String::from_utf8(bytes).unwrap_or_default())
}

/// Text: no NUL byte, valid UTF-8, within the size limit. The error names
/// the line where binary content starts.
fn check_text(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() as u64 > MAX_IOC_FILE_BYTES {
        return Err(format!(
            "is more than the {} MiB an indicator list may have",
            MAX_IOC_FILE_BYTES >> 20
        ));
    }
    let bad_at = bytes
        .iter()
        .position(|&b| b == 0)
        .or_else(|| std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()));
    match bad_at {
        None => Ok(()),
        Some(at) => Err(format!(
            "is binary, not text (line {}: a NUL byte or bytes that are not UTF-8);              give one indicator a line",
            bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1
        )),
    }
}

#[cfg(test)]
pub(crate) fn fuzz_check_text(bytes: &[u8]) -> Result<(), String> {
    check_text(bytes)
}

#[cfg(test)]
pub(crate) fn fuzz_parse_file(text: &str) -> Result<usize> {
    let mut parsed = Parsed::default();
    parse_file(&mut parsed, "fuzz.txt", text).map(|()| parsed.entries.len())
}

/// Parses an --ioc file; `name` is how errors and matches cite it.
fn parse_file(parsed: &mut Parsed, name: &str, text: &str) -> Result<()> {
    let origin = parsed.add_origin(name.to_string(), false);
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let Some(item) = indicator_text(raw) else {
            continue;
        };
        let target = parse_target(item).map_err(|why| {
            UserError::BadInput(format!(
                "{name}:{line_no}: `{}` is not an indicator ({why}); expected one a line: \
                 an IPv4 or IPv6 address, a CIDR (10.0.0.0/8), ADDR:PORT ([v6]:PORT for IPv6), \
                 :PORT, or a domain name",
                HostStr::from(item).quoted_prefix(QUOTE_CHARS)
            ))
        })?;
        parsed.push(origin, line_no, item, target)?;
    }
    Ok(())
}

/// Parses the built-in list, whose `# source:` lines name each group.
fn parse_built_in(parsed: &mut Parsed, text: &str) -> Result<()> {
    let mut origin = parsed.add_origin("tracer".to_string(), true);
    for (n, raw) in text.lines().enumerate() {
        if let Some(s) = raw.trim().strip_prefix(SOURCE_DIRECTIVE) {
            origin = parsed.add_origin(s.trim().to_string(), true);
            continue;
        }
        let Some(item) = indicator_text(raw) else {
            continue;
        };
        let target =
            parse_target(item).map_err(|why| anyhow::anyhow!("line {}: {item}: {why}", n + 1))?;
        parsed.push(origin, n + 1, item, target)?;
    }
    Ok(())
}

/// The indicator on a line, without its comment and blanks.
fn indicator_text(line: &str) -> Option<&str> {
    let item = line.split('#').next().unwrap_or("").trim();
    (!item.is_empty()).then_some(item)
}

/// One indicator, or why it is not one.
fn parse_target(item: &str) -> Result<Target, String> {
    if item.chars().any(char::is_whitespace) {
        return Err("one indicator a line, without spaces".into());
    }
    // `::1` and `::/0` are IPv6, not ports.
    if let Some(port) = item.strip_prefix(':').filter(|p| !p.starts_with(':')) {
        return Ok(Target::Port(parse_port(port)?));
    }
    if let Some(rest) = item.strip_prefix('[') {
        let (addr, port) = rest
            .split_once("]:")
            .ok_or("a bracketed IPv6 address needs a port: [v6]:PORT")?;
        let addr: std::net::Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        return Ok(Target::Addr {
            addr: IpAddr::V6(addr).to_canonical(),
            port: Some(parse_port(port)?),
        });
    }
    if let Some((addr, prefix)) = item.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` before the / is not an address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
        return Network::new(addr, prefix)
            .map(Target::Network)
            .ok_or_else(|| format!("prefix /{prefix} is too long for this address family"));
    }
    if let Ok(addr) = item.parse::<IpAddr>() {
        return Ok(Target::Addr {
            addr: addr.to_canonical(),
            port: None,
        });
    }
    let (host, port) = match item.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(parse_port(port)?)),
        Some(_) => {
            return Err("not an IPv6 address (write [v6]:PORT for an address with a port)".into())
        }
        None => (item, None),
    };
    if let Ok(addr) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Target::Addr {
            addr: IpAddr::V4(addr),
            port,
        });
    }
    check_domain(host)?;
    Ok(Target::Domain {
        name: host.trim_end_matches('.').to_ascii_lowercase().into(),
        port,
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{s}` is not a port (1-65535)")),
    }
}

/// A host name as DNS allows it (RFC 1123), not all-numeric.
fn check_domain(host: &str) -> Result<(), String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.contains('*') {
        return Err("wildcards are not supported; list each domain".into());
    }
    if host.is_empty() || host.len() > 253 {
        return Err("not an address, and not a domain name".into());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err("not an address, and not a domain name".into());
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("not a valid IPv4 address".into());
    }
    Ok(())
}

/// Resolution outcome for one domain indicator (by index).
type Answer = (usize, Result<Vec<IpAddr>, String>);

/// Most lookups running at once: a feed of 100,000 domains must not mean
/// 100,000 threads.
const MAX_RESOLVERS: usize = 16;

/// Lookups waiting for a resolver thread, and how many threads run.
#[derive(Debug, Default)]
struct Queue {
    waiting: std::collections::VecDeque<(usize, String)>,
    workers: usize,
}

/// Resolves domain indicators in a few background threads, so a hanging
/// resolver never holds up tracer (only the lookups queued behind it).
#[derive(Debug, Default)]
struct Resolver {
    inbox: Arc<(Mutex<Vec<Answer>>, Condvar)>,
    queue: Arc<Mutex<Queue>>,
    /// Domains whose lookup has not answered yet.
    pending: HashSet<usize>,
    last_round: Option<Instant>,
    /// Last good addresses of each domain.
    addrs: HashMap<usize, Vec<IpAddr>>,
    /// Domains already warned about (until they resolve again).
    warned: HashSet<usize>,
}

impl Resolver {
    fn round_due(&self) -> bool {
        self.last_round
            .is_none_or(|t| t.elapsed() >= RESOLVE_INTERVAL)
    }

    /// Queues a lookup for every domain that is not still being looked up,
    /// and starts resolver threads up to [`MAX_RESOLVERS`].
    fn start_round<'a>(&mut self, domains: impl Iterator<Item = (usize, &'a str)>) {
        self.last_round = Some(Instant::now());
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for (i, name) in domains {
            if self.pending.insert(i) {
                queue.waiting.push_back((i, name.to_string()));
            }
        }
        while queue.workers < MAX_RESOLVERS.min(queue.waiting.len()) {
            let (jobs, inbox) = (Arc::clone(&self.queue), Arc::clone(&self.inbox));
            let spawned = std::thread::Builder::new()
                .name("tracer-resolve".into())
                .spawn(move || resolve_queued(&jobs, &inbox));
            if spawned.is_err() {
                break; // out of threads: the running ones drain the queue
            }
            queue.workers += 1;
        }
        if queue.workers == 0 {
            // Not a single thread: try again next round.
            for (i, _) in queue.waiting.drain(..) {
                self.pending.remove(&i);
            }
        }
    }

    /// Waits until each of `wanted` answered, or `limit` passed.
    fn wait_for(&self, wanted: &HashSet<usize>, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (lock, ready) = &*self.inbox;
        let mut inbox = lock.lock().unwrap_or_else(|p| p.into_inner());
        while inbox.iter().filter(|(i, _)| wanted.contains(i)).count() < wanted.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inbox = ready
                .wait_timeout(inbox, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Answers received since the last call.
    fn take_answers(&mut self) -> Vec<Answer> {
        let answers = std::mem::take(&mut *self.inbox.0.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, _) in &answers {
            self.pending.remove(i);
        }
        answers
    }
}

/// A resolver thread: looks up queued domains until none is left.
fn resolve_queued(queue: &Mutex<Queue>, inbox: &(Mutex<Vec<Answer>>, Condvar)) {
    loop {
        let job = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            let job = q.waiting.pop_front();
            if job.is_none() {
                q.workers -= 1; // under the lock: start_round sees it
            }
            job
        };
        let Some((i, name)) = job else { return };
        let outcome = (name.as_str(), 0)
            .to_socket_addrs()
            .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
            .map_err(|e| e.to_string());
        let (lock, ready) = inbox;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((i, outcome));
        ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    fn parsed(text: &str) -> Parsed {
        let mut p = Parsed::default();
        parse_file(&mut p, "iocs.txt", text).unwrap();
        p
    }

    fn parse(text: &str) -> Indicators {
        Indicators::index(parsed(text))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn err(text: &str) -> String {
        let e = parse_file(&mut Parsed::default(), "bad.txt", text).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), exit::ERROR);
        e.to_string()
    }

    #[test]
    fn every_form_parses() {
        let text = "# pools\n\n203.0.113.7\n198.51.100.0/24   # a block\n2001:db8::/32\n\
                    192.0.2.1:4444\n[2001:db8::1]:3333\n:14444\npool.example.org\n\
                    pool.example.net:5555\n2001:db8::99\n";
        let e = parsed(text);
        let targets: Vec<_> = e.entries.iter().map(|i| i.target.clone()).collect();
        assert_eq!(
            targets,
            vec![
                Target::Addr {
                    addr: ip("203.0.113.7"),
                    port: None
                },
                Target::Network(Network::new(ip("198.51.100.0"), 24).unwrap()),
                Target::Network(Network::new(ip("2001:db8::"), 32).unwrap()),
                Target::Addr {
                    addr: ip("192.0.2.1"),
                    port: Some(4444)
                },
                Target::Addr {
                    addr: ip("2001:db8::1"),
                    port: Some(3333)
                },
                Target::Port(14444),
                Target::Domain {
                    name: "pool.example.org".into(),
                    port: None
                },
                Target::Domain {
                    name: "pool.example.net".into(),
                    port: Some(5555)
                },
                Target::Addr {
                    addr: ip("2001:db8::99"),
                    port: None
                },
            ]
        );
        // Text as written (without the comment), and FILE:LINE as source.
        assert_eq!(e.text(1), "198.51.100.0/24");
        assert_eq!(e.source(1), "iocs.txt:4");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        assert!(err("# ok\n10.0.0.1\n10.0.0.300\n").starts_with("bad.txt:3: `10.0.0.300`"));
        assert!(err(":70000\n").starts_with("bad.txt:1: "));
        assert!(err(":0\n").contains("not a port"));
        assert!(err("\n\n10.0.0.0/33\n").starts_with("bad.txt:3: "));
        assert!(err("10.0.0.0/x\n").contains("prefix length"));
        assert!(err("[2001:db8::1]\n").contains("[v6]:PORT"));
        assert!(err("2001:db8::1:3333:x\n").contains("[v6]:PORT"));
        assert!(err("two words\n").contains("one indicator a line"));
        assert!(err("*.nicehash.com\n").contains("wildcards"));
        assert!(err("bad_-.\n.x\n").starts_with("bad.txt:1: "));
        assert!(err("pool.example.org:http\n").contains("not a port"));
        assert!(err("10.0.0.1\n\n\n-bad-.example\n").starts_with("bad.txt:4: "));
        assert!(err("x\nhttp://pool.example.org/\n").contains("expected one a line"));
    }

    #[test]
    fn built_in_list_parses_with_sources() {
        let mut e = Parsed::default();
        parse_built_in(&mut e, DEFAULT_IOCS).unwrap();
        assert!(
            (0..e.entries.len()).all(|i| e.built_in(i) && e.source(i).starts_with("built-in: "))
        );
        let i = Indicators::index(e);
        let m = i.match_connect(ip("127.0.0.2"), 3333).unwrap();
        assert!(m.port_only);
        assert_eq!(
            m.source,
            "built-in: Falco rules, list miner_ports (falcosecurity/rules)"
        );
        assert!(i.parsed.entries.iter().any(
            |e| matches!(&e.target, Target::Domain { name, .. } if &**name == "pool.supportxmr.com")
        ));
        assert!(i.match_connect(ip("127.0.0.2"), 443).is_none());
    }

    #[test]
    fn addresses_networks_and_ports_match() {
        let i = parse("198.51.100.0/24\n2001:db8:1::/48\n192.0.2.1:4444\n[2001:db8::1]:3333\n203.0.113.7\n:14444\n");
        let hit = |a: &str, p| i.match_connect(ip(a), p).map(|m| m.indicator);
        assert_eq!(hit("198.51.100.77", 1), Some("198.51.100.0/24".into()));
        assert_eq!(hit("198.51.101.1", 1), None);
        assert_eq!(
            hit("2001:db8:1:ffff::5", 80),
            Some("2001:db8:1::/48".into())
        );
        assert_eq!(hit("2001:db8:2::5", 80), None);
        assert_eq!(hit("192.0.2.1", 4444), Some("192.0.2.1:4444".into()));
        assert_eq!(hit("192.0.2.1", 4445), None);
        assert_eq!(hit("2001:db8::1", 3333), Some("[2001:db8::1]:3333".into()));
        assert_eq!(hit("2001:db8::1", 3334), None);
        assert_eq!(hit("203.0.113.7", 9), Some("203.0.113.7".into()));
        // An IPv4 peer reached through an IPv6 socket.
        assert_eq!(hit("::ffff:203.0.113.7", 9), Some("203.0.113.7".into()));
        let port = i.match_connect(ip("127.0.0.1"), 14444).unwrap();
        assert!(port.port_only);
        assert_eq!(port.source, "iocs.txt:6");
        // An address match wins over a port-only one.
        assert!(!i.match_connect(ip("203.0.113.7"), 14444).unwrap().port_only);
    }

    #[test]
    fn the_most_specific_block_and_the_first_listed_address_win() {
        let i = parse(
            "10.0.0.0/8\n10.1.0.0/16\n10.1.2.3:80\n10.1.2.3\n10.1.2.3:443\n10.0.0.0/8\n\
             2001:db8::/32\n2001:db8:1::/48\n::/0\n::1\n",
        );
        let hit = |a: &str, p| i.match_connect(ip(a), p).map(|m| (m.indicator, m.source));
        let at = |text: &str, line: u32| Some((text.to_string(), format!("iocs.txt:{line}")));
        assert_eq!(hit("10.1.9.9", 1), at("10.1.0.0/16", 2));
        assert_eq!(hit("10.2.0.1", 1), at("10.0.0.0/8", 1));
        // With and without a port, the line listed first wins.
        assert_eq!(hit("10.1.2.3", 80), at("10.1.2.3:80", 3));
        assert_eq!(hit("10.1.2.3", 443), at("10.1.2.3", 4));
        assert_eq!(hit("10.1.2.3", 22), at("10.1.2.3", 4));
        assert_eq!(hit("2001:db8:1::9", 1), at("2001:db8:1::/48", 8));
        assert_eq!(hit("2001:db8:2::9", 1), at("2001:db8::/32", 7));
        assert_eq!(hit("fe80::1", 1), at("::/0", 9));
        assert_eq!(hit("::1", 1), at("::1", 10));
        assert_eq!(hit("11.0.0.1", 1), None);
    }

    #[test]
    fn a_large_feed_is_indexed_not_scanned() {
        // 20,000 blocks and 20,000 addresses: each connect is a few lookups.
        let mut text = String::new();
        for n in 0..20_000u32 {
            let [_, a, b, _] = (n << 8).to_be_bytes();
            text.push_str(&format!("100.{a}.{b}.0/24\n172.16.{a}.{b}\n"));
        }
        let i = parse(&text);
        assert_eq!(i.len(), 40_000);
        assert_eq!(i.v4_nets.len(), 20_000);
        let m = i.match_connect(ip("100.78.31.200"), 1).unwrap();
        assert_eq!(m.indicator, "100.78.31.0/24");
        assert!(i.match_connect(ip("100.78.32.1"), 1).is_none());
        assert_eq!(
            i.match_connect(ip("172.16.78.31"), 1).unwrap().indicator,
            "172.16.78.31"
        );
    }

    #[test]
    fn domains_resolve_at_load_and_failures_only_warn() {
        let dir = std::env::temp_dir().join(format!("tracer-ioc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("iocs.txt");
        // `.invalid` never resolves (RFC 6761), without asking any server.
        std::fs::write(&file, "localhost:3333\nno-such-pool.invalid\n").unwrap();
        let started = Instant::now();
        let mut i = Indicators::load(std::slice::from_ref(&file), false).unwrap();
        i.resolve_domains();
        assert!(started.elapsed() < LOAD_RESOLVE_WAIT + Duration::from_millis(500));
        let m = i.match_connect(ip("127.0.0.1"), 3333).unwrap();
        assert_eq!(
            (m.indicator.as_str(), m.port_only),
            ("localhost:3333", false)
        );
        assert!(i.match_connect(ip("127.0.0.1"), 3334).is_none());
        i.refresh(); // nothing new, and not due: must not block or change anything
        assert!(i.match_connect(ip("127.0.0.1"), 3333).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn domains_are_never_looked_up_unless_asked() {
        let dir = std::env::temp_dir().join(format!("tracer-ioc-nores-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("iocs.txt");
        std::fs::write(&file, "localhost:3333\n").unwrap();
        let mut i = Indicators::load(std::slice::from_ref(&file), true).unwrap();
        i.refresh();
        assert!(i.resolver.last_round.is_none() && i.resolver.pending.is_empty());
        // At most the built-in port-only match for 3333: never the domain.
        assert!(i
            .match_connect(ip("127.0.0.1"), 3333)
            .is_none_or(|m| m.port_only));
        assert!(i.domain_count() > 1); // the built-in pool domains, unresolved
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_from_dns_answers_match_domains_and_the_domains_above_them() {
        let i = parse("pool.example.org:3333\nexample.net\n10.9.9.9\n:4444\n");
        let names = |v: &[&str]| v.iter().map(|n| HostStr::from(*n)).collect::<Vec<_>>();
        let a = ip("192.0.2.10");
        let m = i
            .match_connect_named(a, 3333, &names(&["pool.example.org"]))
            .unwrap();
        assert_eq!(
            (m.indicator.as_str(), m.port_only),
            ("pool.example.org:3333", false)
        );
        // Wrong port for a DOMAIN:PORT line; no other indicator.
        assert!(i
            .match_connect_named(a, 80, &names(&["pool.example.org"]))
            .is_none());
        // A subdomain, through a CNAME chain (any name in it).
        let m = i
            .match_connect_named(a, 80, &names(&["cdn.other.com", "eu.xmr.example.net"]))
            .unwrap();
        assert_eq!(m.indicator, "example.net");
        // Not a label boundary.
        assert!(i
            .match_connect_named(a, 80, &names(&["badexample.net"]))
            .is_none());
        // A domain beats a port-only match; a literal address beats a domain.
        let m = i
            .match_connect_named(a, 4444, &names(&["example.net"]))
            .unwrap();
        assert_eq!(m.indicator, "example.net");
        let m = i
            .match_connect_named(ip("10.9.9.9"), 80, &names(&["example.net"]))
            .unwrap();
        assert_eq!(m.indicator, "10.9.9.9");
    }

    #[test]
    fn a_domain_listed_with_several_ports_matches_the_first_line_that_accepts_the_port() {
        let i = parse("Pool.Example.org:3333\npool.example.org:5555\npool.example.org.\n");
        assert_eq!(i.domain_count(), 3);
        let named = |port| {
            i.match_connect_named(ip("192.0.2.10"), port, &[HostStr::from("pool.example.org")])
                .unwrap()
                .indicator
        };
        assert_eq!(named(3333), "Pool.Example.org:3333");
        assert_eq!(named(5555), "pool.example.org:5555");
        assert_eq!(named(80), "pool.example.org.");
    }

    #[test]
    fn binary_huge_and_special_files_are_refused_in_one_line() {
        assert!(check_text(b"10.0.0.1\n:3333\n").is_ok());
        let e = check_text(b"10.0.0.1\n\x7fELF\x02\x00\x00").unwrap_err();
        assert!(e.contains("binary") && e.contains("line 2"), "{e}");
        assert!(check_text(b"ok\n\xff\xfe\n")
            .unwrap_err()
            .contains("line 2"));
        for path in ["/dev/zero", "/proc"] {
            let e = read_indicator_file(Path::new(path)).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&e), exit::ERROR);
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_long_bad_line_is_quoted_as_a_short_prefix() {
        let text = format!("{}\n", "x".repeat(10 << 20));
        let e = parse_file(&mut Parsed::default(), "big.txt", &text)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600, "{} bytes", e.len());
        assert!(e.starts_with("big.txt:1: `xxxx") && e.contains("(10485760 bytes)"));
    }

    #[test]
    fn missing_file_is_bad_input() {
        let e = Indicators::load(&[PathBuf::from("/nonexistent/iocs.txt")], false).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), exit::ERROR);
        assert!(e.to_string().contains("/nonexistent/iocs.txt"));
    }

    fn process(exe: &str, args: &[&str]) -> Process {
        Process {
            exe: Some(exe.into()),
            cmdline: args.iter().map(|&s| s.into()).collect(),
            ..Default::default()
        }
    }

    const WALLET: &str = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A";

    #[test]
    fn exec_signs_find_miner_arguments_and_dropped_programs() {
        assert_eq!(WALLET.len(), 95);
        let quiet = process(
            "/usr/bin/curl",
            &["curl", "-o", "out.html", "https://example.org/"],
        );
        assert!(exec_signs(&quiet).is_empty());

        let xmrig = process(
            "/tmp/.x/kworker (deleted)",
            &[
                "kworker",
                "-o",
                "stratum+tcp://pool.example.org:3333",
                "-u",
                &format!("{WALLET}.w1"),
                "--donate-level=1",
            ],
        );
        let signs = exec_signs(&xmrig);
        assert!(signs[0].contains("deleted"), "{signs:?}");
        assert!(
            signs.iter().any(|s| s.starts_with("stratum URL")),
            "{signs:?}"
        );
        assert!(
            signs
                .iter()
                .any(|s| s == "miner option --donate-level in arguments"),
            "{signs:?}"
        );
        assert!(
            signs
                .iter()
                .any(|s| s.starts_with("pool login options: -o stratum")),
            "{signs:?}"
        );
        assert!(
            signs.iter().any(|s| s.starts_with("Monero wallet address")),
            "{signs:?}"
        );

        let login = process("/opt/m/m", &["m", "--url=10.1.2.3:5555", "--user", "bob"]);
        assert_eq!(
            exec_signs(&login),
            ["pool login options: -o 10.1.2.3:5555 -u bob"]
        );
        let in_tmp = process("/dev/shm/a", &["a"]);
        assert_eq!(exec_signs(&in_tmp), ["executable runs from /dev/shm"]);
        let encoded = process(
            "/usr/bin/sh",
            &["sh", "-c", "echo LS1kb25hdGUtbGV2ZWw9MQ== | base64 -d"],
        );
        assert!(exec_signs(&encoded)[0].starts_with("base64-encoded"));
        // Not a wallet: wrong length, or not base58 (0, O, I, l).
        assert!(!is_monero_address(&WALLET[..94]));
        assert!(!is_monero_address(&WALLET.replace('A', "0")));
    }

    #[test]
    fn severity_needs_a_second_sign_for_ports() {
        let port = IndicatorMatch {
            indicator: ":3333".into(),
            source: "x".into(),
            port_only: true,
        };
        let addr = IndicatorMatch {
            port_only: false,
            ..port.clone()
        };
        let plain = process("/usr/bin/curl", &["curl", "http://127.0.0.1:3333/"]);
        let dropped = process("/tmp/miner", &["./miner"]);
        let i = Indicators::default();
        assert_eq!(i.severity(&port, &plain), Severity::Low);
        assert_eq!(i.severity(&port, &dropped), Severity::High);
        assert_eq!(i.severity(&addr, &plain), Severity::High);
        assert_eq!(i.severity(&addr, &dropped), Severity::Critical);
        assert_eq!(
            severity_of(&port, &["masquerades as kworker".into()]),
            Severity::High
        );
    }
}
