//! A strict JSON reader (RFC 8259) made for JSON-RPC bodies: one pass over the bytes, the members the
//! gate reads borrowed (decoded only when they carry escapes), every other value checked for syntax and
//! stepped over without being built, at any depth (nesting is followed on a stack of its own, not by
//! recursion).
//!
//! Strings are checked as a strict parser decodes them, skipped or not: no control character, only the
//! escapes of RFC 8259 §7, and `\u` escapes that name Unicode scalar values (a surrogate only as a
//! high-low pair, §8.2) — a parser that decodes a lone surrogate its own way would read another string.
//! The text is UTF-8 already (checked whole by the caller).

use std::borrow::Cow;

/// Why a body was refused by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ScanError {
    /// Not JSON.
    Syntax(String),
    /// JSON, but a member the gate reads has the wrong type or is given twice (RFC 8259 §4: parsers
    /// disagree on which of two members wins).
    Shape(String),
}

/// The members of one message that the gate reads, as the wire has them.
#[derive(Debug, Default)]
pub(super) struct Wire<'a> {
    /// `None` when absent or `null`.
    pub(super) jsonrpc: Option<Cow<'a, str>>,
    /// The `id` as written (`null` included); `None` when absent.
    pub(super) id: Option<&'a str>,
    /// `None` when absent or `null`.
    pub(super) method: Option<Cow<'a, str>>,
    /// `params` as written; `None` when absent or `null`.
    pub(super) params: Option<&'a str>,
    /// Whether `result` / `error` are present (whatever their value, `null` included).
    pub(super) result: bool,
    pub(super) error: bool,
    /// `params.name`, `params.uri` and `params.arguments` (as written), read in the same pass, since
    /// `method` may come after `params`; which of them matter is the method's to say.
    pub(super) name: Member<'a>,
    pub(super) uri: Member<'a>,
    pub(super) arguments: Member<'a>,
    /// `params.ref` of `completion/complete`: its `type`, `name` and `uri` (`type` is `Twice` when
    /// `ref` is, and `Raw` when it is no object).
    pub(super) ref_type: Member<'a>,
    pub(super) ref_name: Member<'a>,
    pub(super) ref_uri: Member<'a>,
}

/// One member of `params` that some methods read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) enum Member<'a> {
    #[default]
    Absent,
    Null,
    /// A string, decoded.
    Text(Cow<'a, str>),
    /// Any other value, as written.
    Raw(&'a str),
    /// Given more than once (RFC 8259 §4: parsers disagree on which one wins).
    Twice,
}

/// Bytes that end the plain run of a JSON string (RFC 8259 §7): the closing quote, a backslash, a control
/// character — those a writer must escape.
pub(crate) const STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A position in a JSON text.
pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    pub(super) fn peek_value(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    /// Nothing but whitespace is left.
    pub(super) fn end(&mut self) -> Result<(), ScanError> {
        match self.peek_value() {
            None => Ok(()),
            Some(_) => Err(self.syntax("trailing characters")),
        }
    }

    /// A batch: the elements of the array at the scanner, each one message.
    pub(super) fn batch(&mut self) -> Result<Vec<Wire<'a>>, ScanError> {
        let mut wires = Vec::new();
        self.expect(b'[')?;
        if self.peek_value() == Some(b']') {
            self.pos += 1;
            return Ok(wires);
        }
        loop {
            wires.push(self.message()?);
            match self.peek_value() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(wires);
                }
                _ => return Err(self.syntax("expected `,` or `]`")),
            }
        }
    }

    /// One message: an object whose members the gate reads are kept, the others checked and skipped.
    pub(super) fn message(&mut self) -> Result<Wire<'a>, ScanError> {
        if self.peek_value() != Some(b'{') {
            let kind = self.kind();
            self.skip_value()?;
            return Err(ScanError::Shape(format!("invalid type: {kind}, expected a JSON-RPC message object")));
        }
        let mut wire = Wire::default();
        let mut seen = Seen::default();
        self.object(|key, s| {
            match key.as_ref() {
                "jsonrpc" => {
                    seen.first(1, "jsonrpc")?;
                    wire.jsonrpc = s.nullable_string("jsonrpc")?;
                }
                "method" => {
                    seen.first(2, "method")?;
                    wire.method = s.nullable_string("method")?;
                }
                "id" => {
                    seen.first(4, "id")?;
                    wire.id = Some(s.raw_value()?);
                }
                "params" => {
                    seen.first(8, "params")?;
                    let start = s.pos;
                    if s.peek() == Some(b'{') {
                        s.params_members(&mut wire)?;
                    } else {
                        s.skip_value()?;
                    }
                    wire.params = Some(&s.text[start..s.pos]).filter(|raw| *raw != "null");
                }
                "result" => {
                    seen.first(16, "result")?;
                    s.skip_value()?;
                    wire.result = true;
                }
                "error" => {
                    seen.first(32, "error")?;
                    s.skip_value()?;
                    wire.error = true;
                }
                other => {
                    unlike(other, &["jsonrpc", "method", "id", "params", "result", "error"])?;
                    s.skip_value()?;
                }
            }
            Ok(())
        })?;
        Ok(wire)
    }

    /// The members of the `params` object at the scanner that some methods read, into `wire`.
    fn params_members(&mut self, wire: &mut Wire<'a>) -> Result<(), ScanError> {
        self.object(|key, s| {
            let (member, decoded) = match key.as_ref() {
                "name" => (&mut wire.name, true),
                "uri" => (&mut wire.uri, true),
                // Kept as written, for the policy rules that read it.
                "arguments" => (&mut wire.arguments, false),
                "ref" => {
                    if wire.ref_type != Member::Absent {
                        wire.ref_type = Member::Twice;
                        return s.skip_value();
                    }
                    if s.peek() != Some(b'{') {
                        wire.ref_type = Member::Raw(s.raw_value()?);
                        return Ok(());
                    }
                    return s.object(|key, s| {
                        let member = match key.as_ref() {
                            "type" => &mut wire.ref_type,
                            "name" => &mut wire.ref_name,
                            "uri" => &mut wire.ref_uri,
                            other => {
                                unlike(other, &["type", "name", "uri"])?;
                                return s.skip_value();
                            }
                        };
                        s.member(member, true)
                    });
                }
                other => {
                    unlike(other, &["name", "uri", "arguments", "ref"])?;
                    return s.skip_value();
                }
            };
            s.member(member, decoded)
        })
    }

    /// The value at the scanner into `member`: a string (decoded when `decoded`), `null`, or anything
    /// else as written; a second value makes it `Twice`.
    fn member(&mut self, member: &mut Member<'a>, decoded: bool) -> Result<(), ScanError> {
        let value = match self.peek() {
            Some(b'"') if decoded => Member::Text(self.string()?),
            _ => match self.raw_value()? {
                "null" => Member::Null,
                raw => Member::Raw(raw),
            },
        };
        *member = if *member == Member::Absent { value } else { Member::Twice };
        Ok(())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    #[cold]
    fn syntax(&self, what: &str) -> ScanError {
        match self.peek() {
            None => ScanError::Syntax(format!("{what}, found the end of the body")),
            Some(_) => ScanError::Syntax(format!("{what} at byte {}", self.pos)),
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Result<(), ScanError> {
        if self.peek_value() != Some(byte) {
            return Err(self.expected(byte));
        }
        self.pos += 1;
        Ok(())
    }

    #[cold]
    fn expected(&self, byte: u8) -> ScanError {
        self.syntax(&format!("expected `{}`", char::from(byte)))
    }

    /// What the value at the scanner is, for a message.
    fn kind(&self) -> &'static str {
        match self.peek() {
            Some(b'[') => "an array",
            Some(b'{') => "an object",
            Some(b'"') => "a string",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "no value",
        }
    }

    /// The members of the object at the scanner: `member` gets each name, decoded, and must read or skip
    /// its value.
    fn object(
        &mut self,
        mut member: impl FnMut(Cow<'a, str>, &mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(b'{')?;
        if self.peek_value() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let name = self.member_name()?;
            self.skip_ws();
            member(name, self)?;
            match self.peek_value() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected `,` or `}`")),
            }
        }
    }

    /// A member's name and its colon.
    #[inline]
    fn member_name(&mut self) -> Result<Cow<'a, str>, ScanError> {
        if self.peek_value() != Some(b'"') {
            return Err(self.syntax("expected a member name"));
        }
        let name = self.string()?;
        self.expect(b':')?;
        Ok(name)
    }

    /// A string member the gate reads: `None` for `null`.
    fn nullable_string(&mut self, field: &str) -> Result<Option<Cow<'a, str>>, ScanError> {
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'n') => self.literal("null").map(|()| None),
            _ => {
                let kind = self.kind();
                self.skip_value()?;
                Err(ScanError::Shape(format!("invalid type: {kind}, expected a string for `{field}`")))
            }
        }
    }

    /// The value at the scanner as written.
    #[inline]
    fn raw_value(&mut self) -> Result<&'a str, ScanError> {
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.text[start..self.pos])
    }

    /// The string at the scanner, its escapes decoded; borrowed when it has none.
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let open = self.pos;
        let (close, escaped) = self.string_end()?;
        self.pos = close + 1;
        if !escaped {
            return Ok(Cow::Borrowed(&self.text[open + 1..close]));
        }
        // Escapes are rare: checked above, decoded by serde_json.
        serde_json::from_str::<String>(&self.text[open..=close])
            .map(Cow::Owned)
            .map_err(|e| ScanError::Syntax(e.to_string()))
    }

    /// Checks the string whose opening quote is at the scanner: the index of its closing quote, and
    /// whether it has escapes.
    #[inline]
    fn string_end(&self) -> Result<(usize, bool), ScanError> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            let Some(plain) = plain_run(bytes, i) else {
                return Err(ScanError::Syntax("a string is not closed, found the end of the body".into()));
            };
            i += plain;
            match bytes[i] {
                b'"' => return Ok((i, escaped)),
                b'\\' => {
                    escaped = true;
                    i = escape_end(bytes, i).map_err(|what| ScanError::Syntax(format!("{what} at byte {i}")))?;
                }
                _ => return Err(ScanError::Syntax(format!("a control character in a string at byte {i}"))),
            }
        }
    }

    /// Checks one value of any kind and moves past it, building nothing.
    fn skip_value(&mut self) -> Result<(), ScanError> {
        // The arrays and objects the scanner is in.
        let mut open = Open::default();
        loop {
            match self.peek_value() {
                Some(opening @ (b'{' | b'[')) => {
                    let closing = if opening == b'{' { b'}' } else { b']' };
                    self.pos += 1;
                    if self.peek_value() == Some(closing) {
                        self.pos += 1;
                    } else {
                        open.push(closing);
                        if closing == b'}' {
                            self.member_name()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.pos = self.string_end()?.0 + 1,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                _ => return Err(self.syntax("expected a value")),
            }
            // A value ended: close what it ends, or go on to the next element or member.
            loop {
                let Some(closing) = open.last() else { return Ok(()) };
                match self.peek_value() {
                    Some(b',') => {
                        self.pos += 1;
                        if closing == b'}' {
                            self.member_name()?;
                        }
                        break;
                    }
                    Some(b) if b == closing => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => {
                        let what = if closing == b'}' { "expected `,` or `}`" } else { "expected `,` or `]`" };
                        return Err(self.syntax(what));
                    }
                }
            }
        }
    }

    /// RFC 8259 §6: `-`, an integer without leading zeros, then an optional fraction and exponent.
    fn number(&mut self) -> Result<(), ScanError> {
        let bytes = self.text.as_bytes();
        let digits = |from: usize| from + bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
        let mut i = self.pos + usize::from(bytes.get(self.pos) == Some(&b'-'));
        i = match bytes.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i + 1),
            _ => return Err(self.syntax("invalid number")),
        };
        if bytes.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                self.pos = end;
                return Err(self.syntax("a number's fraction has no digit"));
            }
            i = end;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                self.pos = end;
                return Err(self.syntax("a number's exponent has no digit"));
            }
            i = end;
        }
        self.pos = i;
        Ok(())
    }

    fn literal(&mut self, word: &'static str) -> Result<(), ScanError> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a value"))
        }
    }
}

/// The closing bytes of the arrays and objects a skipped value is inside, innermost last: a bit a level
/// for the first 64 (no allocation for the values MCP messages carry), a vector beyond.
#[derive(Default)]
struct Open {
    objects: u64,
    depth: usize,
    deeper: Vec<u8>,
}

impl Open {
    fn push(&mut self, closing: u8) {
        if self.depth < 64 {
            let bit = 1u64 << self.depth;
            self.objects = if closing == b'}' { self.objects | bit } else { self.objects & !bit };
        } else {
            self.deeper.push(closing);
        }
        self.depth += 1;
    }

    fn last(&self) -> Option<u8> {
        match self.depth {
            0 => None,
            1..=64 => Some(if self.objects >> (self.depth - 1) & 1 == 1 { b'}' } else { b']' }),
            _ => self.deeper.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.deeper.pop();
        }
        self.depth -= 1;
    }
}

/// Refuses a member name that is not one of `read` but that some parsers take for one: Go's
/// `encoding/json` matches names regardless of case, with `ſ` for `s` and `K` for `k`, the last match
/// winning (the go-sdk MCP server before 1.3.1, GHSA-wvj2-96wp-fq3f), and go-sdk 1.3.1 to 1.4.0 read a
/// name with a NUL as the name without it (GHSA-q382-vc8q-7jhj). Such an upstream would run a
/// `"Method"` or a `"Name"` the gate skipped, or take a `"ID"` the gate never saw for a request.
fn unlike(name: &str, read: &[&str]) -> Result<(), ScanError> {
    // What no parser reads as another name: lower-case ASCII letters, digits and `_` (`_meta`, …).
    if name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Ok(());
    }
    let visible: String = name.chars().filter(|c| !c.is_control()).collect();
    let folded = portcullis_policy::fold_member_name(&visible);
    match read.iter().find(|r| **r == folded) {
        Some(r) => Err(ScanError::Shape(format!("member {name:?} is not `{r}`, but some servers read it as `{r}`"))),
        None => Ok(()),
    }
}

/// The members read so far, one bit each, to refuse a second of the same name.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, bit: u8, name: &str) -> Result<(), ScanError> {
        if self.0 & bit != 0 {
            return Err(ScanError::Shape(format!("duplicate field `{name}`")));
        }
        self.0 |= bit;
        Ok(())
    }
}

/// How many bytes from `at` on are plain string content (none of [`STRING_SPECIAL`]); `None` when the
/// text ends first. Eight bytes at a time while eight are left: a byte is special when it is below 0x20
/// or equals `"` or `\`, and the lowest flagged byte of a word is always a true one (a borrow only
/// spreads to the bytes above it).
#[inline]
fn plain_run(bytes: &[u8], at: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = at;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let special = (word.wrapping_sub(ONES * 0x20) & !word & HIGH)
            | zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if special != 0 {
            return Some(i - at + (special.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let rest = bytes.get(i..)?;
    rest.iter().position(|&b| STRING_SPECIAL[usize::from(b)]).map(|n| i - at + n)
}

/// Checks the escape whose backslash is at `i`: the index after it.
fn escape_end(bytes: &[u8], i: usize) -> Result<usize, &'static str> {
    match bytes.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match hex4(bytes, i + 2).ok_or("a \\u escape needs four hex digits")? {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6..i + 8) == Some(b"\\u")).then(|| hex4(bytes, i + 8)).flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => Ok(i + 12),
                    _ => Err(LONE_SURROGATE),
                }
            }
            0xDC00..=0xDFFF => Err(LONE_SURROGATE),
            _ => Ok(i + 6),
        },
        _ => Err("an invalid escape"),
    }
}

const LONE_SURROGATE: &str = "a \\u escape is a lone surrogate (RFC 8259 §8.2)";

/// Four hex digits at `at`, as a UTF-16 code unit.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4)?.iter().try_fold(0u32, |unit, &b| Some(unit << 4 | char::from(b).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(text: &str) -> Result<usize, ScanError> {
        let mut s = Scanner::new(text);
        s.skip_value()?;
        s.end()?;
        Ok(s.pos)
    }

    #[test]
    fn values_of_every_kind_are_skipped_whole() {
        for text in [
            "0",
            "-0",
            "12.5e-3",
            "1E+9",
            "true",
            "false",
            "null",
            r#""a\"b\\c\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
            "[]",
            "{}",
            r#"[1, [2, {"a": [3, {}]}], "x", {"b": null, "c": {"d": []}}]"#,
            " { \"a\" : 1 , \"b\" : [ ] } ",
        ] {
            assert!(skipped(text).is_ok(), "{text}");
        }
        let deep = format!("{}0{}", "[{\"a\":".repeat(5000), "}]".repeat(5000));
        assert!(skipped(&deep).is_ok(), "any depth, without recursion");
    }

    #[test]
    fn plain_runs_end_at_the_first_special_byte() {
        let mut state: u32 = 0x2545_F491;
        for _ in 0..20_000 {
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    // Mostly plain bytes, with specials and bytes above 0x7F now and then.
                    match state % 16 {
                        0 => b'"',
                        1 => b'\\',
                        2 => (state >> 8) as u8 % 0x20,
                        3 => 0x80 | (state >> 8) as u8,
                        _ => b'a' + (state >> 8) as u8 % 26,
                    }
                })
                .collect();
            for at in 0..=bytes.len() {
                let expected = bytes[at..].iter().position(|&b| STRING_SPECIAL[usize::from(b)]);
                assert_eq!(plain_run(&bytes, at), expected, "{bytes:?} from {at}");
            }
        }
    }

    #[test]
    fn what_is_not_strict_json_is_refused() {
        for text in [
            "",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "-",
            "NaN",
            "tru",
            "nul",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "[",
            "{\"a\":",
            "\"abc",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u+123\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "[1]]",
            "{}}",
        ] {
            assert!(matches!(skipped(text), Err(ScanError::Syntax(_))), "{text:?}");
        }
    }

    #[test]
    fn members_are_read_borrowed_unless_escaped() {
        let text = r#"{"jsonrpc":"2.0","id":"a-1","method":"tools\/call","params":{"name":"echo"},"x":[1]}"#;
        let wire = Scanner::new(text).message().unwrap();
        assert!(matches!(wire.jsonrpc, Some(Cow::Borrowed("2.0"))));
        assert_eq!(wire.id, Some("\"a-1\""));
        assert!(matches!(wire.method.as_deref(), Some("tools/call")) && matches!(wire.method, Some(Cow::Owned(_))));
        assert_eq!(wire.params, Some(r#"{"name":"echo"}"#));
        assert!(!wire.result && !wire.error);
        assert_eq!(
            (&wire.name, &wire.uri, &wire.arguments),
            (&Member::Text("echo".into()), &Member::Absent, &Member::Absent)
        );
        let escaped_key = r#"{"\u006dethod":"x","params":null,"result":null}"#;
        let wire = Scanner::new(escaped_key).message().unwrap();
        assert_eq!(wire.method.as_deref(), Some("x"));
        assert_eq!((wire.params, wire.result), (None, true));
    }

    #[test]
    fn members_read_twice_or_of_the_wrong_type_are_shape_errors() {
        for text in
            [r#"{"id":1,"id":2}"#, r#"{"method":"a","\u006dethod":"b"}"#, r#"{"method":5}"#, r#"{"jsonrpc":[]}"#]
        {
            assert!(matches!(Scanner::new(text).message(), Err(ScanError::Shape(_))), "{text}");
        }
        assert!(matches!(Scanner::new("[\"2.0\", 1]").message(), Err(ScanError::Shape(_))), "an array is no message");
        // In `params`, what is read twice or has the wrong type is noted, for the methods that read it.
        let params = r#"{"params":{"name":"a","arguments":{},"arguments":[],"uri":5,"x":1,"x":2}}"#;
        let wire = Scanner::new(params).message().unwrap();
        assert_eq!((wire.name, wire.arguments, wire.uri), (Member::Text("a".into()), Member::Twice, Member::Raw("5")));
    }

    #[test]
    fn members_some_parsers_take_for_those_the_gate_reads_are_shape_errors() {
        for text in [
            r#"{"Method":"tools/call"}"#,
            r#"{"ID":1}"#,
            r#"{"jsonRPC":"2.0"}"#,
            r#"{"paramſ":{}}"#,
            r#"{"method\u0000":"tools/call"}"#,
            r#"{"Result":{}}"#,
            r#"{"params":{"Name":"admin"}}"#,
            r#"{"params":{"URI":"file:///etc/passwd"}}"#,
            r#"{"params":{"argumentſ":{}}}"#,
            r#"{"params":{"name\u0000":"admin"}}"#,
        ] {
            assert!(matches!(Scanner::new(text).message(), Err(ScanError::Shape(_))), "{text}");
        }
        // Other members pass, whatever their case: they are nobody's `method` or `name`.
        let others = r#"{"method":"m","X-Extra":1,"params":{"_meta":{},"Cursor":"c","progressToken":1}}"#;
        assert_eq!(Scanner::new(others).message().unwrap().method.as_deref(), Some("m"));
    }
}
