//! PIDF documents (RFC 3863) as the compositor needs them: checked to be a `presence`
//! document, its root's namespace declarations and its content found, several publishers'
//! documents composed into one (each keeps its tuples, persons and devices, and with them
//! their RPID (RFC 4480) activities), and the registration-derived document.
//!
//! This is not a general XML parser: the root element is located (after the XML
//! declaration, comments and processing instructions) and its matching end tag must close
//! the document; the content between them is passed through unchanged.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt::Write as _;

/// A publisher's PIDF document, located.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Document<'a> {
    /// The root's qualified name (`presence` or `p:presence`).
    pub(super) root: &'a str,
    /// The root's `xmlns` and `xmlns:prefix` declarations (name, value), in order.
    pub(super) namespaces: Vec<(&'a str, &'a str)>,
    /// What lies between the root's start and end tags.
    pub(super) content: &'a str,
}

impl<'a> Document<'a> {
    pub(super) fn parse(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let mut rest = text.trim_start_matches('\u{feff}');
        // Prolog: XML declaration, processing instructions, comments, whitespace.
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("<?") {
                rest = r.get(r.find("?>")? + 2..)?;
            } else if let Some(r) = rest.strip_prefix("<!--") {
                rest = r.get(r.find("-->")? + 3..)?;
            } else {
                break;
            }
        }
        let tag = rest.strip_prefix('<')?;
        let name_end = tag.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        let root = tag.get(..name_end)?;
        if root.rsplit(':').next() != Some("presence") {
            return None;
        }
        let (attrs, after) = start_tag(tag.get(name_end..)?)?;
        let close = format!("</{root}");
        let end = after.rfind(&close)?;
        let tail = after.get(end + close.len()..)?.trim_start();
        if !tail.starts_with('>') || !tail.get(1..)?.trim().is_empty() {
            return None;
        }
        let namespaces = attributes(attrs)?
            .into_iter()
            .filter(|(n, _)| *n == "xmlns" || n.starts_with("xmlns:"))
            .collect();
        Some(Document {
            root,
            namespaces,
            content: after.get(..end)?,
        })
    }
}

/// Splits a start tag after its name into (attributes text, what follows `>`); a quoted
/// `>` does not end it. `None` for an empty-element root (`<presence/>`).
fn start_tag(s: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => {
                let attrs = s.get(..i)?;
                if attrs.trim_end().ends_with('/') {
                    return None;
                }
                return Some((attrs, s.get(i + 1..)?));
            }
            (None, _) => {}
        }
    }
    None
}

/// `name="value"` pairs of a start tag.
fn attributes(mut s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    // Bounded by the text: each round consumes at least one attribute.
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Some(out);
        }
        let eq = s.find('=')?;
        let name = s.get(..eq)?.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        let v = s.get(eq + 1..)?.trim_start();
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = v.get(1..)?;
        let close = body.find(q)?;
        out.push((name, body.get(..close)?));
        s = body.get(close + 1..)?;
    }
}

/// Escapes text for XML content or a quoted attribute.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The document of a presentity that has not published: one tuple, `open` while it has a
/// binding.
pub(super) fn basic(entity: &str, open: bool) -> Vec<u8> {
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\r\n<tuple id=\"registration\"><status><basic>{}</basic></status><contact>{}</contact></tuple>\r\n</presence>\r\n",
        escape(entity),
        if open { "open" } else { "closed" },
        escape(entity)
    );
    s.into_bytes()
}

/// Several publishers' documents as one: the first document's root name, every distinct
/// namespace declaration, each document's content in turn. One document passes unchanged;
/// a document that binds a prefix differently from an earlier one is left out (its
/// elements would change meaning), as is one that does not parse.
pub(super) fn compose(entity: &str, docs: &[&[u8]]) -> Vec<u8> {
    if let [one] = docs {
        return one.to_vec();
    }
    let parsed: Vec<Document<'_>> = docs.iter().filter_map(|d| Document::parse(d)).collect();
    let Some(first) = parsed.first() else {
        return basic(entity, false);
    };
    let mut namespaces: Vec<(&str, &str)> = Vec::new();
    let mut parts: Vec<&str> = Vec::new();
    for d in &parsed {
        let clash = d
            .namespaces
            .iter()
            .any(|(n, v)| namespaces.iter().any(|(n2, v2)| n == n2 && v != v2));
        // The root's own name must mean the same in every document composed.
        if clash || d.root != first.root {
            continue;
        }
        for ns in &d.namespaces {
            if !namespaces.contains(ns) {
                namespaces.push(*ns);
            }
        }
        parts.push(d.content);
    }
    let mut s = String::with_capacity(docs.iter().map(|d| d.len()).sum::<usize>() + 256);
    let _ = write!(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<{}",
        first.root
    );
    for (n, v) in &namespaces {
        let _ = write!(s, " {n}=\"{v}\"");
    }
    let _ = write!(s, " entity=\"{}\">", escape(entity));
    for p in parts {
        s.push_str(p);
    }
    let _ = write!(s, "</{}>\r\n", first.root);
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWAY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">
  <tuple id="t1"><status><basic>open</basic></status></tuple>
  <dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities></dm:person>
</presence>"#;

    const PHONE: &str = r#"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:alice@example.com'
  xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid'><tuple id="t2"><status><basic>open</basic></status>
  <rpid:activities><rpid:on-the-phone/></rpid:activities></tuple></presence>"#;

    #[test]
    fn a_document_is_located() {
        let d = Document::parse(AWAY.as_bytes()).unwrap();
        assert_eq!(d.root, "presence");
        assert_eq!(d.namespaces.len(), 3);
        assert!(d.content.contains("<rpid:away/>"));
        assert!(!d.content.contains("</presence>"));
    }

    #[test]
    fn what_is_not_pidf_is_refused() {
        for bad in [
            "",
            "<presence/>",
            "<foo xmlns='x'></foo>",
            "<presence xmlns='x'><tuple/>",
            "<presence xmlns='x'></presence><extra/>",
            "<presence xmlns=x></presence>",
            "<?xml never closed",
        ] {
            assert_eq!(Document::parse(bad.as_bytes()), None, "{bad}");
        }
        assert!(Document::parse(
            b"<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf'></p:presence>"
        )
        .is_some());
    }

    #[test]
    fn two_publishers_compose_into_one_document_with_both_tuples() {
        let doc = compose(
            "sip:alice@example.com",
            &[AWAY.as_bytes(), PHONE.as_bytes()],
        );
        let text = String::from_utf8(doc.clone()).unwrap();
        let d = Document::parse(&doc).expect("composition parses");
        assert!(d.content.contains("id=\"t1\"") && d.content.contains("id=\"t2\""));
        assert!(text.contains("<rpid:away/>") && text.contains("<rpid:on-the-phone/>"));
        // The shared default and rpid namespaces are declared once each.
        assert_eq!(text.matches("xmlns:rpid=").count(), 1);
        assert_eq!(text.matches("xmlns=").count(), 1);
        assert_eq!(compose("sip:a@b", &[AWAY.as_bytes()]), AWAY.as_bytes());
    }

    #[test]
    fn a_prefix_clash_leaves_the_later_document_out() {
        let other = "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:rpid='urn:other'><tuple id='t9'/></presence>";
        let doc = compose("sip:a@b", &[AWAY.as_bytes(), other.as_bytes()]);
        let text = String::from_utf8(doc).unwrap();
        assert!(text.contains("t1") && !text.contains("t9"));
    }

    #[test]
    fn registration_state_is_open_or_closed_and_escaped() {
        let open = String::from_utf8(basic("sip:a&b@x", true)).unwrap();
        assert!(open.contains("<basic>open</basic>") && open.contains("sip:a&amp;b@x"));
        assert!(Document::parse(open.as_bytes()).is_some());
        let closed = String::from_utf8(basic("sip:a@x", false)).unwrap();
        assert!(closed.contains("<basic>closed</basic>"));
    }
}
