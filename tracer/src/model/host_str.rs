//! Strings that come from the host — process names, arguments, paths, file
//! contents — and so from the attacker. They are bytes, not UTF-8.
//!
//! [`HostStr`] keeps them losslessly and gives rules a `&str` to match on
//! (its "rule text"): valid UTF-8 as it is, and each byte that is not part
//! of valid UTF-8 as one private-use character (U+10FE80 + the byte's low
//! 7 bits, so `\xff` is U+10FEFF). A name that is not UTF-8 is therefore
//! matched by every rule like its ASCII twin, and turns back into the very
//! bytes for a file-system lookup ([`HostStr::to_bytes`]). Text that
//! already holds one of those private-use characters has that character's
//! bytes mapped too, so the round trip is exact for every input.
//!
//! Output:
//! - human: every renderer passes every string it prints — host strings
//!   and the sentences built from them alike — through [`escape`], the one
//!   escaping function (control characters, DEL, C1 controls,
//!   bidirectional overrides and invalid bytes shown as `\x1b`, `\n`,
//!   `\u{202e}`, `\xff`; a backslash as `\\`, so the form is unambiguous).
//!   `HostStr` has no `Display` on purpose: a sentence about a process is
//!   built from the rule text (`as_str`) and escaped once, when printed.
//! - JSON: a JSON string when the bytes are valid UTF-8 (JSON escapes
//!   control characters itself); otherwise an object
//!   `{"text": <escaped form>, "hex": <the raw bytes in hex>}`.
use std::{borrow::Cow, fmt};

use serde::{ser::SerializeMap, Deserialize, Deserializer, Serialize, Serializer};

/// First of the 128 private-use characters that stand for bytes 0x80..=0xFF.
const RAW_BYTE_BASE: u32 = 0x10_FE80;
/// The first byte of those characters' UTF-8 form (all lie in U+10xxxx).
const RAW_BYTE_LEAD: u8 = 0xF4;

/// A string from the host: bytes, held as lossless rule text.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostStr(String);

impl HostStr {
    /// From raw bytes (file contents, /proc fields, kernel records).
    pub fn from_bytes(bytes: &[u8]) -> HostStr {
        let mut text = String::with_capacity(bytes.len());
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if is_raw_byte(c) {
                    // Would read back as a raw byte: keep its own bytes instead.
                    let mut buf = [0u8; 4];
                    c.encode_utf8(&mut buf)
                        .bytes()
                        .for_each(|b| push_raw(&mut text, b));
                } else {
                    text.push(c);
                }
            }
            chunk.invalid().iter().for_each(|&b| push_raw(&mut text, b));
        }
        HostStr(text)
    }

    /// Back from rule text (as produced by [`HostStr::as_str`]).
    pub fn from_text(text: &str) -> HostStr {
        HostStr(text.to_string())
    }

    /// The rule text: what detectors match on. Never print it raw.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The original bytes.
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        if !self.0.chars().any(is_raw_byte) {
            return Cow::Borrowed(self.0.as_bytes());
        }
        let mut out = Vec::with_capacity(self.0.len());
        let mut buf = [0u8; 4];
        for c in self.0.chars() {
            match raw_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        Cow::Owned(out)
    }

    /// Appends the original bytes to `out` (reusing its capacity: no
    /// allocation once it is large enough, as per-event matchers need).
    pub fn extend_bytes_into(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4];
        for c in self.0.chars() {
            match raw_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    }

    /// The original bytes as a path, for the file system.
    pub fn to_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.to_bytes()).into()
    }

    /// The bytes were valid UTF-8.
    pub fn is_utf8(&self) -> bool {
        // Every stand-in character's UTF-8 form starts with 0xF4, which
        // ordinary text rarely holds: one byte search settles most strings.
        !self.0.as_bytes().contains(&RAW_BYTE_LEAD) || !self.0.chars().any(is_raw_byte)
    }

    /// Length of the original bytes.
    pub fn byte_len(&self) -> usize {
        self.to_bytes().len()
    }

    /// The escaped form for people.
    pub fn escaped(&self) -> Cow<'_, str> {
        escape(&self.0)
    }

    /// Parts joined with a separator, like `[T]::join`.
    pub fn join<'a>(parts: impl IntoIterator<Item = &'a HostStr>, sep: &str) -> HostStr {
        let mut out = String::new();
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(&p.0);
        }
        HostStr(out)
    }

    /// Shown escaped and cut to at most `max_chars` characters of the
    /// escaped form, saying how long the original was when cut: for
    /// quoting user input (a 10 MB indicator line) in a one-line error.
    pub fn quoted_prefix(&self, max_chars: usize) -> String {
        let escaped = self.escaped();
        if escaped.chars().count() <= max_chars {
            return escaped.into_owned();
        }
        let head: String = escaped.chars().take(max_chars).collect();
        format!("{head}… ({} bytes)", self.byte_len())
    }
}

fn is_raw_byte(c: char) -> bool {
    (RAW_BYTE_BASE..RAW_BYTE_BASE + 0x80).contains(&(c as u32))
}

fn raw_byte(c: char) -> Option<u8> {
    is_raw_byte(c).then(|| (c as u32 - RAW_BYTE_BASE) as u8 | 0x80)
}

fn push_raw(text: &mut String, byte: u8) {
    let c = char::from_u32(RAW_BYTE_BASE + u32::from(byte & 0x7f)).expect("valid code point");
    text.push(c);
}

/// Characters a terminal acts on, or that reorder what it shows.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (U+0080..U+009F, e.g. the 8-bit CSI)
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || is_raw_byte(c)
}

/// The one escaping function for host strings in human output: control
/// characters, DEL, C1 controls, bidirectional controls and bytes that are
/// not UTF-8 become `\n`, `\t`, `\r`, `\x1b`, `\x7f`, `\u{9b}`, `\u{202e}`,
/// `\xff`; a backslash becomes `\\`. Everything else is shown as is. The
/// result never holds a raw control character and never spans two lines.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_raw_byte(c) => out.push_str(&format!("\\x{:02x}", raw_byte(c).unwrap_or(0))),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The original bytes of rule text (a path taken from a `HostStr`), for a
/// file-system call.
pub fn original_bytes(text: &str) -> Vec<u8> {
    HostStr::from_text(text).to_bytes().into_owned()
}

/// Any text for a terminal, escaped (for messages that quote user input).
pub fn escape_bytes(bytes: &[u8]) -> String {
    HostStr::from_bytes(bytes).escaped().into_owned()
}

impl fmt::Debug for HostStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", escape(&self.0))
    }
}

/// A string when the bytes are UTF-8, else `{text, hex}` (see `Serialize`).
impl schemars::JsonSchema for HostStr {
    fn schema_name() -> Cow<'static, str> {
        "HostStr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes from the host: a string when they are UTF-8, else an object with the escaped text and the bytes in hex.",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "text": { "type": "string", "description": "Escaped for display (see README, host strings)." },
                        "hex": { "type": "string", "pattern": "^([0-9a-f]{2})*$", "description": "The original bytes." }
                    },
                    "required": ["text", "hex"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl Serialize for HostStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_utf8() {
            return s.serialize_str(&self.0);
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("text", &escape(&self.0))?;
        map.serialize_entry("hex", &hex::encode(self.to_bytes()))?;
        map.end()
    }
}

/// The inverse of `Serialize`: a string, or `{text, hex}` read from its bytes.
impl<'de> Deserialize<'de> for HostStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes { hex: String },
        }
        match Form::deserialize(d)? {
            Form::Text(s) => Ok(HostStr::from(s)),
            Form::Bytes { hex } => hex::decode(hex)
                .map(|b| HostStr::from_bytes(&b))
                .map_err(serde::de::Error::custom),
        }
    }
}

impl std::ops::Deref for HostStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for HostStr {
    fn from(s: &str) -> Self {
        HostStr::from_bytes(s.as_bytes())
    }
}

impl From<String> for HostStr {
    fn from(s: String) -> Self {
        if s.chars().any(is_raw_byte) {
            HostStr::from_bytes(s.as_bytes())
        } else {
            HostStr(s)
        }
    }
}

impl From<&[u8]> for HostStr {
    fn from(b: &[u8]) -> Self {
        HostStr::from_bytes(b)
    }
}

impl From<Vec<u8>> for HostStr {
    fn from(b: Vec<u8>) -> Self {
        match String::from_utf8(b) {
            Ok(s) => HostStr::from(s),
            Err(e) => HostStr::from_bytes(e.as_bytes()),
        }
    }
}

impl PartialEq<str> for HostStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HostStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_byte() {
        for bytes in [
            &b"plain"[..],
            b"tw\xffin",
            b"\xef\xbf\xbd\x00",
            "\u{10FEFF}".as_bytes(),
        ] {
            let h = HostStr::from_bytes(bytes);
            let json = serde_json::to_string(&h).unwrap();
            let back: HostStr = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_bytes(), bytes, "{json}");
        }
    }

    #[test]
    fn control_bytes_and_invalid_utf8_are_escaped_unambiguously() {
        let h = HostStr::from_bytes(b"a\x1b[2Jb\nEXEC pid=1\t\x7f\xff\\x");
        assert_eq!(h.escaped(), r"a\x1b[2Jb\nEXEC pid=1\t\x7f\xff\\x");
        assert!(!h.escaped().chars().any(char::is_control));
        // The literal text `\xff` and the byte 0xff look different.
        assert_ne!(
            HostStr::from(r"\xff").escaped(),
            HostStr::from_bytes(b"\xff").escaped()
        );
        assert_eq!(escape("a\u{9b}b\u{202e}c"), r"a\u{9b}b\u{202e}c");
        assert_eq!(escape("héllo wörld"), "héllo wörld");
        // A sentence built from rule text escapes the bytes it quotes.
        let name = HostStr::from_bytes(b"x\xff");
        assert_eq!(escape(&format!("runs {}", name.as_str())), r"runs x\xff");
    }

    #[test]
    fn bytes_round_trip_exactly() {
        let cases: [&[u8]; 6] = [
            b"plain",
            b"x\xff\xfe\x80y",
            "caf\u{e9}".as_bytes(),
            b"\xc3",
            // A valid private-use character from the raw-byte range.
            "\u{10fe80}\u{10feff}".as_bytes(),
            b"",
        ];
        for bytes in cases {
            let h = HostStr::from_bytes(bytes);
            assert_eq!(&*h.to_bytes(), bytes, "{h:?}");
            assert_eq!(HostStr::from_text(h.as_str()), h);
        }
        assert!(HostStr::from("plain").is_utf8() && !HostStr::from_bytes(b"\xc3").is_utf8());
        assert_eq!(HostStr::from_bytes(b"/tmp/x\xffy").byte_len(), 8);
        assert!(HostStr::from_bytes(b"/tmp/x\xff").starts_with("/tmp/"));
    }

    #[test]
    fn json_is_a_string_when_utf8_and_text_plus_hex_otherwise() {
        let v = serde_json::to_value(HostStr::from("a\nb")).unwrap();
        assert_eq!(v, serde_json::json!("a\nb"));
        let v = serde_json::to_value(HostStr::from_bytes(b"m\xffx")).unwrap();
        assert_eq!(v, serde_json::json!({"text": "m\\xffx", "hex": "6dff78"}));
    }

    #[test]
    fn long_input_is_quoted_as_a_short_prefix() {
        let long = HostStr::from("x".repeat(10_000_000).as_str());
        let q = long.quoted_prefix(40);
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("… (10000000 bytes)"));
        assert_eq!(HostStr::from("short").quoted_prefix(40), "short");
    }
}
