//! From one rule's YAML to its compiled form: value modifiers and
//! wildcards become literal patterns (scanned by the engine's automata),
//! regexes, networks or numbers; selections and the condition become one
//! boolean expression over those leaves. Everything is decided here, once.
use std::net::IpAddr;

use ipnet::IpNet;
use yaml_rust2::Yaml;

use super::fields::{Category, Field};

/// Bits a literal's occurrence sets: anywhere, at the start, at the end,
/// the whole value.
pub const ANY: u8 = 1;
pub const START: u8 = 2;
pub const END: u8 = 4;
pub const WHOLE: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cmp {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug)]
pub enum Matcher {
    /// The rule's literal `pat` occurs in the way `mode` says.
    Lit {
        pat: u32,
        mode: u8,
    },
    Regex(regex::bytes::Regex),
    Cidr(Vec<IpNet>),
    Cmp(Cmp, f64),
    Exists(bool),
    /// `null`: the field is absent or empty.
    Null,
    /// `*`: any value, once the field is there.
    Present,
}

/// A literal to scan for in one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LitDef {
    pub field: Field,
    pub bytes: Vec<u8>,
    pub cased: bool,
}

/// `Field|modifiers: values`.
#[derive(Debug)]
pub struct Leaf {
    /// `None` when tracer does not have the field (in this category).
    pub field: Option<Field>,
    pub field_name: String,
    /// `|all`: every value must match; else any.
    pub all: bool,
    /// Per value, its alternatives (windash, base64offset variants).
    pub values: Vec<Vec<Matcher>>,
}

#[derive(Clone, Debug)]
pub enum Expr {
    Leaf(u32),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Const(bool),
}

impl Expr {
    pub fn eval(&self, leaf: &mut impl FnMut(u32) -> bool) -> bool {
        match self {
            Expr::Leaf(i) => leaf(*i),
            Expr::Not(e) => !e.eval(leaf),
            Expr::And(es) => es.iter().all(|e| e.eval(leaf)),
            Expr::Or(es) => es.iter().any(|e| e.eval(leaf)),
            Expr::Const(b) => *b,
        }
    }

    /// Kleene three-valued evaluation (`None`: unknown), for what load
    /// time can tell: can this rule ever match, and only when a literal
    /// hits?
    pub fn eval3(&self, leaf: &impl Fn(u32) -> Option<bool>) -> Option<bool> {
        match self {
            Expr::Leaf(i) => leaf(*i),
            Expr::Not(e) => e.eval3(leaf).map(|b| !b),
            Expr::And(es) => {
                let mut out = Some(true);
                for e in es {
                    match e.eval3(leaf) {
                        Some(false) => return Some(false),
                        None => out = None,
                        Some(true) => {}
                    }
                }
                out
            }
            Expr::Or(es) => {
                let mut out = Some(false);
                for e in es {
                    match e.eval3(leaf) {
                        Some(true) => return Some(true),
                        None => out = None,
                        Some(false) => {}
                    }
                }
                out
            }
            Expr::Const(b) => Some(*b),
        }
    }
}

/// A rule's detection, compiled.
#[derive(Debug, Default)]
pub struct Detection {
    pub leaves: Vec<Leaf>,
    pub lits: Vec<LitDef>,
    pub expr: Option<Expr>,
}

impl Matcher {
    /// The matcher's value when the field is absent.
    pub fn on_absent(&self) -> bool {
        matches!(self, Matcher::Exists(false) | Matcher::Null)
    }

    /// Matches `value` (the field is present); `lit_hit` says whether the
    /// rule's literal occurred in a given way.
    pub fn matches(&self, value: &[u8], lit_hit: &impl Fn(u32, u8) -> bool) -> bool {
        match self {
            Matcher::Lit { pat, mode } => lit_hit(*pat, *mode),
            Matcher::Regex(r) => r.is_match(value),
            Matcher::Cidr(nets) => std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Matcher::Cmp(op, n) => std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .is_some_and(|v| match op {
                    Cmp::Lt => v < *n,
                    Cmp::Lte => v <= *n,
                    Cmp::Gt => v > *n,
                    Cmp::Gte => v >= *n,
                }),
            Matcher::Exists(b) => *b,
            Matcher::Null => value.is_empty(),
            Matcher::Present => true,
        }
    }

    fn is_literal(&self) -> bool {
        matches!(self, Matcher::Lit { .. })
    }
}

impl Leaf {
    /// Every alternative is a literal: the leaf is false unless one of its
    /// literals occurs.
    pub fn literal_only(&self) -> bool {
        self.values.iter().flatten().all(Matcher::is_literal)
    }

    /// The leaf's value when its field is absent.
    pub fn on_absent(&self) -> bool {
        let one = |alts: &Vec<Matcher>| alts.iter().any(Matcher::on_absent);
        if self.all {
            self.values.iter().all(one)
        } else {
            self.values.iter().any(one)
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// Compiles `detection:` for a rule of `category`.
pub fn detection(yaml: &Yaml, category: Category) -> Result<Detection> {
    let map = yaml
        .as_hash()
        .ok_or("`detection` is not a mapping of search identifiers")?;
    let mut out = Detection::default();
    let mut named: Vec<(String, Expr)> = Vec::new();
    let mut condition = None;
    for (k, v) in map {
        let key = k.as_str().ok_or("a detection key is not a string")?;
        match key {
            "condition" => condition = Some(v),
            "timeframe" => return Err("`timeframe` (aggregation) is not supported".into()),
            _ => {
                let expr = search(v, category, &mut out).map_err(|e| format!("{key}: {e}"))?;
                named.push((key.to_string(), expr));
            }
        }
    }
    let condition = condition.ok_or("`detection` has no `condition`")?;
    let texts: Vec<&str> = match condition {
        Yaml::String(s) => vec![s.as_str()],
        Yaml::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| "a condition is not a string".to_string())
            })
            .collect::<Result<_>>()?,
        _ => return Err("`condition` is not a string".into()),
    };
    let mut conds = Vec::new();
    for text in texts {
        conds.push(parse_condition(text, &named).map_err(|e| format!("condition: {e}"))?);
    }
    out.expr = Some(if conds.len() == 1 {
        conds.pop().expect("one")
    } else {
        Expr::Or(conds)
    });
    Ok(out)
}

/// One search identifier: a mapping (every field), or a list of mappings
/// (any of them).
fn search(yaml: &Yaml, category: Category, out: &mut Detection) -> Result<Expr> {
    match yaml {
        Yaml::Hash(map) => {
            let mut all = Vec::new();
            for (k, v) in map {
                let key = k.as_str().ok_or("a field name is not a string")?;
                all.push(Expr::Leaf(leaf(key, v, category, out)?));
            }
            if all.is_empty() {
                return Err("an empty selection".into());
            }
            Ok(Expr::And(all))
        }
        Yaml::Array(items) if items.iter().all(|i| matches!(i, Yaml::Hash(_))) => {
            if items.is_empty() {
                return Err("an empty list".into());
            }
            let any = items
                .iter()
                .map(|i| search(i, category, out))
                .collect::<Result<Vec<_>>>()?;
            Ok(Expr::Or(any))
        }
        _ => Err("keyword searches (values without a field name) are not supported".into()),
    }
}

#[derive(Default, Debug)]
struct Modifiers {
    mode: Option<u8>,
    all: bool,
    cased: bool,
    re: Option<String>,
    windash: bool,
    wide: Option<&'static str>,
    base64: Option<bool>,
    exists: bool,
    cidr: bool,
    cmp: Option<Cmp>,
}

fn modifiers(list: &[&str]) -> Result<Modifiers> {
    let mut m = Modifiers::default();
    for &name in list {
        let mode = |m: &mut Modifiers, bits: u8| {
            if m.mode.replace(bits).is_some() {
                Err("more than one of contains, startswith, endswith".to_string())
            } else {
                Ok(())
            }
        };
        match name {
            "contains" => mode(&mut m, ANY)?,
            "startswith" => mode(&mut m, START)?,
            "endswith" => mode(&mut m, END)?,
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => m.re = Some(String::new()),
            "i" | "m" | "s" => match &mut m.re {
                Some(flags) => flags.push_str(name),
                None => return Err(format!("modifier `{name}` without `re`")),
            },
            "windash" => m.windash = true,
            "wide" | "utf16le" => m.wide = Some("le"),
            "utf16be" => m.wide = Some("be"),
            "utf16" => m.wide = Some("bom"),
            "base64" => m.base64 = Some(false),
            "base64offset" => m.base64 = Some(true),
            "exists" => m.exists = true,
            "cidr" => m.cidr = true,
            "lt" => m.cmp = Some(Cmp::Lt),
            "lte" => m.cmp = Some(Cmp::Lte),
            "gt" => m.cmp = Some(Cmp::Gt),
            "gte" => m.cmp = Some(Cmp::Gte),
            "expand" | "fieldref" => {
                return Err(format!("modifier `{name}` is not supported by tracer"))
            }
            other => return Err(format!("unknown modifier `{other}`")),
        }
    }
    Ok(m)
}

fn leaf(key: &str, value: &Yaml, category: Category, out: &mut Detection) -> Result<u32> {
    let mut parts = key.split('|');
    let field_name = parts.next().unwrap_or_default();
    if field_name.is_empty() {
        return Err(format!(
            "`{key}`: keyword searches (no field name) are not supported"
        ));
    }
    let mods: Vec<&str> = parts.collect();
    let m = modifiers(&mods).map_err(|e| format!("{field_name}: {e}"))?;
    let field = Field::from_name(field_name).filter(|f| category.has(*f));
    let items: Vec<&Yaml> = match value {
        Yaml::Array(items) if items.is_empty() => {
            return Err(format!("{field_name}: an empty list of values"))
        }
        Yaml::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut values = Vec::new();
    for item in items {
        values
            .push(value_matchers(item, field, &m, out).map_err(|e| format!("{field_name}: {e}"))?);
    }
    out.leaves.push(Leaf {
        field,
        field_name: field_name.to_string(),
        all: m.all,
        values,
    });
    Ok(out.leaves.len() as u32 - 1)
}

fn scalar_text(v: &Yaml) -> Result<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        Yaml::Boolean(b) => Ok(b.to_string()),
        _ => Err("a value is not a string, number or null".into()),
    }
}

fn value_matchers(
    v: &Yaml,
    field: Option<Field>,
    m: &Modifiers,
    out: &mut Detection,
) -> Result<Vec<Matcher>> {
    if m.exists {
        return match v {
            Yaml::Boolean(b) => Ok(vec![Matcher::Exists(*b)]),
            _ => Err("`exists` takes true or false".into()),
        };
    }
    if matches!(v, Yaml::Null) {
        return Ok(vec![Matcher::Null]);
    }
    let text = scalar_text(v)?;
    if m.cidr {
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("`{text}` is not a network (cidr)"))?;
        return Ok(vec![Matcher::Cidr(vec![net])]);
    }
    if let Some(op) = m.cmp {
        let n = text
            .parse::<f64>()
            .map_err(|_| format!("`{text}` is not a number"))?;
        return Ok(vec![Matcher::Cmp(op, n)]);
    }
    if let Some(flags) = &m.re {
        let pattern = if flags.is_empty() {
            text.clone()
        } else {
            format!("(?{flags}){text}")
        };
        return Ok(vec![Matcher::Regex(build_regex(&pattern).map_err(
            |e| format!("bad regex `{text}`: {}", first_line(&e)),
        )?)]);
    }
    let mut variants = if m.windash {
        windash(&text)
    } else {
        vec![text.clone()]
    };
    // Encoded values are matched as the bytes they encode to: exactly, and
    // without wildcards.
    let encoded = m.wide.is_some() || m.base64.is_some();
    let mut byte_variants: Vec<Vec<u8>> = variants.drain(..).map(String::into_bytes).collect();
    if let Some(kind) = m.wide {
        byte_variants = byte_variants
            .iter()
            .map(|b| utf16(std::str::from_utf8(b).unwrap_or_default(), kind))
            .collect();
    }
    if let Some(offset) = m.base64 {
        byte_variants = byte_variants
            .iter()
            .flat_map(|b| {
                if offset {
                    base64_offsets(b)
                } else {
                    vec![base64(b)]
                }
            })
            .collect();
    }
    let cased = m.cased || encoded;
    let mode = m.mode.unwrap_or(WHOLE);
    let mut alts = Vec::new();
    for bytes in byte_variants {
        let pieces = if encoded {
            vec![Piece::Lit(bytes)]
        } else {
            wildcard_pieces(&bytes)
        };
        alts.push(pieces_matcher(pieces, mode, cased, field, out)?);
    }
    Ok(alts)
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A regex on bytes: `.` and classes match any byte, so a command line
/// that is not UTF-8 is matched by its bytes.
fn build_regex(pattern: &str) -> std::result::Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(1 << 20)
        .build()
        .or_else(|_| {
            regex::bytes::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
        })
}

#[derive(Debug, PartialEq)]
enum Piece {
    Lit(Vec<u8>),
    Star,
    One,
}

/// Splits a value at its wildcards (`*`, `?`; `\*`, `\?` and `\\` are the
/// characters themselves, any other backslash is a backslash).
fn wildcard_pieces(bytes: &[u8]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if matches!(bytes.get(i + 1), Some(b'*' | b'?' | b'\\')) => {
                lit.push(bytes[i + 1]);
                i += 1;
            }
            b'*' | b'?' => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                let piece = if bytes[i] == b'*' {
                    Piece::Star
                } else {
                    Piece::One
                };
                if !(piece == Piece::Star && pieces.last() == Some(&Piece::Star)) {
                    pieces.push(piece);
                }
            }
            b => lit.push(b),
        }
        i += 1;
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

/// The pieces as a literal with a mode when they are one (`foo`, `*foo*`,
/// `foo*`, `*foo`), else as an anchored regex.
fn pieces_matcher(
    mut pieces: Vec<Piece>,
    mode: u8,
    cased: bool,
    field: Option<Field>,
    out: &mut Detection,
) -> Result<Matcher> {
    if mode & (ANY | END) != 0 && pieces.first() != Some(&Piece::Star) {
        pieces.insert(0, Piece::Star);
    }
    if mode & (ANY | START) != 0 && pieces.last() != Some(&Piece::Star) {
        pieces.push(Piece::Star);
    }
    let lit_mode = match pieces.as_slice() {
        [] => return Ok(Matcher::Null),
        [Piece::Star] => return Ok(Matcher::Present),
        [Piece::Lit(_)] => Some(WHOLE),
        [Piece::Star, Piece::Lit(_), Piece::Star] => Some(ANY),
        [Piece::Lit(_), Piece::Star] => Some(START),
        [Piece::Star, Piece::Lit(_)] => Some(END),
        _ => None,
    };
    if let Some(mode) = lit_mode {
        let bytes = pieces
            .into_iter()
            .find_map(|p| match p {
                Piece::Lit(b) => Some(b),
                _ => None,
            })
            .unwrap_or_default();
        let Some(field) = field else {
            // Never scanned for: the leaf is false on an absent field.
            return Ok(Matcher::Exists(true));
        };
        out.lits.push(LitDef {
            field,
            bytes,
            cased,
        });
        return Ok(Matcher::Lit {
            pat: out.lits.len() as u32 - 1,
            mode,
        });
    }
    let mut re = String::from(if cased { "(?s)^" } else { "(?is)^" });
    for p in pieces {
        match p {
            Piece::Star => re.push_str(".*"),
            Piece::One => re.push('.'),
            Piece::Lit(b) => {
                for byte in b {
                    if byte.is_ascii() {
                        re.push_str(&regex::escape(&(byte as char).to_string()));
                    } else {
                        re.push_str(&format!("\\x{byte:02x}"));
                    }
                }
            }
        }
    }
    re.push('$');
    regex::bytes::RegexBuilder::new(&re)
        .unicode(false)
        .build()
        .map(Matcher::Regex)
        .map_err(|e| format!("wildcard value: {}", first_line(&e)))
}

/// `windash`: every dash that starts a word, as each dash Windows tools
/// accept (`-`, `/`, en dash, em dash, horizontal bar).
fn windash(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dash in ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'] {
        let mut s = String::with_capacity(text.len());
        let mut prev: Option<char> = None;
        for c in text.chars() {
            if c == '-' && prev.is_none_or(char::is_whitespace) {
                s.push(dash);
            } else {
                s.push(c);
            }
            prev = Some(c);
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn utf16(text: &str, kind: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if kind == "bom" {
        out.extend_from_slice(&[0xff, 0xfe]);
    }
    for unit in text.encode_utf16() {
        if kind == "be" {
            out.extend_from_slice(&unit.to_be_bytes());
        } else {
            out.extend_from_slice(&unit.to_le_bytes());
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// `base64offset`: the value's base64 form at each of the three offsets it
/// can start at inside a longer encoded text, without the characters that
/// depend on the neighbouring bytes.
pub fn base64_offsets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shift in 0..3usize {
        let mut padded = vec![b' '; shift];
        padded.extend_from_slice(data);
        let enc = base64(&padded);
        let start = [0, 2, 3][shift];
        let cut = [0, 3, 2][(data.len() + shift) % 3];
        let end = enc.len().saturating_sub(cut);
        if start < end {
            out.push(enc[start..end].to_vec());
        }
    }
    out
}

// ---- the condition ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
}

fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c == '(' || c == ')' || c.is_whitespace() {
            if !word.is_empty() {
                out.push(Token::Word(std::mem::take(&mut word)));
            }
            match c {
                '(' => out.push(Token::Open),
                ')' => out.push(Token::Close),
                _ => {}
            }
        } else if c == '|' {
            return Err("aggregations (`| count()`...) are not supported".into());
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        out.push(Token::Word(word));
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    named: &'a [(String, Expr)],
}

fn parse_condition(text: &str, named: &[(String, Expr)]) -> Result<Expr> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
        named,
    };
    let e = p.or()?;
    if p.at != p.tokens.len() {
        return Err(format!("unexpected `{}`", p.describe()));
    }
    Ok(e)
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && glob(tail, &name[head.len() + i..])
                })
        }
    }
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => w.clone(),
            Some(Token::Open) => "(".into(),
            Some(Token::Close) => ")".into(),
            None => "end".into(),
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let mut any = vec![self.and()?];
        while self
            .peek_word()
            .is_some_and(|w| w.eq_ignore_ascii_case("or"))
        {
            self.at += 1;
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.pop().expect("one")
        } else {
            Expr::Or(any)
        })
    }

    fn and(&mut self) -> Result<Expr> {
        let mut all = vec![self.not()?];
        while self
            .peek_word()
            .is_some_and(|w| w.eq_ignore_ascii_case("and"))
        {
            self.at += 1;
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one")
        } else {
            Expr::And(all)
        })
    }

    fn not(&mut self) -> Result<Expr> {
        if self
            .peek_word()
            .is_some_and(|w| w.eq_ignore_ascii_case("not"))
        {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr> {
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let e = self.or()?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return Err(format!("expected `)`, found `{}`", self.describe()));
                }
                self.at += 1;
                Ok(e)
            }
            Some(Token::Word(w)) => {
                self.at += 1;
                let quantity = w.to_ascii_lowercase();
                if self
                    .peek_word()
                    .is_some_and(|n| n.eq_ignore_ascii_case("of"))
                {
                    self.at += 1;
                    let pattern = self
                        .peek_word()
                        .ok_or("`of` without a pattern")?
                        .to_string();
                    self.at += 1;
                    let matched: Vec<Expr> = self
                        .named
                        .iter()
                        .filter(|(name, _)| {
                            if pattern == "them" {
                                !name.starts_with('_')
                            } else {
                                glob(&pattern, name)
                            }
                        })
                        .map(|(_, e)| e.clone())
                        .collect();
                    if matched.is_empty() {
                        return Err(format!("`{pattern}` names no search identifier"));
                    }
                    return match quantity.as_str() {
                        "1" | "any" => Ok(Expr::Or(matched)),
                        "all" => Ok(Expr::And(matched)),
                        n => {
                            let n: usize = n
                                .parse()
                                .map_err(|_| format!("`{w} of`: expected 1, all or a count"))?;
                            Ok(at_least(n, &matched))
                        }
                    };
                }
                self.named
                    .iter()
                    .find(|(name, _)| *name == w)
                    .map(|(_, e)| e.clone())
                    .ok_or_else(|| format!("`{w}` is not a search identifier of the rule"))
            }
            Some(Token::Close) => Err("unexpected `)`".into()),
            None => Err("the condition ends too early".into()),
        }
    }
}

/// `N of`: at least `n` of `es` (an OR of ANDs over the combinations).
fn at_least(n: usize, es: &[Expr]) -> Expr {
    if n == 0 {
        return Expr::Const(true);
    }
    if n > es.len() {
        return Expr::Const(false);
    }
    let mut any = Vec::new();
    for (i, e) in es.iter().enumerate() {
        any.push(Expr::And(vec![e.clone(), at_least(n - 1, &es[i + 1..])]));
    }
    Expr::Or(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"ping"), b"cGluZw==");
        assert_eq!(base64(b"pin"), b"cGlu");
        assert_eq!(base64(b""), b"");
    }

    #[test]
    fn base64offset_finds_the_value_at_every_offset() {
        let variants = base64_offsets(b"/bin/sh");
        for prefix in ["", "a", "ab", "abc"] {
            for suffix in ["", "x", "xy"] {
                let text = format!("{prefix}/bin/sh{suffix}");
                let enc = base64(text.as_bytes());
                assert!(
                    variants
                        .iter()
                        .any(|v| enc.windows(v.len()).any(|w| w == v.as_slice())),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn wildcards_split_and_escape() {
        assert_eq!(
            wildcard_pieces(b"a*b?c"),
            vec![
                Piece::Lit(b"a".to_vec()),
                Piece::Star,
                Piece::Lit(b"b".to_vec()),
                Piece::One,
                Piece::Lit(b"c".to_vec())
            ]
        );
        assert_eq!(wildcard_pieces(br"a\*"), vec![Piece::Lit(b"a*".to_vec())]);
        assert_eq!(
            wildcard_pieces(br"C:\Windows"),
            vec![Piece::Lit(br"C:\Windows".to_vec())]
        );
    }

    #[test]
    fn windash_varies_word_start_dashes_only() {
        let v = windash("tool -e a-b");
        assert!(v.contains(&"tool /e a-b".to_string()));
        assert!(v.contains(&"tool \u{2013}e a-b".to_string()));
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn conditions_parse_with_precedence() {
        let named = vec![
            ("a".to_string(), Expr::Leaf(0)),
            ("b".to_string(), Expr::Leaf(1)),
            ("sel_x".to_string(), Expr::Leaf(2)),
            ("sel_y".to_string(), Expr::Leaf(3)),
        ];
        let e = parse_condition("a or b and not sel_x", &named).unwrap();
        // a=false, b=true, sel_x=false: true (and binds tighter than or).
        let vals = [false, true, false, false];
        assert!(e.clone().eval(&mut |i| vals[i as usize]));
        let e = parse_condition("(a or b) and all of sel_*", &named).unwrap();
        assert!(!e.eval(&mut |i| vals[i as usize]));
        let e = parse_condition("1 of sel_* and not 1 of them", &named).unwrap();
        assert!(!e.eval(&mut |i| i == 2));
        assert!(parse_condition("a and", &named).is_err());
        assert!(parse_condition("a | count() > 5", &named).is_err());
        assert!(parse_condition("nope", &named).is_err());
        assert!(parse_condition("1 of zz*", &named).is_err());
        let e = parse_condition("2 of them", &named).unwrap();
        assert!(e.eval(&mut |i| i == 0 || i == 3));
        assert!(!e.eval(&mut |i| i == 3));
    }

    #[test]
    fn unknown_and_unsupported_modifiers_are_refused() {
        assert!(modifiers(&["contains", "startswith"]).is_err());
        assert!(modifiers(&["bogus"])
            .unwrap_err()
            .contains("unknown modifier"));
        assert!(modifiers(&["expand"])
            .unwrap_err()
            .contains("not supported"));
        assert!(modifiers(&["i"]).is_err());
        assert!(modifiers(&["re", "i"]).is_ok());
    }

    #[test]
    fn three_valued_logic() {
        let e = Expr::And(vec![Expr::Leaf(0), Expr::Not(Box::new(Expr::Leaf(1)))]);
        assert_eq!(
            e.eval3(&|i| if i == 0 { Some(false) } else { None }),
            Some(false)
        );
        assert_eq!(e.eval3(&|_| None), None);
        let e = Expr::Or(vec![Expr::Leaf(0), Expr::Leaf(1)]);
        assert_eq!(
            e.eval3(&|i| if i == 0 { Some(true) } else { None }),
            Some(true)
        );
    }
}
