//! Rewriting by splicing: a proxy's changes (RFC 3261 §16.6: Request-URI, Max-Forwards,
//! Record-Route, Via; §16.7: removing its Via from responses) are applied to the received
//! bytes, and everything else is copied through unchanged, folds and odd spacing included.

use std::fmt::Write as _;

use super::header::ViaIter;
use super::parse::{HeaderName, Message, StartLine};

/// An edit that cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    NoVia,
    NotARequest,
    NoSuchHeader,
    /// Two edits touch the same bytes.
    Overlap,
    MalformedVia,
    MalformedMaxForwards,
    /// Max-Forwards is already 0 (the request should have been answered with 483).
    MaxForwardsExhausted,
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for EditError {}

#[derive(Debug)]
struct Splice {
    start: usize,
    end: usize,
    data: Vec<u8>,
}

/// Collects edits against one parsed message and produces the edited bytes.
#[derive(Debug)]
pub struct Editor<'m, 'a> {
    msg: &'m Message<'a>,
    splices: Vec<Splice>,
}

impl<'m, 'a> Editor<'m, 'a> {
    pub fn new(msg: &'m Message<'a>) -> Self {
        Editor {
            msg,
            splices: Vec::new(),
        }
    }

    fn splice(&mut self, start: usize, end: usize, data: Vec<u8>) {
        self.splices.push(Splice { start, end, data });
    }

    fn header_line(name: &str, value: &str) -> Vec<u8> {
        let mut s = String::with_capacity(name.len() + value.len() + 4);
        let _ = write!(s, "{name}: {value}\r\n");
        s.into_bytes()
    }

    /// Inserts a header line before header `index` (`index == headers.len()` appends it at
    /// the end of the header section).
    pub fn insert_header_before(
        &mut self,
        index: usize,
        name: &str,
        value: &str,
    ) -> Result<(), EditError> {
        let at = match self.msg.headers.get(index) {
            Some(h) => h.line_range().start,
            None if index == self.msg.headers.len() => self.msg.headers_end,
            None => return Err(EditError::NoSuchHeader),
        };
        self.splice(at, at, Self::header_line(name, value));
        Ok(())
    }

    /// Inserts a Via line above the first Via (or at the top of the headers if none).
    pub fn push_via(&mut self, value: &str) {
        let at = self
            .msg
            .header(HeaderName::Via)
            .map_or(self.msg.headers_start, |h| h.line_range().start);
        self.splice(at, at, Self::header_line("Via", value));
    }

    /// Removes the topmost via-parm: the whole line if it is alone, otherwise just it and its
    /// comma.
    pub fn remove_top_via(&mut self) -> Result<(), EditError> {
        let h = self.msg.header(HeaderName::Via).ok_or(EditError::NoVia)?;
        let mut it = ViaIter::new(h.value);
        let top = match it.next() {
            Some(Ok(v)) => v,
            _ => return Err(EditError::MalformedVia),
        };
        let base = h.value_range().start;
        if top.next >= h.value.len() {
            let r = h.line_range();
            self.splice(r.start, r.end, Vec::new());
        } else {
            self.splice(base + top.start, base + top.next, Vec::new());
        }
        Ok(())
    }

    pub fn set_request_uri(&mut self, uri: &str) -> Result<(), EditError> {
        let StartLine::Request(rl) = self.msg.start else {
            return Err(EditError::NotARequest);
        };
        self.splice(
            rl.uri_range.0 as usize,
            rl.uri_range.1 as usize,
            uri.as_bytes().to_vec(),
        );
        Ok(())
    }

    /// Replaces the value of header `index`, keeping its name and separator as written.
    pub fn replace_value(&mut self, index: usize, value: &str) -> Result<(), EditError> {
        let r = self
            .msg
            .headers
            .get(index)
            .ok_or(EditError::NoSuchHeader)?
            .value_range();
        self.splice(r.start, r.end, value.as_bytes().to_vec());
        Ok(())
    }

    pub fn remove_header(&mut self, index: usize) -> Result<(), EditError> {
        let r = self
            .msg
            .headers
            .get(index)
            .ok_or(EditError::NoSuchHeader)?
            .line_range();
        self.splice(r.start, r.end, Vec::new());
        Ok(())
    }

    /// RFC 3261 §16.6 item 3: decrements Max-Forwards, or adds `Max-Forwards: 70` if absent.
    /// Returns the new value.
    pub fn decrement_max_forwards(&mut self) -> Result<u8, EditError> {
        let found = self
            .msg
            .headers
            .iter()
            .position(|h| h.kind == HeaderName::MaxForwards);
        match found {
            Some(i) => {
                let v = super::header::parse_max_forwards(self.msg.headers[i].value)
                    .map_err(|_| EditError::MalformedMaxForwards)?;
                let n = v.checked_sub(1).ok_or(EditError::MaxForwardsExhausted)?;
                self.replace_value(i, &n.to_string())?;
                Ok(n)
            }
            None => {
                let at = self
                    .msg
                    .headers
                    .iter()
                    .position(|h| h.kind != HeaderName::Via)
                    .unwrap_or(self.msg.headers.len());
                self.insert_header_before(at, "Max-Forwards", "70")?;
                Ok(70)
            }
        }
    }

    /// Replaces the body and sets Content-Length to match (adding the header if absent).
    pub fn set_body(&mut self, body: &[u8]) {
        let len = body.len().to_string();
        match self
            .msg
            .headers
            .iter()
            .position(|h| h.kind == HeaderName::ContentLength)
        {
            Some(i) => {
                let r = self.msg.headers[i].value_range();
                self.splice(r.start, r.end, len.into_bytes());
            }
            None => {
                let at = self.msg.headers_end;
                self.splice(at, at, Self::header_line("Content-Length", &len));
            }
        }
        let start = self.msg.body_start;
        let end = self.msg.as_bytes().len();
        let mut data = Vec::with_capacity(body.len() + 2);
        if !self.msg.has_blank_line {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(body);
        self.splice(start, end, data);
    }

    /// Appends the edited message to `out`.
    pub fn write_to(mut self, out: &mut Vec<u8>) -> Result<(), EditError> {
        // Inserts go before a replacement starting at the same offset; otherwise keep the
        // order in which edits were made.
        self.splices.sort_by_key(|s| (s.start, s.end != s.start));
        let src = self.msg.as_bytes();
        let mut pos = 0;
        for s in &self.splices {
            if s.start < pos || s.end > src.len() {
                return Err(EditError::Overlap);
            }
            out.extend_from_slice(&src[pos..s.start]);
            out.extend_from_slice(&s.data);
            pos = s.end;
        }
        out.extend_from_slice(&src[pos..]);
        Ok(())
    }

    /// The edited message.
    pub fn finish(self) -> Result<Vec<u8>, EditError> {
        let extra: usize = self.splices.iter().map(|s| s.data.len()).sum();
        let mut out = Vec::with_capacity(self.msg.as_bytes().len() + extra);
        self.write_to(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 ,\r\n SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n\
max-forwards:   0070\r\n\
To: <sip:bob@example.com>\r\n\
Content-Length: 3\r\n\
\r\n\
abc";

    fn edit(f: impl FnOnce(&mut Editor)) -> Result<Vec<u8>, EditError> {
        let m = Message::parse(REQ).unwrap();
        let mut e = Editor::new(&m);
        f(&mut e);
        e.finish()
    }

    #[test]
    fn no_edits_is_identity() {
        assert_eq!(edit(|_| {}).unwrap(), REQ);
    }

    #[test]
    fn proxy_forwarding_edits() {
        let out = edit(|e| {
            e.push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp");
            assert_eq!(e.decrement_max_forwards(), Ok(69));
            e.set_request_uri("sip:bob@192.0.2.9:5062").unwrap();
        })
        .unwrap();
        let expect = String::from_utf8_lossy(REQ)
            .replace(
                "INVITE sip:bob@example.com ",
                "INVITE sip:bob@192.0.2.9:5062 ",
            )
            .replacen(
                "Via:",
                "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\nVia:",
                1,
            )
            .replace("max-forwards:   0070", "max-forwards:   69");
        assert_eq!(String::from_utf8(out).unwrap(), expect);
        // The result parses and the new Via is on top.
        let expect_bytes = expect.into_bytes();
        let m = Message::parse(&expect_bytes).unwrap();
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKp"));
    }

    #[test]
    fn remove_top_via_of_a_joined_line_then_of_a_single_line() {
        let out = edit(|e| e.remove_top_via().unwrap()).unwrap();
        let expect = String::from_utf8_lossy(REQ)
            .replace("SIP/2.0/UDP a.example.com;branch=z9hG4bK1 ,\r\n ", "");
        assert_eq!(String::from_utf8_lossy(&out), expect);
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK2"));
        let out2 = {
            let mut e = Editor::new(&m);
            e.remove_top_via().unwrap();
            e.finish().unwrap()
        };
        let m2 = Message::parse(&out2).unwrap();
        assert_eq!(m2.top_via().unwrap().branch, Some("z9hG4bK3"));
        assert_eq!(m2.headers.len(), m.headers.len() - 1);
    }

    #[test]
    fn body_and_content_length() {
        let out = edit(|e| e.set_body(b"hello world")).unwrap();
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.body(), b"hello world");
        assert_eq!(m.content_length, Some(11));
        // Without Content-Length, one is added.
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nxyz";
        let m = Message::parse(raw).unwrap();
        let mut e = Editor::new(&m);
        e.set_body(b"v=0\r\n");
        let out = e.finish().unwrap();
        assert_eq!(
            out,
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
    }

    #[test]
    fn replace_remove_and_overlap() {
        let out = edit(|e| {
            e.replace_value(3, "<sip:carol@example.com>").unwrap();
            e.remove_header(4).unwrap();
        })
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("To: <sip:carol@example.com>\r\n\r\nabc"));
        assert!(edit(|e| {
            e.replace_value(3, "x").unwrap();
            e.remove_header(3).unwrap();
        })
        .is_err());
        assert_eq!(
            edit(|e| {
                let _ = e.replace_value(99, "x");
            })
            .unwrap(),
            REQ
        );
    }

    #[test]
    fn max_forwards_absent_or_zero() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        let mut e = Editor::new(&m);
        assert_eq!(e.decrement_max_forwards(), Ok(70));
        assert_eq!(
            e.finish().unwrap(),
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nMax-Forwards: 70\r\nTo: <sip:a@b>\r\n\r\n"
        );
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 0\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        assert_eq!(
            Editor::new(&m).decrement_max_forwards(),
            Err(EditError::MaxForwardsExhausted)
        );
    }
}
